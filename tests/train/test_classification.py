"""Fine-tuned classification beyond one label per short text: multi-label (sigmoid outputs,
thresholds, micro-F1) and long documents (windows in, one prediction per document out).

The fast tests score hand-made logits; the slow ones train the tiny random BERT through the
trainer, with and without LoRA."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubetune import spec, sweep
from kubetune.errors import ConfigError

from tiny import FILLER, TOPICS, tiny_spec, write_yaml

NAMES = ["money", "sport", "tech"]


# --- scoring hand-made logits ----------------------------------------------------------------


def scorer(multi_label: bool = False, threshold: float | str = 0.5, **layouts: Any) -> Any:
    from kubetune.train.classification import Layout, Scorer

    made = Scorer(NAMES, multi_label, threshold)
    for split, (document, labels) in layouts.items():
        made.layouts[split] = Layout(
            np.array(document), np.zeros(len(document), dtype=bool), np.array(labels)
        )
    return made


def prediction(logits: list[list[float]], labels: Any) -> Any:
    from transformers import EvalPrediction

    return EvalPrediction(predictions=np.array(logits), label_ids=np.array(labels))


#: Two documents read in 2 and 3 windows. By mean logits document 0 is sport (its first window
#: alone says money), document 1 is tech.
WINDOW_LOGITS = [
    [2.0, 1.0, 0.0],
    [-4.0, 3.0, 0.0],
    [0.0, 0.0, 3.0],
    [1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0],
]
DOCUMENT = [0, 0, 1, 1, 1]


def test_metrics_during_training_are_per_document() -> None:
    from kubetune.train.classification import metrics_during_training

    # Gold: document 0 sport, document 1 money: every window carries its document's label.
    compute = metrics_during_training(scorer(eval=(DOCUMENT, [1, 1, 0, 0, 0])))
    out = compute(prediction(WINDOW_LOGITS, [1, 1, 0, 0, 0]))
    # mean: doc 0 → [-1, 2, 0] sport (right); doc 1 → [1/3, 1/3, 1] tech (wrong): 1 of 2.
    assert out["accuracy"] == 0.5
    assert out["f1_sport"] == 1.0 and out["f1_money"] == 0.0


def test_the_split_of_windows_is_told_by_its_count_and_labels() -> None:
    from kubetune.train.classification import metrics_during_training

    # Same number of windows in eval and test, grouped differently: the labels tell them apart.
    made = scorer(eval=(DOCUMENT, [1, 1, 0, 0, 0]), test=([0, 1, 1, 1, 1], [2, 1, 1, 1, 1]))
    assert made.split_of_windows(np.array(WINDOW_LOGITS), np.array([2, 1, 1, 1, 1])) == "test"
    assert made.split_of_windows(np.array(WINDOW_LOGITS), np.array([1, 1, 0, 0, 0])) == "eval"
    # test: doc 0 = window 0 alone → money (gold tech); doc 1 = mean of 4 → [-3/4, 1, 3/4] sport.
    out = metrics_during_training(made)(prediction(WINDOW_LOGITS, [2, 1, 1, 1, 1]))
    assert out["accuracy"] == 0.5
    with pytest.raises(RuntimeError, match="no split has 4 windows"):
        made.split_of_windows(np.zeros((4, 3)), np.zeros(4))


def test_a_split_short_of_its_windows_rows_is_refused() -> None:
    made = scorer(eval=(DOCUMENT, [1, 1, 0, 0, 0]))
    with pytest.raises(RuntimeError, match="the eval split has 5 windows but the trainer"):
        made.per_document(np.zeros((2, 3)), "eval")


def test_max_and_first_aggregate_change_the_documents_decision() -> None:
    from kubetune.train.classification import metrics_during_training

    labels = [0, 0, 0, 0, 0]  # both documents money
    for how, accuracy in (("first", 0.5), ("max", 0.0), ("mean", 0.0)):
        made = scorer(eval=(DOCUMENT, labels))
        made.aggregate = how
        # first: doc 0 window 0 → money (right), doc 1 window 2 → tech. max: doc 0 [2, 3, 0]
        # sport, doc 1 [1, 1, 3] tech. mean: sport, tech.
        assert metrics_during_training(made)(prediction(WINDOW_LOGITS, labels))["accuracy"] == (
            accuracy
        ), how


def splits_of(**rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    from kubetune.train.data import Splits

    return Splits(
        train=None,
        eval=Dataset.from_list(rows["eval"]),
        test=Dataset.from_list(rows["test"]) if "test" in rows else None,
        fingerprint="x",
    )


def tuned_spec() -> spec.JobSpec:
    """A multi-label spec with thresholds tuned on eval (its files are never read)."""
    tiny = {"cls": Path("x"), "model": Path("m")}
    return spec.validate(
        tiny_spec(tiny, data={"multi_label": True, "threshold": "tune", "labels": NAMES})
    )


def test_multi_label_predictions_tune_on_eval_and_apply_to_test() -> None:
    from kubetune.train.classification import predictor
    from kubetune.train.task import FINAL_METRICS

    job = tuned_spec()
    eval_rows = [
        {"id": "a", "text": "bank goal", "label": ["money", "sport"]},
        {"id": "b", "text": "goal", "label": ["sport"]},
        {"id": "c", "text": "chip", "label": ["tech"]},
    ]
    test_rows = [{"id": "d", "text": "bank chip", "label": ["money"]}]
    splits = splits_of(eval=eval_rows, test=test_rows)
    made = scorer(multi_label=True, threshold="tune")
    predict = predictor(job, splits, made)
    # sigmoid(0) = 0.5, sigmoid(ln 4) = 0.8, sigmoid(-ln 4) = 0.2, sigmoid(ln 1.5) = 0.6.
    lo, mid, hi, low = -np.log(4), np.log(1.5), np.log(4), -np.log(9)
    eval_logits = np.array([[mid, hi, lo], [lo, hi, lo], [lo, lo, hi]])
    rows, artifacts = predict(splits.eval, eval_logits, None)
    # money: 0.6 present, 0.2 absent twice → any threshold in (0.2, 0.6] is perfect; the grid
    # point nearest 0.5 is 0.5. sport: 0.8, 0.8 present, 0.2 absent → 0.5. tech likewise 0.5.
    assert artifacts["thresholds"] == {
        "tuned": True,
        "thresholds": {"money": 0.5, "sport": 0.5, "tech": 0.5},
    }
    assert artifacts[FINAL_METRICS]["micro_f1"] == 1.0
    assert artifacts[FINAL_METRICS]["threshold_sport"] == 0.5
    assert rows[0] == {
        "id": "a",
        "text": "bank goal",
        "label": ["money", "sport"],
        "prediction": [{"label": "sport", "score": 0.8}, {"label": "money", "score": 0.6}],
    }
    assert rows[1]["prediction"] == [{"label": "sport", "score": 0.8}]
    # Test: money 0.1 (sigmoid(-ln 9)) under 0.5, tech 0.8 over: a false positive and a miss.
    rows, artifacts = predict(splits.test, np.array([[low, lo, hi]]), None)
    assert rows[0]["prediction"] == [{"label": "tech", "score": 0.8}]
    assert artifacts["thresholds"]["tuned"] is True
    assert artifacts[FINAL_METRICS]["micro_f1"] == 0.0
    assert artifacts[FINAL_METRICS]["subset_accuracy"] == 0.0


def test_multi_label_tuning_moves_a_threshold_off_half() -> None:
    from kubetune.train.classification import predictor

    job = tuned_spec()
    eval_rows = [{"text": "x", "label": ["money"]}, {"text": "y", "label": []}]
    splits = splits_of(eval=eval_rows)
    made = scorer(multi_label=True, threshold="tune")
    # money scores 0.32 (present) and 0.2 (absent): the best thresholds are 0.25 and 0.3, and
    # 0.3 is nearer 0.5. The other labels are never present: they keep 0.5.
    logits = np.array([[np.log(0.32 / 0.68), -5, -5], [np.log(0.2 / 0.8), -5, -5]])
    rows, artifacts = predictor(job, splits, made)(splits.eval, logits, None)
    assert artifacts["thresholds"]["thresholds"] == {"money": 0.3, "sport": 0.5, "tech": 0.5}
    assert rows[0]["id"] == 0, "a split without ids numbers its rows"
    assert rows[0]["prediction"] == [{"label": "money", "score": 0.32}]
    assert rows[1]["prediction"] == []


def test_settings_the_family_cannot_honour_together_are_one_line_errors() -> None:
    from kubetune.train.classification import check

    tiny = {"cls": Path("x"), "model": Path("m")}
    smoothing = spec.validate(
        tiny_spec(tiny, data={"multi_label": True}, train={"label_smoothing_factor": 0.1})
    )
    with pytest.raises(ConfigError, match=r"^train\.label_smoothing_factor: .*set it to 0$"):
        check(smoothing)
    pair = spec.validate(
        tiny_spec(tiny, data={"text_pair_column": "other", "long_documents": {"stride": 4}})
    )
    with pytest.raises(ConfigError, match=r"^data\.long_documents: windows cut one text"):
        check(pair)


# --- training the tiny BERT through the trainer ----------------------------------------------


#: Each topic's words that the tiny tokenizer keeps whole (it spells the others in pieces, which
#: its 2-layer BERT learns to tell apart much more slowly).
WHOLE_WORDS = {
    "money": ["bank", "price", "shares", "stock"],
    "sport": ["score", "league"],
    "tech": ["computer", "software", "chip", "robot"],
}


def multi_label_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Texts whose labels are the topics whose words they hold: none, one, two or all three."""
    assert all(set(words) <= set(TOPICS[label].split()) for label, words in WHOLE_WORDS.items())
    rows = []
    for i in range(n):
        labels = sorted(rng.sample(NAMES, i % 4))
        words = [rng.choice(WHOLE_WORDS[label]) for label in labels for _ in range(3)]
        words += [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
        rng.shuffle(words)
        rows.append({"id": i, "text": " ".join(words), "label": labels})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def multi_label_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("multi")
    rows = multi_label_rows(random.Random(1), 200)
    parts = {"train": rows[:140], "eval": rows[140:170], "test": rows[170:]}
    for split, part in parts.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return {split: str(folder / f"{split}.jsonl") for split in parts}


def trained(tmp: Path, data: dict[str, Any], threads: int | None = None) -> Path:
    """Train ``data`` through the trainer (a subprocess, as a Job runs it): its run folder.
    ``threads``: OpenMP threads, where what a test asserts was measured at that count."""
    store = tmp / "store"
    pinned = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune.train", str(write_yaml(tmp / "job.yaml", data))],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "KUBETUNE_STORE": f"file://{store}",
            "WANDB_DIR": str(tmp / "wandb"),
            **pinned,
        },
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = sweep.expand(spec.validate(data))
    return store / run.sweep / run.run_id


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def multi_label_run(
    tiny: dict[str, Path],
    multi_label_data: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Multi-label with thresholds tuned on eval; no LoRA."""
    # No checkpoints: what is tested is scored at the end, and 20 saves were most of its time.
    # Two threads, as on the 2-core machines its bar was set on: on one thread the same seed
    # lands at micro-F1 0.71 (a tiny model, 30 test texts, the float sums in another order).
    data = tiny_spec(tiny, data={**multi_label_data, "multi_label": True, "threshold": "tune"},
                     train={"save_strategy": "no"})  # fmt: skip
    return trained(tmp_path_factory.mktemp("ml"), data, threads=2)


@pytest.mark.slow
def test_a_multi_label_run_reports_micro_f1_and_its_tuned_thresholds(multi_label_run: Path) -> None:
    metrics = json.loads((multi_label_run / "metrics.json").read_text())
    record = json.loads((multi_label_run / "run.json").read_text())
    assert record["labels"] == NAMES
    for split in ("eval", "test"):
        assert {"micro_f1", "macro_f1", "subset_accuracy", "f1_money", "threshold_tech"} <= set(
            metrics[split]
        )
        assert "accuracy" not in metrics[split]
        assert record["metrics"][split]["micro_f1"] == metrics[split]["micro_f1"]
    # Learned, not guessed: every label on every text scores micro-F1 0.67 and subset
    # accuracy 0.25 here (a text has 0, 1, 2 or 3 labels, equally often).
    assert metrics["test"]["micro_f1"] >= 0.75
    assert metrics["test"]["subset_accuracy"] >= 0.4
    tuned = json.loads((multi_label_run / "thresholds.json").read_text())
    applied = json.loads((multi_label_run / "thresholds_test.json").read_text())
    assert tuned["tuned"] is True and applied == tuned, "test uses the thresholds tuned on eval"
    assert {f"threshold_{n}": t for n, t in tuned["thresholds"].items()} == {
        k: v for k, v in metrics["test"].items() if k.startswith("threshold_")
    }
    # metric_for_best_model defaults to the headline: what the checkpoints were ranked by.
    history = json.loads((multi_label_run / "history.json").read_text())
    assert any("eval_micro_f1" in row for row in history)


@pytest.mark.slow
def test_multi_label_predictions_carry_every_label_over_its_threshold(
    multi_label_run: Path,
) -> None:
    from sklearn.metrics import f1_score

    thresholds = json.loads((multi_label_run / "thresholds_test.json").read_text())["thresholds"]
    rows = lines(multi_label_run / "test_predictions.jsonl")
    assert len(rows) == 30
    for row in rows:
        assert set(row) == {"id", "text", "label", "prediction"}
        assert all(p["score"] >= thresholds[p["label"]] for p in row["prediction"])
        scores = [p["score"] for p in row["prediction"]]
        assert scores == sorted(scores, reverse=True)
    gold = [[int(n in row["label"]) for n in NAMES] for row in rows]
    chosen = [[int(n in {p["label"] for p in row["prediction"]}) for n in NAMES] for row in rows]
    metrics = json.loads((multi_label_run / "metrics.json").read_text())
    assert f1_score(gold, chosen, average="micro") == pytest.approx(metrics["test"]["micro_f1"])


@pytest.mark.slow
def test_the_multi_label_model_gives_sigmoid_scores_in_a_pipeline(multi_label_run: Path) -> None:
    from transformers import pipeline

    final = multi_label_run / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    row = lines(multi_label_run / "test_predictions.jsonl")[0]
    classify = pipeline("text-classification", model=str(final), top_k=None,
                        function_to_apply="sigmoid")  # fmt: skip
    result: Any = classify([row["text"]])  # one list of every label's score per text
    scores = {s["label"]: s["score"] for s in result[0]}
    assert set(scores) == set(NAMES)
    for chosen in row["prediction"]:
        assert scores[chosen["label"]] == pytest.approx(chosen["score"], abs=1e-4)


@pytest.mark.slow  # its fixture trains
def test_predict_decides_with_the_thresholds_tuned_on_eval(multi_label_run: Path) -> None:
    from kubetune.predict import engine

    final = multi_label_run / "final"
    tuned = json.loads((multi_label_run / "thresholds.json").read_text())["thresholds"]
    assert json.loads((final / "kubetune.json").read_text())["thresholds"] == tuned
    rows = lines(multi_label_run / "test_predictions.jsonl")
    loaded = engine.load(str(final))
    found = engine.predict(loaded, [r["text"] for r in rows], bf16=False)
    # The run's own decisions on test, from final/ alone (texts cut at the preview's length).
    for row, result in zip(rows, found, strict=True):
        if not row["text"].endswith("…"):
            assert result["labels"] == [p["label"] for p in row["prediction"]]


def long_documents(tiny: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    """A spec whose texts (up to about 40 tokens) are read in windows of 12 tokens."""
    train = {"epochs": 6, "save_strategy": "no", **overrides.pop("train", {})}
    data = tiny_spec(tiny, train=train, **overrides)
    data["data"] = {
        **data["data"],
        "max_length": 12,
        "long_documents": {"stride": 3, **data["data"].get("long_documents", {})},
    }
    return data


@pytest.mark.slow
def test_a_long_documents_run_scores_and_predicts_per_document(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    data = long_documents(tiny, data={"long_documents": {"aggregate": "max"}})
    out = trained(tmp_path, data)
    metrics = json.loads((out / "metrics.json").read_text())
    seen = json.loads((out / "windows.json").read_text())
    assert {split: seen[split]["documents"] for split in seen} == {
        "train": 100,
        "eval": 25,
        "test": 25,
    }
    assert seen["train"]["windows"] > 150, "the texts run to several windows"
    for split, name in (("eval", "predictions.jsonl"), ("test", "test_predictions.jsonl")):
        rows = lines(out / name)
        assert len(rows) == 25, "one row per document, not per window"
        assert sum(r["windows"] for r in rows) == seen[split]["windows"]
        assert max(r["windows"] for r in rows) == metrics[split]["windows_per_document_max"]
        assert metrics[split]["windows_per_document"] == seen[split]["windows_per_document"] > 1
        right = sum(r["label"] == r["prediction"] for r in rows)
        assert metrics[split]["accuracy"] == pytest.approx(right / 25)
    matrix = json.loads((out / "confusion_matrix_test.json").read_text())
    assert sum(map(sum, matrix["matrix"])) == 25
    assert metrics["test"]["accuracy"] >= 0.8, "every window holds some of its topic's words"
    # The Trainer's evaluations during training were per document too.
    history = json.loads((out / "history.json").read_text())
    assert any(row.get("eval_accuracy") is not None for row in history)


@pytest.mark.slow
def test_long_documents_with_multi_label_and_lora(
    tiny: dict[str, Path], multi_label_data: dict[str, str], tmp_path: Path
) -> None:
    data = long_documents(
        tiny,
        data={**multi_label_data, "multi_label": True, "threshold": 0.4,
              "long_documents": {"max_windows": 2}},
        lora={"r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
        train={"epochs": 8, "learning_rate": 1e-2},
    )  # fmt: skip
    # Windows of 6 words' tokens, 3 new each: texts of 7 or more words have 3 or more.
    data["data"]["max_length"] = 8
    out = trained(tmp_path, data)
    record = json.loads((out / "run.json").read_text())
    assert record["parameters"]["trainable"] < record["parameters"]["total"] / 2
    assert (out / "adapter" / "adapter_config.json").is_file()
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert thresholds == {"tuned": False, "thresholds": dict.fromkeys(NAMES, 0.4)}
    rows = lines(out / "test_predictions.jsonl")
    assert len(rows) == 30 and max(r["windows"] for r in rows) <= 2
    assert all(p["score"] >= 0.4 for r in rows for p in r["prediction"])
    seen = json.loads((out / "windows.json").read_text())
    assert seen["train"]["cut_documents"] > 0, "max_windows cut the longest texts"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["windows_per_document_max"] == 2
    assert {"micro_f1", "subset_accuracy", "threshold_money"} <= set(metrics["test"])
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
