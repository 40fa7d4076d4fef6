"""A batch job's corpus: its rows (id, text) from a local path, an s3:// prefix or a hub
dataset, a fingerprint of its content, and the rows of each shard.

Every shard reads the same listing in the same order and takes a contiguous range of rows,
so the shards' outputs, concatenated by shard number, are the corpus in its own order.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune import datafiles
from kubetune.errors import ConfigError
from kubetune.predict.spec import HUB, CorpusSpec
from kubetune.store import StoreError, open_store


@dataclass(frozen=True)
class Corpus:
    """Rows in corpus order: ``keys`` are what each output row carries to be joined back
    ({id_column: value} or {"row": number}), ``texts`` what the model reads."""

    keys: list[dict[str, Any]]
    texts: list[str]
    fingerprint: str
    id_column: str | None  # None: rows are named by their number
    #: corpus.question_column's: each row's question about its text (question answering).
    questions: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def shard_range(rows: int, shards: int, shard: int) -> range:
    """The rows of ``shard`` (0-based) out of ``shards``: contiguous, sizes differing by at
    most one, in corpus order."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return range(shard * rows // shards, (shard + 1) * rows // shards)


def read(spec: CorpusSpec, *, endpoint: str | None = None) -> Corpus:
    """Every row of the corpus (see the module docstring).

    Raises:
        ConfigError: no such file or prefix, no rows, a row without text.
    """
    if spec.uri.startswith(HUB):
        values, fingerprint = _hub_rows(spec)
        where = [f"{spec.uri}[{i}]" for i in range(len(values))]
    elif spec.uri.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="kubetune-corpus-") as tmp:
            files = _download(spec.uri, Path(tmp), endpoint)
            values, where, fingerprint = _file_rows(files)
    else:
        path = Path(spec.uri)
        if not path.exists():
            raise ConfigError(f"corpus.uri: {spec.uri}: no such file or folder")
        files = datafiles.local_files(path, "corpus.uri")
        values, where, fingerprint = _file_rows(files)
    if not values:
        raise ConfigError(f"corpus.uri: {spec.uri}: no rows")
    texts = []
    for row, at in zip(values, where, strict=True):
        text = row.get(spec.text_column)
        if not isinstance(text, str):
            columns = ", ".join(map(str, row)) or "none"
            raise ConfigError(
                f"{at}: no text in column {spec.text_column!r}; set corpus.text_column "
                f"(its columns: {columns})"
            )
        texts.append(text)
    questions = None
    if spec.question_column is not None:
        questions = []
        for row, at in zip(values, where, strict=True):
            question = row.get(spec.question_column)
            if not isinstance(question, str) or not question.strip():
                raise ConfigError(
                    f"{at}: no question in column {spec.question_column!r}; set "
                    "corpus.question_column or give every row its question"
                )
            questions.append(question)
    column = spec.id_column
    if column is not None and all(column in row for row in values):
        keys = [{column: row[column]} for row in values]
    else:
        column = None
        keys = [{"row": number} for number in range(len(values))]
    return Corpus(keys, texts, fingerprint, column, questions)


def _file_rows(files: list[Path]) -> tuple[list[dict[str, Any]], list[str], str]:
    rows = datafiles.read_rows(files, "corpus.uri")
    return [r.values for r in rows], [r.where for r in rows], datafiles.hash_files(files)


def _download(uri: str, into: Path, endpoint: str | None) -> list[Path]:
    """The data files under an s3:// prefix (or one object), downloaded in key order."""
    prefix = uri.rstrip("/")
    try:
        store = open_store(prefix, endpoint=endpoint)
        # A staged folder's MANIFEST.json (kubetune.stage) is not data.
        keys = sorted(
            k
            for k in store.list_keys("")
            if Path(k).suffix in datafiles.FORMATS and k != "MANIFEST.json"
        )
        if not keys and Path(prefix).suffix in datafiles.FORMATS:
            parent, name = prefix.rsplit("/", 1)
            store, keys = open_store(parent, endpoint=endpoint), [name]
        if not keys:
            raise ConfigError(f"corpus.uri: {uri}: no .jsonl, .csv or .parquet objects here")
        files = []
        for key in keys:
            local = into / key
            local.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(key, local)
            files.append(local)
    except StoreError as exc:
        raise ConfigError(f"corpus.uri: {uri}: {exc}") from exc
    datafiles.file_kind(files, "corpus.uri")
    return files


def _hub_rows(spec: CorpusSpec) -> tuple[list[dict[str, Any]], str]:
    """A hub dataset's split, through ``datasets`` (its cache, or the hub when reachable)."""
    name = spec.uri.removeprefix(HUB)
    try:
        import datasets
    except ImportError as exc:  # the laptop install has no datasets
        raise ConfigError(
            f"corpus.uri: {spec.uri}: install kubetune[train] to read hub datasets"
        ) from exc
    try:
        data = datasets.load_dataset(name, split=spec.split)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"corpus.uri: {spec.uri} (split {spec.split}) could not be loaded: {first}"
        ) from exc
    return list(data), str(data._fingerprint)
