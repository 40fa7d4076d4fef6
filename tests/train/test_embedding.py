"""Bi-encoder fine-tuning (``task: embedding``): tiny random encoders trained end to end through
the real trainer (marked slow: full fine-tuning, LoRA, and a LoRA run stopped and resumed),
and, training nothing (the fast suite runs them), how a retrieval set becomes pairs and
retrieval problems, the evaluator's metrics and rankings, and the encoder sentence-transformers
builds from a folder. Each test imports torch and the trainer's modules itself, so collecting
this module costs the fast suite's other workers nothing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune import spec, sweep
from kubetune.errors import ConfigError
from kubetune.headline import TASK_METRICS

from tiny import FILLER, TOPICS, tiny_spec, write_yaml

METRICS = set(TASK_METRICS["embedding"])
EVENT = "@@kubetune "


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def retrieval_set(root: Path, seed: int = 0) -> Path:
    """A retrieval set in the contract's shape, in the tiny tokenizer's words: documents of one
    topic's words with filler, and as each query three of its document's topic words. Splits of
    48/12/12 rows; corpus.jsonl holds every document and 12 distractors answering no query."""
    rng = random.Random(seed)
    docs = []
    for i in range(84):
        topic = sorted(TOPICS)[i % 3]
        words = [rng.choice(TOPICS[topic].split()) for _ in range(rng.randint(6, 14))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
        rng.shuffle(words)
        docs.append({"id": f"d{i:03d}", "text": " ".join(words), "topic": topic})
    rows = []
    for doc in docs[:72]:
        own = [w for w in doc["text"].split() if w not in FILLER]
        query = " ".join(rng.sample(own, 3))
        rows.append({"id": doc["id"], "query": query, "positive": doc["text"]})
    _write(root / "train.jsonl", rows[:48])
    _write(root / "validation.jsonl", rows[48:60])
    _write(root / "test.jsonl", rows[60:])
    _write(root / "corpus.jsonl", [{"id": d["id"], "text": d["text"]} for d in docs])
    return root


def embedding_spec(tiny: dict[str, Path], folder: Path, **overrides: Any) -> dict[str, Any]:
    """The tiny encoder on the retrieval set: a few steps, evaluated (and saved) every two."""
    data = tiny_spec(
        tiny,
        model={"name": str(tiny["model"])},
        data={
            "train": str(folder / "train.jsonl"),
            "eval": str(folder / "validation.jsonl"),
            "test": str(folder / "test.jsonl"),
            "corpus": str(folder / "corpus.jsonl"),
            "max_length": 32,
        },
        train={"max_steps": 4, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 1,
               "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "steps",
               "save_steps": 2, "warmup_steps": 0},
    )  # fmt: skip
    data.update(name="tiny-embedding", task="embedding")
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def events(stdout: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[len(EVENT) :]) for line in stdout.splitlines() if line.startswith(EVENT)
    ]


def run_dir(store: Path, data: dict[str, Any]) -> Path:
    (run,) = sweep.expand(spec.validate(data))
    return store / run.sweep / run.run_id


# --- in process: retrieval sets, the evaluator, the encoder --------------------------------


def _loaded(tiny: dict[str, Path], folder: Path, tmp_path: Path, **sections: Any) -> Any:
    """The spec of :func:`embedding_spec` (with ``sections`` merged in) and its loaded splits."""
    from kubetune.train.data import load_splits

    job = spec.validate(embedding_spec(tiny, folder, **sections))
    return job, load_splits(job, tmp_path / "cache")


def test_a_retrieval_set_becomes_pairs_and_retrieval_problems(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import embedding

    folder = retrieval_set(tmp_path / "data")
    job, splits = _loaded(tiny, folder, tmp_path)
    corpus = embedding.load_corpus(splits)
    assert corpus == {d["id"]: d["text"] for d in read_jsonl(folder / "corpus.jsonl")}
    rows = read_jsonl(folder / "test.jsonl")
    problem = embedding.retrieval(job, "test", splits.test, "the test data", corpus)
    assert problem.queries == {r["id"]: r["query"] for r in rows}
    assert problem.corpus is corpus and len(corpus) == 84
    assert problem.relevant == {r["id"]: {r["id"]} for r in rows}
    pairs = embedding.pairs(job, splits.train, "the train data")
    train = read_jsonl(folder / "train.jsonl")
    assert pairs.column_names == ["anchor", "positive"], "ids are not text to encode"
    assert pairs[:] == {"anchor": [r["query"] for r in train],
                        "positive": [r["positive"] for r in train]}  # fmt: skip

    # Without data.corpus a split searches its own positives; row numbers stand in for ids.
    alone = embedding.retrieval(job, "test", splits.test, "the test data", None)
    assert alone.corpus == {r["id"]: r["positive"] for r in rows}
    numbered = embedding.retrieval(job, "test", splits.test.remove_columns("id"), "t", None)
    assert list(numbered.queries) == [str(i) for i in range(len(rows))]
    assert numbered.corpus["3"] == rows[3]["positive"] and numbered.relevant["3"] == {"3"}


def test_pairs_follow_the_specs_columns_not_the_files_order(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import embedding

    rows = [{"body": f"goal match {i}", "id": str(i), "headline": f"goal {i}"} for i in range(4)]
    folder = tmp_path / "data"
    for name in ("train", "validation", "test"):
        _write(folder / f"{name}.jsonl", rows)
    data = {"query_column": "headline", "positive_column": "body", "corpus": None}
    job, splits = _loaded(tiny, folder, tmp_path, data=data)
    pairs = embedding.pairs(job, splits.train, "the train data")
    assert pairs[0] == {"anchor": "goal 0", "positive": "goal match 0"}


def _break(folder: Path, name: str, change: Any) -> None:
    rows = read_jsonl(folder / name)
    _write(folder / name, change(rows))


MISTAKES = {
    "a missing column": (
        lambda f: None,
        {"query_column": "headline"},
        r"^data\.query_column: column 'headline' is not in the train data \(.*train\.jsonl\)",
    ),
    "queries that are not text": (
        lambda f: _break(f, "validation.jsonl", lambda r: [{**x, "query": i}
                                                           for i, x in enumerate(r, 7)]),
        {},
        r"^data\.query_column: row 1 of the eval data \(.*\) holds 7, not text",
    ),
    "an id twice in a split": (
        lambda f: _break(f, "test.jsonl", lambda r: [r[0], {**r[1], "id": r[0]["id"]}, *r[2:]]),
        {},
        r"^data\.test: id 'd060' is on rows 1 and 2 of the test data",
    ),
    "an id twice in the corpus": (
        lambda f: _break(f, "corpus.jsonl", lambda r: [r[0], r[0], *r[2:]]),
        {},
        r"^data\.corpus: id 'd000' is on rows 1 and 2 of .*corpus\.jsonl; give each row",
    ),
    "a corpus without text": (
        lambda f: _break(f, "corpus.jsonl", lambda r: [{"id": x["id"], "body": x["text"]}
                                                       for x in r]),
        {},
        r"^data\.corpus: column 'text' is not in .*corpus\.jsonl; a corpus row is",
    ),
    "a query without its document": (
        lambda f: _break(f, "corpus.jsonl", lambda r: [x for x in r if x["id"] != "d065"]),
        {},
        r"^data\.corpus: no document has id 'd065', the id of a query in the test data",
    ),
    "no ids beside a corpus": (
        lambda f: _break(f, "validation.jsonl", lambda r: [{k: v for k, v in x.items()
                                                            if k != "id"} for x in r]),
        {},
        r"^data\.eval: the eval data \(.*\) has no id column; with data\.corpus",
    ),
}  # fmt: skip


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_retrieval_data_mistakes_are_one_line_config_errors(
    tiny: dict[str, Path], tmp_path: Path, mistake: str
) -> None:
    from kubetune.train import embedding

    change, data, message = MISTAKES[mistake]
    folder = retrieval_set(tmp_path / "data")
    change(folder)
    job, splits = _loaded(tiny, folder, tmp_path, data=data)
    with pytest.raises(ConfigError, match=message) as info:
        # The data is checked before the model loads: a mistake costs no loading.
        embedding.build(job, splits, None, "no model loads")
    assert len(str(info.value).splitlines()) == 1


def test_the_evaluator_scores_rankings_under_kubetunes_names(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import embedding, sentence_encoder

    folder = retrieval_set(tmp_path / "data")
    job, splits = _loaded(tiny, folder, tmp_path)
    problem = embedding.retrieval(job, "test", splits.test, "t", embedding.load_corpus(splits))
    model = sentence_encoder.load(job, str(tiny["model"]), device="cpu")
    evaluator = embedding.RetrievalEvaluator(problem, 16)
    metrics = evaluator(model)
    assert set(metrics) == METRICS and all(0.0 <= v <= 1.0 for v in metrics.values())
    rows = embedding.prediction_rows(problem, evaluator)
    ranks = [r["rank"] for r in rows]
    assert metrics["recall@1"] == pytest.approx(sum(r == 1 for r in ranks) / len(rows))
    assert metrics["recall@5"] == pytest.approx(sum(r is not None and r <= 5 for r in ranks) / 12)
    assert metrics["mrr@10"] == pytest.approx(sum(1 / r for r in ranks if r) / len(rows))
    # Each row's hits are the ten most cosine-similar documents, best first.
    docs = model.encode(list(problem.corpus.values()), convert_to_tensor=True, batch_size=16)
    queries = model.encode(list(problem.queries.values()), convert_to_tensor=True)
    scores = (queries @ docs.T).tolist()
    index = {doc_id: i for i, doc_id in enumerate(problem.corpus)}
    for row, row_scores in zip(rows, scores, strict=True):
        got = [h["score"] for h in row["hits"]]
        assert got == sorted(got, reverse=True) and len(got) == embedding.TOP_K
        assert got == pytest.approx([row_scores[index[h["id"]]] for h in row["hits"]], abs=1e-5)
        assert sorted(row_scores, reverse=True)[embedding.TOP_K] <= got[-1] + 1e-5
    # A corpus encoded beforehand (the final evaluation's) scores the same.
    again = embedding.RetrievalEvaluator(problem, 16, corpus_embeddings=docs)
    assert again(model) == pytest.approx(metrics, abs=1e-6)


def test_bm25_and_hybrid_search_are_scored_beside_the_encoder(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train import embedding, sentence_encoder

    folder = retrieval_set(tmp_path / "data")
    job, splits = _loaded(tiny, folder, tmp_path)
    problem = embedding.retrieval(job, "test", splits.test, "t", embedding.load_corpus(splits))
    model = sentence_encoder.load(job, str(tiny["model"]), device="cpu")
    found = embedding.baselines(lambda texts: model.encode(list(texts)), problem)
    assert set(found) == {f"{m}_{name}" for m in ("bm25", "hybrid") for name in METRICS}
    # Each query is three words of its document: BM25 finds most (chance is 10 in 84).
    assert found["bm25_recall@10"] >= 0.5


def test_the_encoder_takes_the_specs_model_settings(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train import sentence_encoder

    folder = retrieval_set(tmp_path / "data")
    overrides = {"attention_probs_dropout_prob": 0.0}
    job = spec.validate(embedding_spec(tiny, folder, model={"config_overrides": overrides}))
    model = sentence_encoder.load(job, str(tiny["model"]), device="cpu")
    config = sentence_encoder.transformer(model).config
    assert config.attention_probs_dropout_prob == 0.0 and config.hidden_dropout_prob == 0.1
    assert model.max_seq_length == 32, "data.max_length"
    typo = spec.validate(embedding_spec(tiny, folder, model={"config_overrides": {"atention": 0}}))
    with pytest.raises(ConfigError, match=r"^model\.config_overrides\.atention: not a setting"):
        sentence_encoder.load(typo, str(tiny["model"]))


# --- the real trainer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Finished runs, started together (most of a run is starting Python): full fine-tuning
    with early stopping's best-checkpoint machinery on; LoRA; and the same LoRA run in a
    second store, stopped by SIGTERM after step 2 and then resumed."""
    tmp = tmp_path_factory.mktemp("embedding")
    folder = retrieval_set(tmp / "data")
    jobs = {
        "full": embedding_spec(tiny, folder, train={"early_stopping_patience": 5}),
        "lora": embedding_spec(
            tiny, folder, lora={"r": 4, "target_modules": ["query", "value"]},
            train={"learning_rate": 1e-2},
        ),
    }  # fmt: skip
    jobs["stopped"] = jobs["lora"]

    def start(name: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
        store = tmp / f"store-{name}"
        env = {**os.environ, "KUBETUNE_STORE": f"file://{store}", "WANDB_DIR": str(tmp),
               **(extra or {})}  # fmt: skip
        path = write_yaml(tmp / f"{name}.yaml", jobs[name])
        return subprocess.Popen(
            [sys.executable, "-m", "kubetune.train", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    started = {
        "stopped": start("stopped", {"KUBETUNE_FAILPOINT": "signal:2:term"}),
        "full": start("full"),
        "lora": start("lora"),
    }
    out: dict[str, Any] = {"data": folder}
    for name, proc in list(started.items()):
        stdout, err = proc.communicate(timeout=600)
        expected = 130 if name == "stopped" else 0
        assert proc.returncode == expected, f"{name}: {err[-3000:]}"
        out[name] = {
            "data": jobs[name],
            "dir": run_dir(tmp / f"store-{name}", jobs[name]),
            "events": events(stdout),
        }
        if name == "stopped":  # resumed while the other two still train
            started["resumed"] = start("stopped")
    stdout, err = started["resumed"].communicate(timeout=600)
    assert started["resumed"].returncode == 0, f"resumed: {err[-3000:]}"
    out["resumed"] = {"dir": out["stopped"]["dir"], "events": events(stdout)}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["full", "lora"])
def test_a_run_writes_retrieval_metrics_and_a_sentence_transformers_folder(
    runs: dict[str, Any], name: str
) -> None:
    from sentence_transformers import SentenceTransformer

    out: Path = runs[name]["dir"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"train", "eval", "test"}
    for split in ("eval", "test"):
        assert metrics[split].keys() >= METRICS | {"loss", "runtime", "samples_per_second"}
        assert all(0.0 <= metrics[split][m] <= 1.0 for m in METRICS)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["task"] == "embedding"
    assert record["metrics"] == metrics
    assert record["data"]["rows"] == {"train": 48, "eval": 12, "test": 12, "corpus": 84}
    assert record["data"]["fingerprints"].keys() == {"train", "eval", "test", "corpus"}
    for name_ in ("modules.json", "1_Pooling/config.json", "2_Normalize", "model.safetensors"):
        assert (out / "final" / name_).exists(), name_
    model = SentenceTransformer(str(out / "final"), device="cpu")
    vectors = model.encode(["goal match team", "bank market price"], convert_to_tensor=True)
    assert vectors.shape == (2, 32)
    assert vectors.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    evaluations = [e for e in runs[name]["events"] if e["event"] == "eval"]
    assert [e["metric"] for e in evaluations] == ["ndcg@10", "ndcg@10"]
    assert all(isinstance(e["value"], float) for e in evaluations)


@pytest.mark.slow
def test_prediction_rows_agree_with_the_metrics_and_the_saved_model(runs: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformer

    out: Path = runs["full"]["dir"]
    test = json.loads((out / "metrics.json").read_text())["test"]
    rows = read_jsonl(out / "test_predictions.jsonl")
    gold = read_jsonl(runs["data"] / "test.jsonl")
    assert [r["id"] for r in rows] == [g["id"] for g in gold]
    assert [r["relevant"] for r in rows] == [g["id"] for g in gold]
    ranks = [r["rank"] for r in rows]
    assert test["recall@1"] == pytest.approx(sum(r == 1 for r in ranks) / len(rows))
    assert test["recall@10"] == pytest.approx(sum(r is not None for r in ranks) / len(rows))
    assert test["mrr@10"] == pytest.approx(sum(1 / r for r in ranks if r) / len(rows))
    # The saved encoder ranks the corpus as the evaluation did.
    corpus = read_jsonl(runs["data"] / "corpus.jsonl")
    model = SentenceTransformer(str(out / "final"), device="cpu")
    queries = model.encode([g["query"] for g in gold], convert_to_tensor=True)
    docs = model.encode([d["text"] for d in corpus], convert_to_tensor=True)
    best = (queries @ docs.T).argmax(dim=-1).tolist()
    assert [corpus[i]["id"] for i in best] == [r["hits"][0]["id"] for r in rows]
    assert all(len(r["hits"]) == 10 for r in rows)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint_by_ndcg(runs: dict[str, Any]) -> None:
    out: Path = runs["full"]["dir"]
    history = json.loads((out / "history.json").read_text())
    scores = {row["step"]: row["eval_ndcg@10"] for row in history if "eval_ndcg@10" in row}
    assert sorted(scores) == [2, 4]
    assert all("eval_loss" in row for row in history if "eval_ndcg@10" in row)
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-000002", "step-000004"]


@pytest.mark.slow
def test_lora_trains_an_adapter_and_merges_it_into_final(runs: dict[str, Any]) -> None:
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from kubetune.train import sentence_encoder

    out: Path = runs["lora"]["dir"]
    model_event = next(e for e in runs["lora"]["events"] if e["event"] == "model")
    assert 0 < model_event["trainable"] < model_event["total"] / 10
    record = json.loads((out / "run.json").read_text())
    assert record["lora"] == {"target_modules": ["query", "value"]}
    assert record["parameters"]["trainable"] == model_event["trainable"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / "final" / "adapter_config.json").exists(), "final/ loads without peft"
    # final/ is the base model with the adapter merged in.
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    base = AutoModel.from_pretrained(adapter["base_model_name_or_path"])
    weight = "encoder.layer.0.attention.self.query.weight"
    untrained = base.state_dict()[weight].clone()
    merged = PeftModel.from_pretrained(base, str(out / "adapter")).merge_and_unload()
    final = SentenceTransformer(str(out / "final"), device="cpu")
    trained = sentence_encoder.transformer(final).state_dict()[weight]
    assert trained.equal(merged.state_dict()[weight])
    assert not untrained.equal(merged.state_dict()[weight]), "the adapter trained"


@pytest.mark.slow
def test_a_stopped_lora_run_resumes_to_the_same_model(runs: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformer

    stopped = [e for e in runs["stopped"]["events"] if e["event"] == "interrupted"]
    assert [e["step"] for e in stopped] == [2]
    resumed = [e for e in runs["resumed"]["events"] if e["event"] == "resume"]
    assert resumed == [{"event": "resume", "step": 2}]
    out: Path = runs["resumed"]["dir"]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed_from_step"] == 2
    texts = [row["positive"] for row in read_jsonl(runs["data"] / "test.jsonl")]
    unbroken = SentenceTransformer(str(runs["lora"]["dir"] / "final"), device="cpu")
    again = SentenceTransformer(str(out / "final"), device="cpu")
    first = unbroken.encode(texts, convert_to_tensor=True)
    second = again.encode(texts, convert_to_tensor=True)
    assert (first - second).abs().max().item() < 1e-5
    unbroken_metrics = json.loads((runs["lora"]["dir"] / "metrics.json").read_text())
    resumed_metrics = json.loads((out / "metrics.json").read_text())
    for split in ("eval", "test"):
        for metric in METRICS:
            assert resumed_metrics[split][metric] == pytest.approx(unbroken_metrics[split][metric])
