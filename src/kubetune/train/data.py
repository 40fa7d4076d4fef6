"""Data: sources → train/eval/test datasets, labels, and a content fingerprint.

A source is a local ``.jsonl``/``.csv``/``.parquet`` file or a folder of them, an
``s3://`` object or prefix (read through the store), or a Hugging Face hub dataset
``name`` / ``name:split`` (with ``data.config`` and a pinned ``data.revision``).
No eval source → a seeded ``validation_split`` of train. An embedding task's ``data.corpus``
(the documents its evaluation searches) is read the same way, beside the splits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset
from datasets.exceptions import DatasetNotFoundError

from kubetune import datafiles
from kubetune.errors import ConfigError, WorldError
from kubetune.preflight import looks_local, missing_path
from kubetune.spec import JobSpec
from kubetune.train.inputs import Fetcher


@dataclass
class Splits:
    """The loaded splits and what identifies them."""

    train: Dataset | None
    eval: Dataset | None
    test: Dataset | None
    fingerprint: str
    sources: dict[str, str] = field(default_factory=dict)
    #: Each split's own fingerprint (of its source's bytes), so a change names its split.
    fingerprints: dict[str, str] = field(default_factory=dict)
    #: ``data.corpus`` (embedding): the documents every split's queries are searched against.
    corpus: Dataset | None = None

    def present(self) -> dict[str, Dataset]:
        return {
            n: d
            for n, d in (("train", self.train), ("eval", self.eval), ("test", self.test))
            if d is not None
        }


def _read_local(files: list[Path], where: str) -> Dataset:
    if datafiles.file_kind(files, where) == "json":
        return _dataset([row.values for row in datafiles.json_rows(files)], files)
    return load_dataset(
        datafiles.FORMATS[files[0].suffix], data_files=[str(f) for f in files], split="train"
    )


def _dataset(rows: list[dict[str, Any]], files: list[Path]) -> Dataset:
    """Rows as a Dataset; a column whose values are of different kinds is the data's mistake."""
    import pyarrow as pa

    try:
        return Dataset.from_list(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        where = files[0] if len(files) == 1 else files[0].parent
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"{where}: a column holds values of different kinds ({detail}); give each column "
            "one kind (all text, or all numbers)"
        ) from exc


def load_source(
    source: str, spec: JobSpec, cache: Path, fetch: Fetcher | None = None, where: str = "data"
) -> tuple[Dataset, str]:
    """One split's rows and the fingerprint of its content. ``s3://`` sources come through
    ``fetch`` (staged ones checked against their content address)."""
    if source.startswith("s3://"):
        fetcher = fetch or Fetcher(None, spec.storage, cache)
        files = fetcher.data_files(where, source)
        if not files:
            raise ConfigError(f"{source}: no .jsonl, .csv or .parquet objects there")
        return _read_local(files, where), datafiles.hash_files(files)
    path = Path(source)
    if path.exists():
        files = datafiles.local_files(path, where)
        return _read_local(files, where), datafiles.hash_files(files)
    if looks_local(source):
        raise ConfigError(f"{where}: {missing_path(source)}")
    name, _, split = source.partition(":")
    try:
        data = load_dataset(
            name, spec.data.config, revision=spec.data.revision, split=split or "train"
        )
    except DatasetNotFoundError as exc:  # the hub answered: no such name (or revision)
        raise ConfigError(
            f"{where}: {source} is neither a local file or folder nor a dataset on the hub "
            f"({exc}); check the name, data.config and data.revision"
        ) from exc
    except Exception as exc:
        raise WorldError(f"hub dataset {source}: {type(exc).__name__}: {exc}") from exc
    assert isinstance(data, Dataset)
    return data, f"hub:{name}:{spec.data.revision or 'main'}:{data._fingerprint}"


def load_splits(spec: JobSpec, cache: Path, fetch: Fetcher | None = None) -> Splits:
    """Load every split the spec names; hold out a seeded eval split when none is given."""
    d = spec.data
    loaded: dict[str, Dataset] = {}
    prints: dict[str, str] = {}
    sources: dict[str, str] = {}
    for split, source in (("train", d.train), ("eval", d.eval), ("test", d.test)):
        if source:
            loaded[split], fingerprint = load_source(source, spec, cache, fetch, f"data.{split}")
            prints[split] = fingerprint
            sources[split] = source
    if "train" in loaded and "eval" not in loaded:
        parts = loaded["train"].train_test_split(test_size=d.validation_split, seed=spec.train.seed)
        loaded["train"], loaded["eval"] = parts["train"], parts["test"]
        sources["eval"] = f"{d.validation_split:.0%} of train (seed {spec.train.seed})"
    if "train" in loaded and d.max_train_samples:
        loaded["train"] = loaded["train"].select(
            range(min(d.max_train_samples, len(loaded["train"])))
        )
    for split in ("eval", "test"):
        if split in loaded and d.max_eval_samples:
            loaded[split] = loaded[split].select(range(min(d.max_eval_samples, len(loaded[split]))))
    for split, data in loaded.items():
        if len(data) == 0:
            raise ConfigError(f"data.{split}: {sources.get(split, split)} has no rows")
    corpus = None
    if d.corpus:
        corpus, prints["corpus"] = load_source(d.corpus, spec, cache, fetch, "data.corpus")
        sources["corpus"] = d.corpus
        if len(corpus) == 0:
            raise ConfigError(f"data.corpus: {d.corpus} has no rows")
    return Splits(
        loaded.get("train"),
        loaded.get("eval"),
        loaded.get("test"),
        # combined_fingerprint covers the splits; the corpus's print is recorded beside theirs.
        datafiles.combined_fingerprint(prints),
        sources,
        prints,
        corpus,
    )


def require_columns(splits: Splits, columns: dict[str, str]) -> None:
    """Every split has the columns the task reads (``field name → column``)."""
    for split, data in splits.present().items():
        for field_name, column in columns.items():
            if column not in data.column_names:
                raise ConfigError(
                    f"data.{field_name}: column {column!r} is not in the {split} data "
                    f"({splits.sources.get(split, split)}); columns: {', '.join(data.column_names)}"
                )


def infer_labels(
    splits: Splits,
    column: str,
    given: list[str] | None,
    *,
    sequence: bool,
    field: str = "data.label_column",
) -> list[str]:
    """Label names in id order (see :func:`kubetune.datafiles.label_names`)."""

    def pairs(split: str, data: Dataset) -> Iterator[tuple[str, Any]]:
        source = splits.sources.get(split, split)
        for row, value in enumerate(data[column], 1):
            yield f"row {row} of the {split} data ({source})", value

    return datafiles.label_names(
        {split: pairs(split, data) for split, data in splits.present().items()},
        column,
        given,
        sequence=sequence,
        field=field,
    )
