"""The artifact store: where a run's spec, record, checkpoints and final model live.

Layout (``<uri>/<sweep or name>/<run-id>/``)::

    spec.yaml  run.json  metrics.json  predictions.jsonl  confusion_matrix.json
    checkpoints/step-000200/…  + MANIFEST.json, written last
    final/                     save_pretrained output, loadable by transformers' pipeline()

A checkpoint counts only once its ``MANIFEST.json`` (every file with size and sha256) is in
the store: a crash mid-upload leaves a folder without a manifest, which readers skip. How
checkpoints are written, verified and pruned is :mod:`kubetune.checkpoints`.

``file://`` is implemented here; other schemes plug in through :func:`open_store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
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


class NotFoundError(StoreError):
    """The key is not in the store (and nothing else went wrong)."""


class ConflictError(StoreError):
    """A conditional write lost: the key was written by someone else first."""


class Store:
    """A tree of objects addressed by ``/``-separated keys under one root URI."""

    uri: str

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write ``key``. With ``if_absent`` the write happens only if no object has the key
        (S3's ``If-None-Match: *``); otherwise :class:`ConflictError` is raised."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """Keys under ``prefix`` (recursively, relative to the store root) and their sizes."""
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (recursively), relative to the store root, sorted."""
        return sorted(self.list_sizes(prefix))

    def delete_prefix(self, prefix: str) -> None:
        raise NotImplementedError

    def delete_keys(self, keys: list[str]) -> None:
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

    def write_json(self, key: str, data: Any, *, if_absent: bool = False) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        self.write_bytes(key, text.encode("utf-8"), if_absent=if_absent)

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
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.url(key)}: not found") from exc
        except OSError as exc:
            raise StoreError(f"{self.url(key)}: read failed: {exc.strerror or exc}") from exc

    def _staged(self, key: str) -> tuple[Path, Path]:
        """The final path of ``key`` and a temporary name beside it, unique to this thread."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")

    def _commit(self, tmp: Path, path: Path, if_absent: bool) -> None:
        # rename replaces atomically; link refuses an existing name, atomically too.
        if not if_absent:
            tmp.replace(path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise ConflictError(f"{self.url(self._rel(path))}: already written") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root.resolve()).as_posix()

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path, tmp = self._staged(key)
        tmp.write_bytes(data)
        self._commit(tmp, path, if_absent)

    def upload_file(self, local: Path, key: str) -> None:
        path, tmp = self._staged(key)
        shutil.copyfile(local, tmp)
        self._commit(tmp, path, False)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list_sizes(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix)
        if not base.is_dir():
            return {}
        root = self.root.resolve()
        sizes = {}
        for p in base.rglob("*"):
            if p.name.endswith(".tmp"):
                continue
            try:
                if p.is_file():
                    sizes[p.relative_to(root).as_posix()] = p.stat().st_size
            except FileNotFoundError:  # deleted while listing
                continue
        return sizes

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def delete_keys(self, keys: list[str]) -> None:
        root = self.root.resolve()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            # Folders are not objects: an emptied one goes too, as it does on S3.
            for parent in path.parents:
                if parent == root or not parent.is_relative_to(root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break


def file_uri_path(uri: str) -> Path:
    """``file:///abs`` → ``/abs``; ``file://./runs`` and ``file://runs`` → ``runs`` (relative)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ConfigError(f"{uri}: not a file:// URI")
    return (
        Path(unquote(parsed.netloc + parsed.path)) if parsed.netloc else Path(unquote(parsed.path))
    )


#: The endpoint at which this process reaches S3-compatible stores, when that differs from
#: the spec's ``storage.endpoint`` (the address pods use): a MinIO in the cluster that a laptop
#: reaches through a port-forward, or a pod whose store ``kubetune reproduce --endpoint``
#: moved. The chart sets it from the rendered endpoint.
ENDPOINT_ENV = "KUBETUNE_STORE_ENDPOINT"


def endpoint_here(configured: str | None) -> str | None:
    """The endpoint this process uses: ``$KUBETUNE_STORE_ENDPOINT``, else ``configured``."""
    return os.environ.get(ENDPOINT_ENV) or configured


def open_store(
    uri: str, *, endpoint: str | None = None, region: str | None = None, concurrency: int = 8
) -> Store:
    """The store behind ``uri``; ``endpoint``, ``region`` and ``concurrency`` (parallel
    transfers) apply to S3."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return FileStore(uri)
    if scheme == "s3":
        from kubetune.s3store import S3Store

        store: Store = S3Store(uri, endpoint=endpoint, region=region, concurrency=concurrency)
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

    def checkpoint_prefix(self, step: int) -> str:
        return self.key(f"{CHECKPOINTS}/step-{step:06d}")

    def checkpoints(self) -> list[int]:
        """Steps of checkpoints with a manifest and data, oldest first. Their files are
        verified against the manifest only when one is fetched."""
        held: dict[int, set[str]] = {}
        for key in self.store.list_keys(self.key(CHECKPOINTS)):
            parts = key.split("/")
            step_dir = parts[len(self.key(CHECKPOINTS).split("/"))]
            if step_dir.startswith("step-") and step_dir[5:].isdigit():
                held.setdefault(int(step_dir[5:]), set()).add(parts[-1])
        # A pruned checkpoint keeps its manifest alone (a tombstone): see kubetune.checkpoints.
        return sorted(step for step, names in held.items() if MANIFEST in names and len(names) > 1)


def find_runs(uri: str) -> list[RunLocation]:
    """Every run folder at or under ``uri``: a store root, ``<store>/<sweep>`` or a run's own
    ``<store>/<sweep>/<run-id>``. A run folder is one holding ``spec.yaml`` (written when the
    run starts). Sorted by sweep, then run id.

    Raises:
        ConfigError: ``uri`` is not a store URI.
    """
    root = uri.rstrip("/")
    store = open_store(root)
    folders = sorted(
        f"{root}/{key}".rsplit("/", 1)[0]
        for key in store.list_keys("")
        if key == "spec.yaml" or key.endswith("/spec.yaml")
    )
    found: list[RunLocation] = []
    taken: list[str] = []
    for folder in folders:
        # scheme://host-or-empty/…/<sweep>/<run-id>; a spec.yaml inside a run (final/…) is not
        # another run.
        parts = folder.split("/")
        if len(parts) < 5 or any(folder.startswith(t + "/") for t in taken):
            continue
        taken.append(folder)
        base = "/".join(parts[:-2])
        found.append(RunLocation(store if base == root else open_store(base), parts[-2], parts[-1]))
    return sorted(found, key=lambda r: (r.sweep, r.run_id))
