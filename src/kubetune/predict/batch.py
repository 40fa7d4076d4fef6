"""Running a batch job (:mod:`kubetune.predict.spec`): one shard, or all of them here.

A shard reads the corpus, takes its rows (:func:`corpus.shard_range`), runs the model over
them and writes its output with a manifest last (:mod:`kubetune.predict.shards`). The first
shard writes ``batch.json``: the model's source and sha256, its task, the corpus's URI,
fingerprint and row count, and the settings; every later shard checks it reads the same
model and corpus. Whichever shard finds every shard done builds what needs them all: for
``kind: index``, the FAISS (and BM25) index under ``index/``.

On a cluster each pod of the Indexed Job runs ``python -m kubetune.predict`` on its
completion index; ``kubetune run`` runs every pending shard in turn in this process, the
model loaded once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubetune import atomic, faults
from kubetune.errors import ConfigError
from kubetune.predict import corpus as corpusmod
from kubetune.predict.shards import Output, jsonl
from kubetune.predict.spec import BatchSpec, batch_id
from kubetune.store import RunLocation, open_store
from kubetune.store.record import read_run

PREDICTIONS = {"jsonl": "predictions.jsonl", "parquet": "predictions.parquet"}
EMBEDDINGS = "embeddings.npy"
DOCS = "docs.jsonl"
INDEX = "index"
#: Failpoint (``$KUBETUNE_FAILPOINT``, step = the shard): SIGKILL after the shard's files
#: are stored, before its manifest, as when a node dies at that moment.
FAIL_BEFORE_MANIFEST = "predict-before-manifest"


@dataclass(frozen=True)
class Model:
    """The model a batch job applies, as a local folder."""

    folder: Path
    sha256: str
    task: str  # a task of kubetune.spec.TASKS but zero-shot
    source: str


@dataclass(frozen=True)
class ShardResult:
    shard: int
    rows: int
    seconds: float
    skipped: bool  # done before: nothing was computed

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Summary:
    output: Output
    results: list[ShardResult]
    index: dict[str, Any] | None

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.results if not r.skipped)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results if not r.skipped)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def output_for(batch: BatchSpec, store_uri: str) -> Output:
    """The job's folder in the store at ``store_uri``."""
    endpoint = batch.storage.endpoint if batch.storage else None
    store = open_store(store_uri, endpoint=endpoint)
    return Output(store, f"{batch.name}/{batch_id(batch)}")


# --- the model ---------------------------------------------------------------------------


def _tree_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def fetch_model(batch: BatchSpec, cache: Path) -> Model:
    """``batch.model`` as a local folder: a stored run's ``final/`` (fetched), or, for
    ``kind: index``, a sentence encoder folder (a path, ``pkg:``, or ``s3://``).

    Raises:
        ConfigError: no run or folder there; the run has no final model.
    """
    source = batch.model.rstrip("/")
    location = run_at(source)
    if location is not None:
        return run_model(location, cache)
    if batch.kind != "index":
        raise ConfigError(
            f"model: {source}: no run here; name a stored run, <store>/<sweep>/<run-id> "
            "(kubetune runs list <store> shows them)"
        )
    return _encoder_folder(source, cache)


def run_at(source: str) -> RunLocation | None:
    """The run at ``source``: a run folder, or a sweep folder (``<store>/<sweep>``) holding
    one completed run. A local folder is read as a file:// store.

    Raises:
        ConfigError: a sweep folder with several completed runs (which one is meant?).
    """
    from kubetune import runs

    if "://" not in source and not source.startswith("pkg:") and Path(source).is_dir():
        source = f"file://{Path(source).resolve()}"
    if not source.startswith(("s3://", "file://")):
        return None
    try:
        found = runs.find(source)
    except ConfigError:
        return None
    if len(found) == 1 and found[0].url == source:
        return found[0]
    done = [r for r in runs.read_all(found) if r.status == "completed"]
    if len(done) == 1:
        return done[0].location
    if len(done) > 1:
        raise ConfigError(
            f"model: {source} holds {len(done)} completed runs; name one, e.g. "
            f"{done[0].location.url} (kubetune runs list {source} shows them)"
        )
    return None


def run_model(location: RunLocation, cache: Path) -> Model:
    keys = sorted(location.store.list_keys(location.key("final")))
    run = read_run(location)
    task = run.record.task or ""
    if task == "zero-shot":
        raise ConfigError(
            f"model: {location.url} is a zero-shot baseline, which trains no model; "
            "use a fine-tuned run"
        )
    if not keys:
        raise ConfigError(
            f"model: {location.url}: no final/ model (the run is {run.status}); use a completed run"
        )
    folder = cache / location.run_id
    prefix = location.key("final") + "/"
    files = {}
    for key in keys:
        data = location.store.read_bytes(key)
        files[key.removeprefix(prefix)] = data
        target = folder / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(target, data)
    return Model(folder, _tree_hash(files), task, location.url)


def _encoder_folder(source: str, cache: Path) -> Model:
    if source.startswith("pkg:"):
        from kubetune.preflight import package_folder

        folder = package_folder(source, "model")
    elif source.startswith("s3://"):
        folder = cache / "encoder"
        store = open_store(source)
        # A staged folder's MANIFEST.json (kubetune.stage) is not the model's.
        keys = [k for k in store.list_keys("") if k != "MANIFEST.json"]
        if not keys:
            raise ConfigError(f"model: {source}: no run and no files here")
        for key in keys:
            target = folder / key
            target.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(key, target)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise ConfigError(f"model: {source}: no such folder")
    files = {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    if "config.json" not in files:
        raise ConfigError(f"model: {source}: no config.json; name a model folder")
    return Model(folder, _tree_hash(files), "embedding", source)


# --- one shard ---------------------------------------------------------------------------


#: (texts, each text's question or None) → (output rows, embeddings or None).
Apply = Callable[[list[str], list[str] | None], tuple[list[dict[str, Any]], np.ndarray | None]]


def applier(batch: BatchSpec, model: Model) -> Apply:
    """What the job computes for a list of texts: output rows, and for embeddings the
    vectors (the rows then stay empty)."""
    if batch.kind == "index" or model.task == "embedding":
        from kubetune.predict import encode

        encoder = encode.load(str(model.folder), int8=batch.int8, max_length=batch.max_length)

        def embed(
            texts: list[str], _questions: list[str] | None
        ) -> tuple[list[dict[str, Any]], np.ndarray | None]:
            vectors = encoder.encode(texts, tokens=batch.tokens_per_batch)
            if batch.kind == "index":
                return [{} for _ in texts], vectors
            return [{"embedding": [round(float(x), 6) for x in v]} for v in vectors], None

        return embed
    if model.task == "classical":
        from kubetune.train import classical

        fitted = classical.load_final(model.folder)
        return lambda texts, _questions: (fitted.rows(texts), None)
    from kubetune.predict import engine

    loaded = engine.load(str(model.folder), max_length=batch.max_length, int8=batch.int8)
    if loaded.task in ("seq2seq", "causal-lm"):

        def gen(
            texts: list[str], _questions: list[str] | None
        ) -> tuple[list[dict[str, Any]], np.ndarray | None]:
            rows = engine.generate(
                loaded,
                texts,
                max_new_tokens=batch.generation.max_new_tokens,
                num_beams=batch.generation.num_beams,
                tokens=batch.tokens_per_batch,
            )
            return rows, None

        return gen

    if loaded.task == "question-answering":
        if batch.corpus.question_column is None:
            raise ConfigError(
                "corpus.question_column: a question-answering model answers a question about "
                "each row's text; name the column holding the questions"
            )

        def answers(
            texts: list[str], questions: list[str] | None
        ) -> tuple[list[dict[str, Any]], np.ndarray | None]:
            assert questions is not None
            return engine.answer(loaded, questions, texts, tokens=batch.tokens_per_batch), None

        return answers
    if batch.corpus.question_column is not None:
        raise ConfigError(
            f"corpus.question_column: the model is a {loaded.task} model, which reads no "
            "questions; remove it"
        )

    def label(
        texts: list[str], _questions: list[str] | None
    ) -> tuple[list[dict[str, Any]], np.ndarray | None]:
        return engine.predict(loaded, texts, tokens=batch.tokens_per_batch), None

    return label


def record_for(batch: BatchSpec, model: Model, corpus: corpusmod.Corpus) -> dict[str, Any]:
    return {
        "kind": batch.kind,
        "name": batch.name,
        "batch_id": batch_id(batch),
        "model": {"source": model.source, "sha256": model.sha256, "task": model.task},
        "corpus": {
            "uri": batch.corpus.uri,
            "fingerprint": corpus.fingerprint,
            "rows": len(corpus),
            "text_column": batch.corpus.text_column,
            "id_column": corpus.id_column,
            **({"question_column": batch.corpus.question_column} if corpus.questions else {}),
        },
        "shards": batch.shards,
        "settings": {
            "max_length": batch.max_length,
            "int8": batch.int8,
            "tokens_per_batch": batch.tokens_per_batch,
            "format": batch.output.format,
            **({"generation": batch.generation.model_dump()} if batch.kind == "predict" else {}),
        },
        "status": "running",
    }


def run_shard(
    batch: BatchSpec,
    output: Output,
    shard: int,
    corpus: corpusmod.Corpus,
    model: Model,
    apply: Apply,
) -> ShardResult:
    """Shard ``shard``'s output, unless it is done already (see :mod:`shards`)."""
    output.claim(record_for(batch, model, corpus))
    if output.done(shard):
        return ShardResult(shard, 0, 0.0, skipped=True)
    rows = corpusmod.shard_range(len(corpus), batch.shards, shard)
    texts = [corpus.texts[i] for i in rows]
    questions = [corpus.questions[i] for i in rows] if corpus.questions is not None else None
    started = time.perf_counter()
    results, vectors = apply(texts, questions)
    seconds = time.perf_counter() - started
    keys = [corpus.keys[i] for i in rows]
    if vectors is not None:
        files = {EMBEDDINGS: _npy(vectors), DOCS: jsonl(_docs(keys, texts, corpus.id_column))}
    else:
        files = {PREDICTIONS[batch.output.format]: _rows(keys, results, batch.output.format)}
    summary = {
        "rows": len(texts),
        "first_row": rows.start,
        "seconds": round(seconds, 3),
        "rows_per_second": round(len(texts) / seconds, 2) if seconds else None,
        "host": socket.gethostname(),
    }
    output.write_shard(
        shard, files, summary, before_manifest=lambda: faults.failpoint(FAIL_BEFORE_MANIFEST, shard)
    )
    return ShardResult(shard, len(texts), seconds, skipped=False)


def _npy(vectors: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, vectors.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def _docs(keys: list[dict[str, Any]], texts: list[str], column: str | None) -> list[dict[str, Any]]:
    return [
        {"id": str(key[column]) if column else str(key["row"]), "text": text}
        for key, text in zip(keys, texts, strict=True)
    ]


def _rows(keys: list[dict[str, Any]], results: list[dict[str, Any]], fmt: str) -> bytes:
    rows = [{**key, **result} for key, result in zip(keys, results, strict=True)]
    if fmt == "jsonl":
        return jsonl(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


# --- after the last shard ------------------------------------------------------------------


def finish(batch: BatchSpec, output: Output) -> dict[str, Any] | None:
    """Once every shard is done: build the index (kind: index) and mark the job completed.
    Returns the index's record, or None when shards are still pending or nothing to build.
    Two shards finishing together both build the same index; the second write is the same
    bytes."""
    if output.pending(batch.shards):
        return None
    info: dict[str, Any] | None = None
    if batch.kind == "index" and not output.store.exists(output.key(f"{INDEX}/MANIFEST.json")):
        info = build_index(batch, output)
    elif batch.kind == "index":
        info = output.store.read_json(output.key(f"{INDEX}/index.json"))
    manifests = [output.manifest(s) or {} for s in range(batch.shards)]
    seconds = sum(m.get("seconds", 0.0) for m in manifests)
    rows = sum(m.get("rows", 0) for m in manifests)
    output.update_record(
        status="completed",
        rows=rows,
        seconds=round(seconds, 3),
        rows_per_second=round(rows / seconds, 2) if seconds else None,
    )
    return info


def build_index(batch: BatchSpec, output: Output) -> dict[str, Any]:
    """Every shard's embeddings and docs, in corpus order, into a FAISS index (and BM25)."""
    from kubetune.retrieval import index as indexmod

    vectors, docs = [], []
    for shard in range(batch.shards):
        vectors.append(np.load(io.BytesIO(output.read_shard_file(shard, EMBEDDINGS))))
        text = output.read_shard_file(shard, DOCS).decode()
        docs += [json.loads(line) for line in text.splitlines() if line]
    record = output.record() or {}
    meta = {
        "encoder": record.get("model", {}),
        "corpus": record.get("corpus", {}),
        "batch": output.url,
    }
    assert batch.index is not None
    with tempfile.TemporaryDirectory(prefix="kubetune-index-") as tmp:
        folder = Path(tmp)
        written = indexmod.write(
            folder,
            np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32),
            [d["id"] for d in docs],
            [d["text"] for d in docs],
            meta,
            kind=batch.index.type,
        )
        files = {
            str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
    output.write_tree(INDEX, files)
    return written


# --- here ----------------------------------------------------------------------------------


def run_here(
    batch: BatchSpec,
    store_uri: str,
    *,
    shards: list[int] | None = None,
    progress: Callable[[ShardResult], None] | None = None,
) -> Summary:
    """Every pending shard (or ``shards``) in this process, the model loaded once; then
    :func:`finish`."""
    output = output_for(batch, store_uri)
    endpoint = batch.storage.endpoint if batch.storage else None
    corpus = corpusmod.read(batch.corpus, endpoint=endpoint)
    wanted = list(range(batch.shards)) if shards is None else shards
    results: list[ShardResult] = []
    with tempfile.TemporaryDirectory(prefix="kubetune-model-", dir=_workdir()) as cache:
        model = fetch_model(batch, Path(cache))
        output.claim(record_for(batch, model, corpus))
        todo = [s for s in wanted if not output.done(s)]
        results += [ShardResult(s, 0, 0.0, skipped=True) for s in wanted if s not in todo]
        if todo:
            apply = applier(batch, model)
            for shard in todo:
                result = run_shard(batch, output, shard, corpus, model, apply)
                results.append(result)
                if progress is not None:
                    progress(result)
    index = finish(batch, output)
    return Summary(output, sorted(results, key=lambda r: r.shard), index)


def _workdir() -> str | None:
    folder = os.environ.get("KUBETUNE_WORKDIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
    return folder


def gather(batch: BatchSpec, output: Output) -> list[dict[str, Any]]:
    """Every done shard's prediction rows, in corpus order (kind: predict)."""
    name = PREDICTIONS[batch.output.format]
    rows: list[dict[str, Any]] = []
    for shard in range(batch.shards):
        data = output.read_shard_file(shard, name)
        if batch.output.format == "jsonl":
            rows += [json.loads(line) for line in data.decode().splitlines() if line]
        else:
            import pyarrow.parquet as pq

            rows += pq.read_table(io.BytesIO(data)).to_pylist()
    return rows
