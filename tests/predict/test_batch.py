"""Batch jobs over a stored run: every task family through predict, shards that concatenate
to one pass in corpus order, a manifest per shard so a killed shard is redone alone and a
finished one never twice, parquet output, corpora from s3:// and a datasets source, and an
index job whose index.faiss loads with plain faiss.read_index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.errors import ConfigError
from kubetune.store import RunLocation, Store, open_store
from kubetune.train import classical

from conftest import ML_GROUP
from tiny import classical_final

pytestmark = pytest.mark.xdist_group(ML_GROUP)

TEXTS = [
    "goal match team win",
    "bank market price shares profit",
    "computer phone",
    "the coach of the league team",
    "stock trade tax and the bank",
    "robot web code data chip software",
    "a score",
]


def stored_run(store: Store, sweep: str, task: str, folder: Path | None) -> str:
    """A completed run in ``store`` whose final/ holds ``folder``'s files."""
    location = RunLocation(store, sweep, f"{sweep}-0123abcd")
    store.write_text(location.key("spec.yaml"), f"name: {sweep}\n")
    status = "completed"
    store.write_json(location.key("run.json"), {"status": status, "task": task})
    for path in sorted(folder.rglob("*")) if folder else []:
        if folder is not None and path.is_file():
            store.write_bytes(location.key(f"final/{path.relative_to(folder)}"), path.read_bytes())
    return location.url


@pytest.fixture(scope="module")
def models(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random model folder per task family, all on the tiny BERT's tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        EncoderDecoderModel,
        GPT2Config,
        GPT2LMHeadModel,
    )

    root = tmp_path_factory.mktemp("families")
    tokenizer = AutoTokenizer.from_pretrained(tiny["model"])
    torch.manual_seed(0)
    labels = ["money", "sport", "tech"]
    tags = ["O", "B-loc", "I-loc"]
    built: dict[str, Any] = {
        "classification": BertForSequenceClassification.from_pretrained(
            tiny["model"], num_labels=3, id2label=dict(enumerate(labels))
        ),
        "ner": BertForTokenClassification.from_pretrained(
            tiny["model"], num_labels=3, id2label=dict(enumerate(tags))
        ),
        "question-answering": BertForQuestionAnswering.from_pretrained(tiny["model"]),
        "causal-lm": GPT2LMHeadModel(
            GPT2Config(
                vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=1, n_head=2
            )
        ),
    }
    config = BertConfig.from_pretrained(tiny["model"])
    seq2seq = EncoderDecoderModel.from_encoder_decoder_pretrained(
        str(tiny["model"]), str(tiny["model"])
    )
    seq2seq.config.decoder_start_token_id = tokenizer.cls_token_id
    seq2seq.config.pad_token_id = tokenizer.pad_token_id
    seq2seq.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    seq2seq.generation_config.pad_token_id = tokenizer.pad_token_id
    built["seq2seq"] = seq2seq
    folders = {}
    for family, model in built.items():
        folders[family] = root / family
        model.save_pretrained(folders[family])
        tokenizer.save_pretrained(folders[family])
    encoder = SentenceTransformer(
        modules=[
            st.Transformer(str(tiny["model"]), max_seq_length=64),
            st.Pooling(config.hidden_size, "mean"),
            st.Normalize(),
        ]
    )
    folders["embedding"] = root / "embedding"
    encoder.save(str(folders["embedding"]))
    from kubetune import inference

    qa = inference.Inference(task="question-answering", max_length=32, doc_stride=8,
                             max_answer_length=5, null_threshold=0.0, allow_null=False)  # fmt: skip
    inference.write(folders["question-answering"], qa)
    folders["classical"] = root / "classical"
    classical.save_final(_classical_model(), folders["classical"])
    return folders


def _classical_model() -> Any:
    """A TF-IDF + logistic regression pipeline fitted on a few texts of each label."""
    from kubetune.spec import ClassicalSpec
    from kubetune.train import classical

    texts = ["goal match team", "team win league", "bank price market", "shares profit bank",
             "computer phone chip", "software code robot"]  # fmt: skip
    pipeline = classical.build_pipeline(ClassicalSpec(min_df=1), multi_label=False, seed=0)
    pipeline.fit(texts, [1, 1, 0, 0, 2, 2])
    return classical.Classifier(pipeline, ["money", "sport", "tech"], False, "text")


def corpus_file(folder: Path, texts: list[str] = TEXTS) -> Path:
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": t, "question": "who won?"})
                            + "\n" for i, t in enumerate(texts)))  # fmt: skip
    return path


def batch_spec(model: str, corpus: str, **overrides: Any) -> Any:
    from kubetune.predict import spec

    data: dict[str, Any] = {
        "kind": "predict", "name": "labels", "model": model, "corpus": {"uri": corpus},
        "shards": 3, "tokens_per_batch": 64, "generation": {"max_new_tokens": 3},
    }  # fmt: skip
    for key, value in overrides.items():
        data[key] = value
    return spec.validate(data)


def asking(job: Any) -> Any:
    """``job`` with its corpus's questions in the column "question"."""
    corpus = job.corpus.model_copy(update={"question_column": "question"})
    return job.model_copy(update={"corpus": corpus})


@pytest.mark.parametrize(
    "family",
    ["classification", "ner", "question-answering", "seq2seq", "causal-lm", "embedding",
     "classical"],
)  # fmt: skip
def test_every_task_family_predicts_through_sharded_batch_job(
    family: str, models: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.predict import batch

    store = open_store(f"file://{tmp_path}/store")
    run = stored_run(store, "topic", family, models[family])
    job = batch_spec(run, str(corpus_file(tmp_path)))
    if family == "question-answering":
        job = asking(job)
    summary = batch.run_here(job, store.uri)
    assert [r.shard for r in summary.results] == [0, 1, 2]
    assert summary.rows == len(TEXTS) and summary.rows_per_second > 0
    rows = batch.gather(job, summary.output)
    assert [r["id"] for r in rows] == [f"doc-{i}" for i in range(len(TEXTS))]
    field = {"classification": "label", "ner": "entities", "seq2seq": "generated",
             "causal-lm": "generated", "embedding": "embedding",
             "classical": "label", "question-answering": "answer"}[family]  # fmt: skip
    assert all(field in r for r in rows), rows[0]
    record = summary.output.record()
    assert record is not None and record["status"] == "completed"
    assert record["model"]["source"] == run and len(record["model"]["sha256"]) == 64
    assert record["model"]["task"] == family
    assert record["corpus"]["rows"] == len(TEXTS) and record["corpus"]["fingerprint"]
    if family == "classification":
        from kubetune.predict import engine

        # Three shards, concatenated, are one pass over the corpus in its order.
        alone = engine.predict(engine.load(str(models[family])), TEXTS, bf16=False)
        assert [r["label"] for r in rows] == [a["label"] for a in alone]
    if family == "embedding":
        assert len(rows[0]["embedding"]) == 32
    if family == "question-answering":
        # Never empty (allow_null: false), at most 5 tokens, always the row's own characters.
        for row, text in zip(rows, TEXTS, strict=True):
            assert row["answer"] and text[row["start"] : row["end"]] == row["answer"]
        assert record["corpus"]["question_column"] == "question"
    if family == "classical":
        # Words the pipeline was fitted on decide: scikit-learn alone, no transformer.
        assert [r["label"] for r in rows[:3]] == ["sport", "money", "tech"]
        assert all(sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4) for r in rows)


@pytest.mark.parametrize(("method", "field"), [("crf", "entities"), ("lead", "generated")])
def test_a_tagging_or_summary_baseline_predicts_without_a_model(
    method: str, field: str, tmp_path: Path
) -> None:
    from kubetune.predict import batch

    store = open_store(f"file://{tmp_path}/store")
    run = stored_run(store, "base", "classical", classical_final(method, tmp_path))
    # Sentences shaped as the four the CRF was fitted on; the lead keeps the first of each.
    texts = ["the Orbit crashed. Twice.", "the Beacon crashed"]
    job = batch_spec(run, str(corpus_file(tmp_path, texts)))
    rows = batch.gather(job, batch.run_here(job, store.uri).output)
    assert [r["id"] for r in rows] == ["doc-0", "doc-1"] and all(field in r for r in rows)
    if method == "lead":
        assert [r["generated"] for r in rows] == ["the Orbit crashed.", "the Beacon crashed"]
    else:
        assert [[(e["text"], e["start"]) for e in r["entities"]][:1] for r in rows] == [
            [("Orbit", 4)], [("Beacon", 4)]]  # fmt: skip


def test_parquet_output_keeps_ids_and_nested_scores(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from kubetune.predict import batch

    store = open_store(f"file://{tmp_path}/store")
    run = stored_run(store, "topic", "classification", models["classification"])
    job = batch_spec(run, str(corpus_file(tmp_path)), output={"format": "parquet"}, shards=2)
    summary = batch.run_here(job, store.uri)
    key = summary.output.shard_key(1, "predictions.parquet")
    table = pq.read_table(Path(store.url(key).removeprefix("file://")))
    assert table.column_names == ["id", "label", "score", "scores"]
    assert [r["id"] for r in batch.gather(job, summary.output)][-1] == f"doc-{len(TEXTS) - 1}"


def test_a_rerun_skips_done_shards_and_a_changed_corpus_is_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.predict import batch

    store = open_store(f"file://{tmp_path}/store")
    run = stored_run(store, "topic", "classification", models["classification"])
    corpus = corpus_file(tmp_path)
    job = batch_spec(run, str(corpus))
    first = batch.run_here(job, store.uri)
    manifest = first.output.manifest(1)
    again = batch.run_here(job, store.uri)
    assert all(r.skipped for r in again.results) and again.rows == 0
    assert again.output.manifest(1) == manifest
    corpus_file(tmp_path, [*TEXTS, "one more row"])
    with pytest.raises(ConfigError, match=r"the corpus changed since its first shard ran"):
        batch.run_here(job, store.uri)


def test_mistakes_are_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.predict import batch

    store = open_store(f"file://{tmp_path}/store")
    run = stored_run(store, "topic", "classification", models["classification"])
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": 1, "body": "x"}\n')
    with pytest.raises(ConfigError, match=r"no text in column 'text'; set corpus.text_column "
                       r"\(its columns: id, body\)"):  # fmt: skip
        batch.run_here(batch_spec(run, str(corpus)), store.uri)
    baseline = stored_run(store, "baseline", "zero-shot", None)
    with pytest.raises(ConfigError, match="zero-shot baseline, which trains no model"):
        batch.run_here(batch_spec(baseline, str(corpus_file(tmp_path))), store.uri)
    with pytest.raises(ConfigError, match="no run here"):
        batch.run_here(
            batch_spec(f"{store.uri}/nothing/here", str(corpus_file(tmp_path))), store.uri
        )
    reader = stored_run(store, "reader", "question-answering", models["question-answering"])
    with pytest.raises(ConfigError, match="corpus.question_column: a question-answering model"):
        batch.run_here(batch_spec(reader, str(corpus_file(tmp_path))), store.uri)
    with pytest.raises(ConfigError, match="a classification model, which reads no questions"):
        batch.run_here(asking(batch_spec(run, str(corpus_file(tmp_path)))), store.uri)
    corpus.write_text('{"id": 1, "text": "x", "question": " "}\n')
    with pytest.raises(ConfigError, match="no question in column 'question'"):
        batch.run_here(asking(batch_spec(reader, str(corpus))), store.uri)


def test_corpus_from_an_s3_prefix_and_from_a_datasets_source(
    models: dict[str, Path], tmp_path: Path, s3_env: str
) -> None:
    from kubetune.predict import batch

    store = open_store(f"s3://runs/{tmp_path.name}")
    run = stored_run(store, "topic", "classification", models["classification"])
    bucket = open_store(f"s3://runs/{tmp_path.name}-corpus")
    rows = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)]
    for part, chunk in enumerate((rows[:4], rows[4:])):
        bucket.write_text(f"part-{part}.jsonl", "".join(json.dumps(r) + "\n" for r in chunk))
    job = batch_spec(run, bucket.uri + "/", shards=2)
    summary = batch.run_here(job, store.uri)
    assert [r["id"] for r in batch.gather(job, summary.output)] == [r["id"] for r in rows]
    # hub:<id> goes through datasets.load_dataset, which also reads a local data folder.
    local = tmp_path / "dataset"
    local.mkdir()
    corpus_file(local)
    hub = batch_spec(run, f"hub:{local}", shards=1, name="hub")
    got = batch.gather(hub, batch.run_here(hub, store.uri).output)
    assert [r["id"] for r in got] == [r["id"] for r in rows]


@pytest.mark.slow
def test_a_killed_shard_is_redone_alone_and_a_finished_one_never_twice(
    models: dict[str, Path], tmp_path: Path, s3_env: str
) -> None:
    """Each shard as its pod runs it (python -m kubetune.predict SPEC, $KUBETUNE_SHARD), on
    moto: shard 1 is SIGKILLed after storing its rows, before its manifest."""
    from kubetune.predict import batch

    store_uri = f"s3://runs/{tmp_path.name}"
    store = open_store(store_uri)
    run = stored_run(store, "topic", "classification", models["classification"])
    inputs = open_store(f"s3://runs/{tmp_path.name}-in")
    inputs.write_text("corpus.jsonl", corpus_file(tmp_path).read_text())
    job = batch_spec(run, f"{inputs.uri}/corpus.jsonl", shards=2)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(job.model_dump(mode="json")))

    def pod(shard: int, failpoint: str = "") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBETUNE_SHARD": str(shard), "KUBETUNE_STORE": store_uri,
               "KUBETUNE_FAILPOINT": failpoint}  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "kubetune.predict", str(spec_file)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    output = batch.output_for(job, store_uri)
    killed = pod(1, "predict-before-manifest:1")
    assert killed.returncode == -9, killed.stderr
    assert store.exists(output.shard_key(1, "predictions.jsonl")) and not output.done(1)
    done = pod(0)
    assert done.returncode == 0, done.stderr
    first = output.manifest(0)
    assert output.pending(2) == [1] and (output.record() or {})["status"] == "running"
    again = pod(0)  # the Job never reruns a succeeded index; if a pod does, it does nothing
    assert again.returncode == 0 and "done before" in again.stdout
    assert output.manifest(0) == first
    redo = pod(1)
    assert redo.returncode == 0, redo.stderr
    assert output.pending(2) == [] and (output.record() or {})["status"] == "completed"
    assert [r["id"] for r in batch.gather(job, output)] == [f"doc-{i}" for i in range(len(TEXTS))]


def test_index_job_builds_an_index_plain_faiss_reads(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import faiss
    import numpy as np

    from kubetune.predict import batch, encode
    from kubetune.retrieval.index import Index

    store = open_store(f"file://{tmp_path}/store")
    job = batch_spec(str(models["embedding"]), str(corpus_file(tmp_path)), kind="index",
                     name="docs", index={"type": "flat"})  # fmt: skip
    summary = batch.run_here(job, store.uri)
    assert summary.index is not None and summary.index["count"] == len(TEXTS)
    folder = Path(summary.output.url.removeprefix("file://")) / "index"
    raw = faiss.read_index(str(folder / "index.faiss"))
    assert raw.ntotal == len(TEXTS)
    vectors = encode.load(str(models["embedding"])).encode(TEXTS[2:3])
    _scores, found = raw.search(np.asarray(vectors, dtype=np.float32), 1)
    assert int(found[0][0]) == 2
    loaded = Index.load(folder)
    assert loaded.search(vectors, 1)[0][0][0] == "doc-2"
