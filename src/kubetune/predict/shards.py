"""A batch job's folder in the store, and the rule that makes its shards safe to redo.

::

    <store>/<name>/<batch id>/
      batch.json                       what produced the output (written by the first shard)
      shards/00003/predictions.jsonl   or .parquet (kind: predict)
      shards/00003/embeddings.npy      + docs.jsonl (kind: index)
      shards/00003/MANIFEST.json       written last: files, sizes, sha256, rows, rows/s
      index/…  + MANIFEST.json last    kind: index, once every shard is done

A shard is done exactly when its MANIFEST.json exists. A shard that dies before writing it
(preempted, OOM-killed, a failed node) left no manifest, so the Job's next pod for that index
writes its files again from the start; a shard with a manifest is skipped, so a pod that is
rerun after finishing (a node lost after the upload) does nothing twice. Readers read only
shards with a manifest and check every file against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubetune.errors import ConfigError
from kubetune.store import ConflictError, NotFoundError, Store

RECORD = "batch.json"
MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class Output:
    """The folder ``prefix`` (``<name>/<batch id>``) of a batch job in ``store``."""

    store: Store
    prefix: str

    @property
    def url(self) -> str:
        return self.store.url(self.prefix)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def shard_key(self, shard: int, name: str) -> str:
        return self.key(f"shards/{shard:05d}/{name}")

    def done(self, shard: int) -> bool:
        return self.store.exists(self.shard_key(shard, MANIFEST))

    def write_shard(
        self,
        shard: int,
        files: dict[str, bytes],
        summary: dict[str, Any],
        before_manifest: Callable[[], None] | None = None,
    ) -> None:
        """The shard's files, then its manifest: only now is the shard done."""
        entries = {}
        for name, data in files.items():
            self.store.write_bytes(self.shard_key(shard, name), data)
            entries[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if before_manifest is not None:
            before_manifest()
        manifest = {"shard": shard, **summary, "files": entries}
        self.store.write_json(self.shard_key(shard, MANIFEST), manifest)

    def manifest(self, shard: int) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.store.read_json(self.shard_key(shard, MANIFEST))
        except NotFoundError:
            return None
        return found

    def read_shard_file(self, shard: int, name: str) -> bytes:
        """A done shard's file, checked against its manifest.

        Raises:
            ConfigError: the shard is not done, or the file differs from its manifest.
        """
        manifest = self.manifest(shard)
        if manifest is None or name not in manifest["files"]:
            raise ConfigError(f"{self.url}: shard {shard} is not done; run the job again")
        data = self.store.read_bytes(self.shard_key(shard, name))
        if hashlib.sha256(data).hexdigest() != manifest["files"][name]["sha256"]:
            raise ConfigError(
                f"{self.store.url(self.shard_key(shard, name))} differs from its manifest; "
                f"delete {self.store.url(self.key(f'shards/{shard:05d}'))}/ and run again"
            )
        return data

    def pending(self, shards: int) -> list[int]:
        """Shards without a manifest, in order."""
        done = {
            int(key.split("/")[-2])
            for key in self.store.list_keys(self.key("shards"))
            if key.endswith("/" + MANIFEST)
        }
        return [s for s in range(shards) if s not in done]

    def record(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.store.read_json(self.key(RECORD))
        except NotFoundError:
            return None
        return found

    def claim(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write ``batch.json`` if no shard has yet, else check this shard reads the same
        model and corpus as the ones before it.

        Raises:
            ConfigError: the model or the corpus changed since the first shard ran.
        """
        stored = self.record()
        if stored is None:
            # Another shard may write it first: then compare with that one.
            with contextlib.suppress(ConflictError):
                self.store.write_json(self.key(RECORD), record, if_absent=True)
            stored = self.record() or record
        for field, what in (("model", "model"), ("corpus", "corpus")):
            before = stored[field].get("sha256") or stored[field].get("fingerprint")
            now = record[field].get("sha256") or record[field].get("fingerprint")
            if before != now:
                raise ConfigError(
                    f"{self.url}: the {what} changed since its first shard ran ({what} "
                    f"{before[:12]} then, {now[:12]} now); rename the job (name) to start "
                    "a new output, or restore the old one"
                )
        return stored

    def update_record(self, **fields: Any) -> None:
        record = self.record() or {}
        record.update(fields)
        self.store.write_json(self.key(RECORD), record)

    def write_tree(self, folder: str, files: dict[str, bytes]) -> None:
        """``files`` under ``folder``, then the folder's manifest last."""
        entries = {}
        for name, data in sorted(files.items()):
            self.store.write_bytes(self.key(f"{folder}/{name}"), data)
            entries[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.store.write_json(self.key(f"{folder}/{MANIFEST}"), {"files": entries})


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
