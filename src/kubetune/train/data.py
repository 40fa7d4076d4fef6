"""Data: sources → train/eval/test datasets, labels, and a content fingerprint.

A source is a local ``.jsonl``/``.csv``/``.parquet`` file or a folder of them, an
``s3://`` object or prefix (read through the store), or a Hugging Face hub dataset
``name`` / ``name:split`` (with ``data.config`` and a pinned ``data.revision``).
No eval source → a seeded ``validation_split`` of train.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset

from kubetune.errors import ConfigError, WorldError
from kubetune.spec import JobSpec
from kubetune.train.inputs import Fetcher

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Splits:
    """The loaded splits and what identifies them."""

    train: Dataset | None
    eval: Dataset | None
    test: Dataset | None
    fingerprint: str
    sources: dict[str, str] = field(default_factory=dict)

    def present(self) -> dict[str, Dataset]:
        return {
            n: d
            for n, d in (("train", self.train), ("eval", self.eval), ("test", self.test))
            if d is not None
        }


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _FORMATS and p.is_file())
        if not files:
            raise ConfigError(f"{path}: no .jsonl, .csv or .parquet files in this folder")
        return files
    if path.suffix not in _FORMATS:
        raise ConfigError(f"{path}: use a .jsonl, .csv or .parquet file")
    return [path]


def _read_local(files: list[Path]) -> Dataset:
    kinds = {_FORMATS[f.suffix] for f in files}
    if len(kinds) > 1:
        raise ConfigError(f"{files[0].parent}: mixes file formats ({', '.join(sorted(kinds))})")
    kind = kinds.pop()
    if kind == "json":
        rows: list[dict[str, Any]] = []
        for file in files:
            with file.open("rb") as handle:  # bytes: a decoding error names its own line
                for number, raw in enumerate(handle, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise ConfigError(
                            f"{file}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                            f"column {exc.start + 1}); save the file as UTF-8"
                        ) from exc
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise ConfigError(f"{file}:{number}: not JSON ({exc.msg})") from exc
        return _dataset(rows, files)
    return load_dataset(kind, data_files=[str(f) for f in files], split="train")


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


def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_source(
    source: str, spec: JobSpec, cache: Path, fetch: Fetcher | None = None, field: str = "data"
) -> tuple[Dataset, str]:
    """One split's rows and the fingerprint of its content. ``s3://`` sources come through
    ``fetch`` (staged ones checked against their content address)."""
    if source.startswith("s3://"):
        fetcher = fetch or Fetcher(None, spec.storage, cache)
        files = fetcher.data_files(field, source)
        if not files:
            raise ConfigError(f"{source}: no .jsonl, .csv or .parquet objects there")
        return _read_local(files), _hash_files(files)
    path = Path(source)
    if path.exists():
        files = _local_files(path)
        return _read_local(files), _hash_files(files)
    if source.startswith((".", "/")) or path.suffix in _FORMATS:
        raise ConfigError(f"{source}: no such file or folder")
    name, _, split = source.partition(":")
    try:
        data = load_dataset(
            name, spec.data.config, revision=spec.data.revision, split=split or "train"
        )
    except Exception as exc:
        raise WorldError(f"hub dataset {source}: {type(exc).__name__}: {exc}") from None
    assert isinstance(data, Dataset)
    return data, f"hub:{name}:{spec.data.revision or 'main'}:{data._fingerprint}"


def load_splits(spec: JobSpec, cache: Path, fetch: Fetcher | None = None) -> Splits:
    """Load every split the spec names; hold out a seeded eval split when none is given."""
    d = spec.data
    loaded: dict[str, Dataset] = {}
    prints: list[str] = []
    sources: dict[str, str] = {}
    for split, source in (("train", d.train), ("eval", d.eval), ("test", d.test)):
        if source:
            loaded[split], fingerprint = load_source(source, spec, cache, fetch, f"data.{split}")
            prints.append(f"{split}={fingerprint}")
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
    fingerprint = hashlib.sha256("\n".join(prints).encode()).hexdigest()
    return Splits(loaded.get("train"), loaded.get("eval"), loaded.get("test"), fingerprint, sources)


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
    """Label names in id order: the spec's, or every label seen (for NER: "O" first).

    Raises:
        ConfigError: a row without a label, labels that mix ids and names, or a label the
            spec does not list.
    """
    seen: dict[str, set[Any]] = {}
    for split, data in splits.present().items():
        values: set[Any] = set()
        for row, value in enumerate(data[column], 1):
            found = value if sequence else [value]
            if value is None or any(v is None for v in found):
                raise ConfigError(
                    f"{field}: row {row} of the {split} data ({splits.sources.get(split, split)})"
                    f" has no {column!r}; give every row one, or leave the row out"
                )
            values.update(found)
        seen[split] = values
    every = set().union(*seen.values())
    kinds = {"ids" if isinstance(v, int) and not isinstance(v, bool) else "names" for v in every}
    if len(kinds) > 1:
        shown = "; ".join(
            f"{split}: {', '.join(sorted(map(repr, values), key=len)[:3])}"
            for split, values in seen.items()
        )
        raise ConfigError(
            f"{field}: the labels mix ids and names ({shown}); use names (or ids and data.labels)"
            " in every split"
        )
    if given is not None:
        names = list(given)
        if kinds == {"ids"}:
            bad = sorted(v for v in every if not 0 <= v < len(names))
        else:
            bad = sorted(str(v) for v in every if str(v) not in names)
        if bad:
            raise ConfigError(f"data.labels: the data has labels {bad[:5]} that are not listed")
        return names
    if kinds == {"ids"}:
        raise ConfigError("data.labels: the data holds label ids; list the label names in order")
    names = sorted(str(v) for v in every)
    if sequence and "O" in names:
        names.remove("O")
        names.insert(0, "O")
    return names
