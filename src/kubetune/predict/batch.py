"""``kubetune predict`` here: a stored run's model over a local corpus, rows out in order.

Each output row keeps the input's id column (or its row number) beside the prediction, and
``predict.json`` beside the rows records what produced them: the run, the sha256 of its
model files, the corpus's fingerprint, the settings and the measured rows per second.
Both are written atomically. Sharding across an Indexed Job and s3:// corpora are to come.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune import atomic, datafiles
from kubetune.errors import ConfigError
from kubetune.store import RunLocation
from kubetune.store.record import read_run

PREDICTIONS = "predictions.jsonl"
RECORD = "predict.json"


@dataclass(frozen=True)
class Summary:
    rows: int
    seconds: float
    out: Path

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def model_folder(location: RunLocation, cache: Path) -> tuple[Path, str]:
    """The run's ``final/`` as a local folder (fetched from an object store into ``cache``),
    and the sha256 over its files' names and bytes.

    Raises:
        ConfigError: the run has no final/ (not completed, or pruned).
    """
    keys = sorted(location.store.list_keys(location.key("final")))
    if not keys:
        status = read_run(location).status
        raise ConfigError(
            f"{location.url}: no final/ to predict with (the run is {status}); "
            "predict with a completed run"
        )
    folder = cache / location.run_id
    digest = hashlib.sha256()
    prefix = location.key("final") + "/"
    for key in keys:
        data = location.store.read_bytes(key)
        name = key.removeprefix(prefix)
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(target, data)
    return folder, digest.hexdigest()


def run(
    location: RunLocation,
    corpus: Path,
    out: Path,
    *,
    text_column: str = "text",
    id_column: str | None = "id",
    max_length: int | None = None,
    int8: bool = False,
) -> Summary:
    """Predict every row of ``corpus`` (a .jsonl/.csv/.parquet file or a folder of them)."""
    from kubetune.predict import engine

    files = datafiles.local_files(corpus, "corpus")
    read = datafiles.read_rows(files, "corpus")
    if not read:
        raise ConfigError(f"{corpus}: no rows to predict")
    bad = next((r for r in read if not isinstance(r.values.get(text_column), str)), None)
    if bad is not None:
        raise ConfigError(
            f"{bad.where}: no text in column {text_column!r}; name the column with "
            f"--text-column (its columns: {', '.join(bad.values)})"
        )
    rows = [r.values for r in read]
    with tempfile.TemporaryDirectory(prefix="kubetune-predict-") as cache:
        folder, model_hash = model_folder(location, Path(cache))
        loaded = engine.load(str(folder), max_length=max_length, int8=int8)
        texts = [str(row[text_column]) for row in rows]
        started = time.perf_counter()
        results = engine.predict(loaded, texts)
        seconds = time.perf_counter() - started
    use_ids = id_column is not None and all(id_column in row for row in rows)
    lines = []
    for number, (row, result) in enumerate(zip(rows, results, strict=True)):
        key: dict[str, Any] = {"row": number}
        if use_ids and id_column is not None:
            key = {id_column: row[id_column]}
        lines.append(json.dumps({**key, **result}, ensure_ascii=False))
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_atomic(out / PREDICTIONS, "\n".join(lines) + "\n")
    record = {
        "run": location.url,
        "model_sha256": model_hash,
        "task": loaded.task,
        "corpus": str(corpus),
        "corpus_fingerprint": datafiles.hash_files(files),
        "rows": len(rows),
        "text_column": text_column,
        "id_column": id_column if use_ids else None,
        "max_length": loaded.max_length,
        "int8": int8,
        "seconds": round(seconds, 3),
        "rows_per_second": round(len(rows) / seconds, 2) if seconds else None,
    }
    atomic.write_atomic(out / RECORD, json.dumps(record, indent=2) + "\n")
    return Summary(len(rows), seconds, out)
