"""The store's interface: :class:`Store`, its errors, and where a run's files are in it
(:class:`RunLocation`). Implementations: :mod:`kubetune.store.file`, :mod:`kubetune.store.s3`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.atomic import replacing
from kubetune.errors import WorldError

#: Where runs go when neither --store, $KUBETUNE_STORE nor the spec names a store.
DEFAULT_STORE = "file://./runs"
MANIFEST = "MANIFEST.json"
CHECKPOINTS = "checkpoints"


class StoreError(WorldError):
    """The store could not be read or written."""


class NotFoundError(StoreError):
    """The key is not in the store (and nothing else went wrong)."""


class ForbiddenError(StoreError):
    """The store refused access to the key (S3 AccessDenied, a file without read permission):
    the credentials or permissions need changing, not the request repeating."""


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
        with replacing(local) as tmp:
            tmp.write_bytes(self.read_bytes(key))

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
        # A pruned checkpoint keeps its manifest alone (a tombstone): see store.checkpoints.
        return sorted(step for step, names in held.items() if MANIFEST in names and len(names) > 1)
