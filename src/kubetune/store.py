"""The artifact store: where a run's spec, record, checkpoints and final model live.

Layout (``<uri>/<sweep or name>/<run-id>/``)::

    spec.yaml  run.json  metrics.json  predictions.jsonl  confusion_matrix.json
    checkpoints/step-000200/…  + MANIFEST.json, written last
    final/                     save_pretrained output, loadable by transformers' pipeline()

A checkpoint counts only once its ``MANIFEST.json`` (every file with size and sha256) is in
the store: a crash mid-upload leaves a folder without a manifest, which readers skip.

``file://`` is implemented here; other schemes plug in through :func:`open_store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kubetune.errors import ConfigError, WorldError

#: Where runs go when neither --store, $KUBETUNE_STORE nor the spec names a store.
DEFAULT_STORE = "file://./runs"
MANIFEST = "MANIFEST.json"
CHECKPOINTS = "checkpoints"


class StoreError(WorldError):
    """The store could not be read or written."""


class Store:
    """A tree of objects addressed by ``/``-separated keys under one root URI."""

    uri: str

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (recursively), relative to the store root, sorted."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        raise NotImplementedError

    def upload_file(self, local: Path, key: str) -> None:
        self.write_bytes(key, local.read_bytes())

    def download_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        tmp.write_bytes(self.read_bytes(key))
        tmp.replace(local)

    # --- conveniences built on the primitives ---

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, data: Any) -> None:
        self.write_text(key, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    def upload_dir(self, local: Path, prefix: str) -> list[dict[str, Any]]:
        """Upload every file under ``local``; returns manifest entries (path, size, sha256)."""
        entries = []
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = path.relative_to(local).as_posix()
            self.upload_file(path, f"{prefix}/{rel}")
            entries.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
        return entries

    def download_dir(self, prefix: str, local: Path) -> None:
        for key in self.list_keys(prefix):
            self.download_file(key, local / key[len(prefix) + 1 :])

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


class FileStore(Store):
    """A store on a local (or mounted) filesystem: ``file:///abs/path`` or ``file://./rel``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = file_uri_path(uri)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in (path, *path.parents):
            raise StoreError(f"key {key!r} escapes the store root {self.root}")
        return path

    def local_path(self, key: str) -> Path:
        """Where ``key`` lives on disk."""
        return self._path(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.url(key)}: not found") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def upload_file(self, local: Path, key: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(local, tmp)
        tmp.replace(path)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        root = self.root.resolve()
        return sorted(
            p.relative_to(root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)


def file_uri_path(uri: str) -> Path:
    """``file:///abs`` → ``/abs``; ``file://./runs`` and ``file://runs`` → ``runs`` (relative)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ConfigError(f"{uri}: not a file:// URI")
    return (
        Path(unquote(parsed.netloc + parsed.path)) if parsed.netloc else Path(unquote(parsed.path))
    )


def open_store(uri: str) -> Store:
    """The store behind ``uri``."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return FileStore(uri)
    if scheme == "s3":
        from kubetune.s3store import S3Store

        store: Store = S3Store(uri)
        return store
    raise ConfigError(f"store {uri!r}: use file:///path or s3://bucket/prefix")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunLocation:
    """One run's folder in a store."""

    store: Store
    sweep: str
    run_id: str

    @property
    def prefix(self) -> str:
        return f"{self.sweep}/{self.run_id}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @property
    def url(self) -> str:
        return self.store.url(self.prefix)

    def put_checkpoint(self, local: Path, step: int) -> str:
        """Upload a checkpoint folder; the manifest goes last, so it marks completeness."""
        prefix = self.key(f"{CHECKPOINTS}/step-{step:06d}")
        self.store.delete_prefix(prefix)
        files = self.store.upload_dir(local, prefix)
        self.store.write_json(f"{prefix}/{MANIFEST}", {"step": step, "files": files})
        return prefix

    def checkpoints(self) -> list[int]:
        """Steps of complete checkpoints, oldest first."""
        steps = set()
        for key in self.store.list_keys(self.key(CHECKPOINTS)):
            parts = key.split("/")
            if parts[-1] == MANIFEST and parts[-2].startswith("step-"):
                steps.add(int(parts[-2].removeprefix("step-")))
        return sorted(steps)

    def fetch_checkpoint(self, step: int, local: Path) -> Path:
        """Download a checkpoint and verify every file against its manifest."""
        prefix = self.key(f"{CHECKPOINTS}/step-{step:06d}")
        manifest = self.store.read_json(f"{prefix}/{MANIFEST}")
        for entry in manifest["files"]:
            target = local / entry["path"]
            self.store.download_file(f"{prefix}/{entry['path']}", target)
            if sha256_file(target) != entry["sha256"]:
                raise StoreError(f"{self.store.url(prefix)}/{entry['path']}: checksum mismatch")
        return local

    def prune_checkpoints(self, keep: int, protect: set[int] | None = None) -> None:
        """Delete all but the newest ``keep`` complete checkpoints (and any ``protect``)."""
        steps = self.checkpoints()
        for step in steps[: max(0, len(steps) - keep)]:
            if step not in (protect or set()):
                self.store.delete_prefix(self.key(f"{CHECKPOINTS}/step-{step:06d}"))


def find_runs(uri: str) -> list[RunLocation]:
    """Every run folder at or under ``uri``: a store root, ``<store>/<sweep>`` or a run's own
    ``<store>/<sweep>/<run-id>``. A run folder is one holding ``spec.yaml`` (written when the
    run starts). Sorted by sweep, then run id.

    Raises:
        ConfigError: ``uri`` is not a store URI.
    """
    root = uri.rstrip("/")
    store = open_store(root)
    found: dict[tuple[str, str], RunLocation] = {}
    for key in store.list_keys(""):
        if key != "spec.yaml" and not key.endswith("/spec.yaml"):
            continue
        full = f"{root}/{key}"
        parts = full.split("/")
        if len(parts) < 6:  # scheme://host-or-empty/…/<sweep>/<run-id>/spec.yaml
            continue
        sweep, run_id = parts[-3], parts[-2]
        base = "/".join(parts[:-3])
        if (sweep, run_id) not in found:
            found[(sweep, run_id)] = RunLocation(
                store if base == root else open_store(base), sweep, run_id
            )
    return [found[k] for k in sorted(found)]

