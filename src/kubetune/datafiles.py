"""Local data files read without the ML stack: rows, label names and content fingerprints.

Both sides of a run read local data through this module: the trainer (``train/data.py``)
and the pre-flight checks ``kubetune run`` makes before paying for the trainer's start-up
(:mod:`kubetune.preflight`). So a mistake is worded the same wherever it is found, and a
finished run's data fingerprint can be recomputed on the laptop, byte for byte as the
trainer computed it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.errors import ConfigError

#: Local data file suffixes → the reader (and ``datasets`` builder) for them.
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def local_files(path: Path, field: str) -> list[Path]:
    """The data files of a local source (the spec's ``field``): the file itself, or a
    folder's files in order."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in FORMATS and p.is_file())
        if not files:
            raise ConfigError(f"{field}: {path}: no .jsonl, .csv or .parquet files in this folder")
        return files
    if path.suffix not in FORMATS:
        raise ConfigError(f"{field}: {path}: use a .jsonl, .csv or .parquet file")
    return [path]


def file_kind(files: list[Path], field: str) -> str:
    """``json``, ``csv`` or ``parquet``: one kind per source."""
    kinds = {FORMATS[f.suffix] for f in files}
    if len(kinds) > 1:
        raise ConfigError(
            f"{field}: {files[0].parent} mixes file formats ({', '.join(sorted(kinds))}); "
            "keep one kind per folder"
        )
    return kinds.pop()


@dataclass(frozen=True)
class Row:
    """One example and where it came from (``file:line`` for JSON lines and CSV)."""

    values: dict[str, Any]
    where: str


def json_rows(files: list[Path]) -> Iterator[Row]:
    """The rows of JSON-lines files. Read as bytes, so a decoding error names its line."""
    for file in files:
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ConfigError(
                        f"{file}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                        f"column {exc.start + 1}); save the file as UTF-8"
                    ) from exc
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{file}:{number}: not JSON ({exc.msg})") from exc
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"{file}:{number}: a {type(value).__name__}, not an object; write one "
                        'JSON object per line ({"text": …, "label": …})'
                    )
                yield Row(value, f"{file}:{number}")


def table_rows(files: list[Path], kind: str) -> Iterator[Row]:
    """The rows of CSV or Parquet files, typed as pyarrow infers them (as ``datasets`` does)."""
    import pyarrow as pa

    for file in files:
        try:
            if kind == "csv":
                from pyarrow import csv

                table = csv.read_csv(file)
            else:
                from pyarrow import parquet

                table = parquet.read_table(file)
        except (pa.ArrowInvalid, OSError) as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"{file}: not a readable {kind} file ({detail})") from exc
        first = 2 if kind == "csv" else 1  # a CSV's line 1 is its header
        for index, values in enumerate(table.to_pylist()):
            where = f"{file}:{index + first}" if kind == "csv" else f"{file} row {index + 1}"
            yield Row(values, where)


def read_rows(files: list[Path], field: str) -> list[Row]:
    """Every row of a local source's files."""
    kind = file_kind(files, field)
    return list(json_rows(files) if kind == "json" else table_rows(files, kind))


def hash_files(files: list[Path]) -> str:
    """The fingerprint of one source: its files' names and bytes, in order."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def combined_fingerprint(prints: Mapping[str, str]) -> str:
    """The run's data fingerprint from each split's (``train``, ``eval``, ``test`` order)."""
    lines = [f"{split}={prints[split]}" for split in ("train", "eval", "test") if split in prints]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def label_names(
    values: Mapping[str, Iterable[tuple[str, Any]]],
    column: str,
    given: list[str] | None,
    *,
    sequence: bool,
    field: str,
) -> list[str]:
    """Label names in id order: the spec's, or every label seen (for NER: "O" first).

    ``values`` maps each split to ``(where, value)`` pairs: ``where`` names the row in
    messages ("row 12 of the train data (x.jsonl)" or "x.jsonl:12").

    Raises:
        ConfigError: a row without a label, labels that mix ids and names, or a label the
            spec does not list.
    """
    seen: dict[str, set[Any]] = {}
    for split, pairs in values.items():
        found: set[Any] = set()
        for where, value in pairs:
            items = value if sequence and isinstance(value, list) else [value]
            if value is None or any(v is None for v in items):
                raise ConfigError(
                    f"{field}: {where} has no {column!r}; give every row one, or leave the row out"
                )
            if sequence and not isinstance(value, list):
                fix = (
                    "of tags; give one tag per word"
                    if field == "data.tags_column"
                    else "of labels; give each row a list of its labels ([] for none)"
                )
                raise ConfigError(
                    f"{field}: {where} holds {type(value).__name__} in {column!r}, not a list {fix}"
                )
            odd = next((v for v in items if isinstance(v, (list, dict, float, bool))), None)
            if isinstance(odd, list) and not sequence:
                raise ConfigError(
                    f"{field}: {where} has a list of labels in {column!r}; for several labels "
                    "per text set data.multi_label: true"
                )
            if odd is not None:
                raise ConfigError(
                    f"{field}: {where} has the label {odd!r}; a label is a name or an id"
                )
            found.update(items)
        seen[split] = found
    every = set().union(*seen.values()) if seen else set()
    kinds = {"ids" if _is_id(v) else "names" for v in every}
    if len(kinds) > 1:
        shown = "; ".join(
            f"{split}: {', '.join(sorted(map(repr, found), key=len)[:3])}"
            for split, found in seen.items()
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
