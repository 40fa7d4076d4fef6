"""Extractive question answering on the tiny random BERT.

The data is learnable: each context is 12 to 40 filler and topic words with one city in it
(Paris, London or Berlin), the question asks where, and the answer is the city; a fifth of
the contexts have no city and no answer. At ``max_length`` 48 most contexts take two or
three windows. Unit tests call ``question_answering.build`` and train nothing (the fast
suite runs them); end-to-end tests, marked slow, run the real trainer (``python -m
kubetune.train SPEC``) with and without LoRA and read what it wrote. Each test imports torch
and the trainer's modules itself, so collecting this module costs the fast suite's other
workers nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubetune import spec
from kubetune.errors import ConfigError

from tiny import FILLER, TOPICS, tiny_spec, train_together, with_overrides

CITIES = ["Paris", "London", "Berlin"]
QUESTIONS = ["where did they go ?", "which city was it ?", "where was the match ?"]
SPLIT_SIZES = {"train": 120, "eval": 30, "test": 30}
METRICS = {
    "exact_match", "f1", "total", "has_ans_exact", "has_ans_f1", "has_ans_total",
    "no_ans_exact", "no_ans_f1", "no_ans_total",
}  # fmt: skip


def qa_rows(rng: random.Random, n: int, start: int = 0) -> list[dict[str, Any]]:
    words = [*FILLER, *" ".join(TOPICS.values()).split()]
    rows = []
    for i in range(start, start + n):
        context_words = [rng.choice(words) for _ in range(rng.randint(8, 30))]
        answers: dict[str, list[Any]] = {"text": [], "answer_start": []}
        if i % 5:
            city = rng.choice(CITIES)
            at = rng.randint(0, len(context_words))
            context_words.insert(at, city)
            context = " ".join(context_words)
            offset = len(" ".join(context_words[:at])) + (1 if at else 0)
            answers = {"text": [city], "answer_start": [offset]}
        else:
            context = " ".join(context_words)
        rows.append(
            {
                "id": f"q{i}",
                "context_id": f"c{i}",
                "question": rng.choice(QUESTIONS),
                "context": context,
                "answers": answers,
            }
        )
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qa")
    rng = random.Random(3)
    out, start = {}, 0
    for split, n in SPLIT_SIZES.items():
        out[split] = write_rows(root / f"{split}.jsonl", qa_rows(rng, n, start))
        start += n
    return out


def qa_spec(tiny: dict[str, Path], qa_data: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    data = tiny_spec(
        tiny,
        "question-answering",
        data={
            "train": str(qa_data["train"]),
            "eval": str(qa_data["eval"]),
            "test": str(qa_data["test"]),
            "max_length": 48,
            "doc_stride": 16,
            "max_answer_length": 8,
        },
        # No checkpoints: nothing here resumes, and 15 saves would be most of its time.
        train={
            "epochs": 15,
            "learning_rate": 5e-3,
            "batch_size": 16,
            "precision": "fp32",
            "save_strategy": "no",
        },
    )
    data["name"] = "tiny-qa"
    return with_overrides(data, overrides)


def build(tiny: dict[str, Path], qa_data: dict[str, Path], tmp_path: Path, **overrides: Any) -> Any:
    """``question_answering.build`` in this process, with the tokenizer the runner loads."""
    from transformers import AutoTokenizer

    from kubetune.train import question_answering
    from kubetune.train.data import load_splits

    job = spec.validate(qa_spec(tiny, qa_data, **overrides))
    splits = load_splits(job, tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(job.model.name)
    return question_answering.build(job, splits, tokenizer, job.model.name), splits, tokenizer


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- build, in process ---------------------------------------------------------------------


def test_windows_learn_the_answer_where_it_is_whole_and_cls_elsewhere(
    tiny: dict[str, Path], qa_data: dict[str, Path], tmp_path: Path
) -> None:
    task, splits, tokenizer = build(tiny, qa_data, tmp_path)
    train = task.tokenized["train"]
    # The model's own inputs (this tokenizer names no token_type_ids), and the targets.
    assert set(train.column_names) == {
        "input_ids", "attention_mask", "start_positions", "end_positions",
    }  # fmt: skip
    assert len(train) > 1.5 * len(splits.train), "long contexts read in several windows"
    assert all(len(ids) <= 48 for ids in train["input_ids"])
    assert task.peft_task == "QUESTION_ANS" and task.default_metric == "f1"
    assert task.labels == []
    cities = {c.lower() for c in CITIES}
    held = 0
    for ids, start, end in zip(
        train["input_ids"], train["start_positions"], train["end_positions"], strict=True
    ):
        if start == 0:
            assert end == 0, "no answer here: CLS for both"
            continue
        held += 1
        assert tokenizer.decode(ids[start : end + 1]).replace(" ", "") in cities
    # Every answerable example has its answer whole in at least one window.
    assert held >= sum(1 for a in splits.train["answers"] if a["text"])
    assert set(task.tokenized) == {"train", "eval", "test"}


def test_metrics_and_predictions_are_per_example_from_every_windows_logits(
    tiny: dict[str, Path], qa_data: dict[str, Path], tmp_path: Path
) -> None:
    """What the runner does after Trainer.predict, with logits that know every answer:
    compute_metrics and the predictor see every window's row (runner.own_rows keeps one
    per feature); both score per example, and the rows hold the answers' offsets."""
    import numpy as np
    from transformers import EvalPrediction

    from kubetune.train.task import FINAL_METRICS

    task, splits, _ = build(tiny, qa_data, tmp_path)
    for split in ("eval", "test"):
        features = task.tokenized[split]
        starts = np.array(features["start_positions"])
        ends = np.array(features["end_positions"])
        positions: Any = (starts, ends)  # what the Trainer passes for two label columns
        logits = np.zeros((len(features), 48, 2))
        logits[np.arange(len(features)), starts, 0] = 10.0
        logits[np.arange(len(features)), ends, 1] = 10.0
        seen = task.compute_metrics(EvalPrediction(predictions=logits, label_ids=positions))
        assert seen["exact_match"] == 100.0 and seen["f1"] == 100.0
        assert seen["total"] == SPLIT_SIZES[split] == len(splits.present()[split])
        raw = splits.present()[split]
        assert len(features) > len(raw), "some contexts need several windows"
        rows, artifacts = task.predictions(raw, logits, None)
        assert artifacts[FINAL_METRICS] == seen
        assert set(seen) == METRICS, "unanswerable questions: HasAns/NoAns splits"
        assert seen["no_ans_total"] == SPLIT_SIZES[split] // 5
        for row, source in zip(rows, rows_of(qa_data[split]), strict=True):
            assert list(row) == [
                "id", "question", "context_id", "answer", "start", "end", "score",
                "null_score", "gold", "exact_match", "f1",
            ]  # fmt: skip
            assert (row["id"], row["context_id"]) == (source["id"], source["context_id"])
            assert row["gold"] == source["answers"]
            if source["answers"]["text"]:
                assert source["context"][row["start"] : row["end"]] == row["answer"]
                assert row["answer"] == source["answers"]["text"][0]
                assert row["score"] == 20.0
            else:
                assert (row["answer"], row["start"], row["end"]) == ("", None, None)
    # One row per example is not enough: every window must be read.
    with pytest.raises(ValueError, match=r"^\d+ windows but 30 start and 30 end logit rows"):
        task.predictions(splits.eval, np.zeros((len(splits.eval), 48, 2)), None)


def test_answerable_training_data_never_answers_nothing(
    tiny: dict[str, Path], qa_data: dict[str, Path], tmp_path: Path
) -> None:
    import numpy as np
    from transformers import EvalPrediction

    rows = [r for r in rows_of(qa_data["train"]) if r["answers"]["text"]]
    answerable = write_rows(tmp_path / "answerable.jsonl", rows)
    task, splits, _ = build(tiny, qa_data, tmp_path, data={"train": str(answerable)})
    features = task.tokenized["eval"]
    positions: Any = (np.array(features["start_positions"]), np.array(features["end_positions"]))
    # CLS is the likeliest everywhere; with no unanswerable question in training it never wins.
    logits = np.zeros((len(features), 48, 2))
    logits[:, 0, :] = 10.0
    seen = task.compute_metrics(EvalPrediction(predictions=logits, label_ids=positions))
    assert seen["no_ans_exact"] == 0.0
    out, _ = task.predictions(splits.eval, logits, None)
    assert all(row["answer"] for row in out)


def test_config_errors_name_the_row_and_what_to_change(
    tiny: dict[str, Path], qa_data: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import question_answering
    from kubetune.train.data import load_splits

    with pytest.raises(ConfigError, match=r"^model\.name: question answering .* fast tokenizer"):
        job = spec.validate(qa_spec(tiny, qa_data))
        question_answering.build(
            job, load_splits(job, tmp_path / "c"), SimpleNamespace(is_fast=False), ""
        )
    with pytest.raises(ConfigError, match=r"^data\.answers_column: column 'gold' is not in"):
        build(tiny, qa_data, tmp_path, data={"answers_column": "gold"})

    rows = rows_of(qa_data["train"])[:5]
    context = rows[1]["context"]
    city = rows[1]["answers"]["text"][0]
    rows[1]["answers"]["answer_start"] = [context.index(city) + 1]
    shifted = write_rows(tmp_path / "shifted.jsonl", rows)
    with pytest.raises(
        ConfigError,
        match=rf"^data\.answers_column: row 2 of the train data \(.*shifted\.jsonl\): answer "
        rf"'{city}' is not at answer_start {context.index(city) + 1} .*; set answer_start to "
        rf"{context.index(city)}$",
    ):
        build(tiny, qa_data, tmp_path, data={"train": str(shifted)})
    rows[1]["answers"] = {"text": ["Rome"], "answer_start": [0]}
    absent = write_rows(tmp_path / "absent.jsonl", rows)
    with pytest.raises(ConfigError, match=r"row 2 .* the context does not contain it"):
        build(tiny, qa_data, tmp_path, data={"train": str(absent)})
    rows[1]["answers"] = {"text": ["Paris", "London"], "answer_start": [0]}
    uneven = write_rows(tmp_path / "uneven.jsonl", rows)
    with pytest.raises(ConfigError, match=r"row 2 .* lists of the same length$"):
        build(tiny, qa_data, tmp_path, data={"train": str(uneven)})
    rows[1]["answers"] = rows_of(qa_data["train"])[1]["answers"]
    rows[3]["question"] = " ".join(["where"] * 40)
    wordy = write_rows(tmp_path / "wordy.jsonl", rows)
    with pytest.raises(
        ConfigError,
        match=r"^data\.max_length: the question of row 4 of the eval data .* leaves 0 of 48 "
        r"tokens for its context, not more than data\.doc_stride=16; raise max_length",
    ):
        build(tiny, qa_data, tmp_path, data={"eval": str(wordy)})
    task, _, tokenizer = build(tiny, qa_data, tmp_path)
    from kubetune.inference import Inference
    from kubetune.predict import engine

    settings = Inference(task="question-answering", doc_stride=16, max_answer_length=8)
    loaded = engine.Loaded(task.model, tokenizer, [], "question-answering", 48, settings)
    with pytest.raises(ConfigError, match=r"^question 2 leaves 0 of 48 tokens for its context"):
        engine.answer(loaded, ["where ?", rows[3]["question"]], ["a b", "c d"])
    rows[3]["question"] = "  "
    blank = write_rows(tmp_path / "blank.jsonl", rows)
    with pytest.raises(ConfigError, match=r"^data\.question_column: row 4 .* has empty text"):
        build(tiny, qa_data, tmp_path, data={"test": str(blank)})


# --- the trainer end to end ----------------------------------------------------------------

#: The runs below, each a real ``python -m kubetune.train`` (tweaks to the spec).
RUNS: dict[str, dict[str, Any]] = {
    "full": {"train": {"learning_rate": 3e-3}},
    # A random tiny BERT's frozen embeddings cannot tell the cities apart well enough: they
    # train in full beside the adapters (real checkpoints' embeddings already can).
    "lora": {"lora": {"r": 16, "lora_alpha": 32, "modules_to_save": ["word_embeddings"]}},
}


@pytest.fixture(scope="module")
def runs(
    tiny: dict[str, Path], qa_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The runs of :data:`RUNS`, finished; started together, one process each."""
    specs = {}
    for key, tweaks in RUNS.items():
        data = qa_spec(tiny, qa_data, **tweaks)
        data["name"] = f"tiny-qa-{key}"
        specs[key] = (data, tmp_path_factory.mktemp(f"qa-{key}"))
    return train_together(specs)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(RUNS))
def test_each_run_learns_and_writes_per_example_metrics_and_predictions(
    runs: dict[str, Any], qa_data: dict[str, Path], key: str
) -> None:
    from kubetune.train import squad

    out: Path = runs[key]["dir"]
    scores = json.loads((out / "metrics.json").read_text())
    for split, name in (("eval", "predictions.jsonl"), ("test", "test_predictions.jsonl")):
        assert set(scores[split]) >= METRICS | {"loss"}, split
        rows = rows_of(out / name)
        source = {r["id"]: r for r in rows_of(qa_data[split])}
        assert [r["id"] for r in rows] == list(source), "one row per example, in order"
        for row in rows:
            context = source[row["id"]]["context"]
            if row["start"] is not None:
                assert context[row["start"] : row["end"]] == row["answer"] != ""
            assert row["context_id"] == source[row["id"]]["context_id"]
        # metrics.json scores exactly these rows.
        again = squad.scores([r["gold"]["text"] for r in rows], [r["answer"] for r in rows])
        assert {k: scores[split][k] for k in again} == pytest.approx(again)
    # Learnt, not guessed: answering nothing everywhere scores 20 (the unanswerable fifth).
    assert scores["test"]["f1"] > 60, scores["test"]
    record = json.loads((out / "run.json").read_text())
    assert record["task"] == "question-answering" and record["labels"] == []


@pytest.mark.slow
@pytest.mark.parametrize("key", list(RUNS))
def test_final_model_reloads_and_answers_what_predictions_say(
    runs: dict[str, Any], qa_data: dict[str, Path], key: str
) -> None:
    """transformers 5 removed the question-answering pipeline (it raises KeyError: "The task
    question-answering has been removed"); final/ loads with the Auto classes, and
    ``question_answering.answer`` (what the pipeline did) gives the run's predictions."""
    from transformers import pipeline

    final = runs[key]["dir"] / "final"
    with pytest.raises(KeyError, match="question-answering has been removed"):
        pipeline("question-answering", model=str(final))  # type: ignore[call-overload]
    from kubetune.predict import engine

    loaded = engine.load(str(final))
    assert type(loaded.model).__name__ == "BertForQuestionAnswering"
    settings = json.loads((final / "kubetune.json").read_text())
    assert settings["doc_stride"] == 16 and settings["max_answer_length"] == 8
    assert settings["allow_null"] == any(
        not r["answers"]["text"] for r in rows_of(qa_data["train"])
    )
    rows = rows_of(runs[key]["dir"] / "test_predictions.jsonl")
    source = {r["id"]: r for r in rows_of(qa_data["test"])}
    # final/ alone answers as the run scored: predict and serve read it so.
    answers = engine.answer(
        loaded, [r["question"] for r in rows], [source[r["id"]]["context"] for r in rows],
        bf16=False,
    )  # fmt: skip
    assert [(a["answer"], a["start"], a["end"]) for a in answers] == [
        (r["answer"], r["start"], r["end"]) for r in rows
    ]
    assert [a["score"] for a in answers] == pytest.approx([r["score"] for r in rows], abs=1e-3)


@pytest.mark.slow
def test_lora_trains_the_adapter_and_the_qa_head_and_merges_into_final(
    runs: dict[str, Any], tiny: dict[str, Path]
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForQuestionAnswering

    from train.test_runner import events

    run = runs["lora"]
    model_event = next(e for e in events(run["stdout"]) if e["event"] == "model")
    assert 0 < model_event["trainable"] < model_event["total"] / 2
    record = json.loads((run["dir"] / "run.json").read_text())
    assert record["lora"]["target_modules"] == ["query", "value"]
    adapter = json.loads((run["dir"] / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "QUESTION_ANS"
    # The random QA head trains in full: peft adds it to the spec's modules_to_save.
    assert sorted(adapter["modules_to_save"]) == ["qa_outputs", "word_embeddings"]
    # The adapter on the untouched base equals the merged final/ model.
    base = AutoModelForQuestionAnswering.from_pretrained(tiny["model"])
    adapted = PeftModel.from_pretrained(base, run["dir"] / "adapter").eval()
    merged = AutoModelForQuestionAnswering.from_pretrained(run["dir"] / "final").eval()
    ids = torch.tensor([[2, 10, 11, 3, 12, 13, 14, 3]])
    with torch.no_grad():
        a, b = adapted(input_ids=ids), merged(input_ids=ids)
    assert torch.allclose(a.start_logits, b.start_logits, atol=1e-4)
    assert torch.allclose(a.end_logits, b.end_logits, atol=1e-4)
