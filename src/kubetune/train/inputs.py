"""The run's ``s3://`` inputs, fetched into its work folder and checked byte for byte.

Inputs staged by ``kubetune submit`` live at content addresses (:mod:`kubetune.stage`):
``…/inputs/sha256/<hex>/<name>`` for a file, whose sha256 is ``<hex>``, and
``…/inputs/sha256/<hex>/`` for a folder, whose ``MANIFEST.json`` hashes to ``<hex>`` and lists
every file's size and sha256. Each is looked up first in the run's own store under the same
``inputs/sha256/…`` key, then where its URI points: a reproduction into another store (kind
with MinIO) works once the inputs are copied there, without rewriting the spec. Every byte is
checked against its address; a mismatch is one line naming the object.

A folder is fetched once per attempt: into ``<cache>/<hex>``, shared by model.name and
model.decoder when they are the same checkpoint. Other ``s3://`` objects and prefixes are read
as they are, with the spec's endpoint and region.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from kubetune import spec as specmod
from kubetune import stage
from kubetune.errors import ConfigError
from kubetune.store import MANIFEST, Store, endpoint_here, open_store, sha256_file


class Fetcher:
    """Fetches s3:// inputs into ``cache``; ``run_store`` is searched first for staged ones."""

    def __init__(
        self, run_store: Store | None, storage: specmod.StorageSpec | None, cache: Path
    ) -> None:
        self.run_store = run_store
        self.endpoint = endpoint_here(storage.endpoint if storage else None)
        self.region = storage.region if storage else None
        self.cache = cache
        self._stores: dict[str, Store] = {}

    def _open(self, root: str) -> Store:
        if root not in self._stores:
            self._stores[root] = open_store(root, endpoint=self.endpoint, region=self.region)
        return self._stores[root]

    def _where(self, field: str, uri: str, probe: str) -> tuple[Store, str]:
        """The store holding a staged input and its ``inputs/sha256/…`` key there."""
        root, digest, rest = stage.address(uri)  # type: ignore[misc]
        rel = f"{stage.PREFIX}/{digest}" + (f"/{rest}" if rest else "")
        candidates = [self.run_store] if self.run_store is not None else []
        candidates.append(self._open(root))
        for store in candidates:
            if store.exists(f"{rel}/{probe}" if probe else rel):
                return store, rel
        places = " or ".join(dict.fromkeys(s.uri for s in candidates))
        raise ConfigError(
            f"{field}: {uri} is not in {places}; stage it again (kubetune submit) or copy "
            "the run's inputs into this store"
        )

    # --- data ---------------------------------------------------------------------------

    def data_files(self, field: str, uri: str) -> list[Path]:
        """The data files an ``s3://`` source names, downloaded (staged ones verified)."""
        found = stage.address(uri)
        if found is not None:
            _root, digest, rest = found
            if rest:
                return [self._staged_file(field, uri, digest, rest)]
            folder = self.folder(field, uri)
            return [
                p
                for p in stage.folder_files(folder)
                if p.suffix in stage.DATA_SUFFIXES and p != folder / MANIFEST
            ]
        bucket, _, key = uri[5:].partition("/")
        store = self._open(f"s3://{bucket}")
        keys = store.list_keys(key) or ([key] if store.exists(key) else [])
        keys = [k for k in keys if Path(k).suffix in stage.DATA_SUFFIXES]
        local = self.cache / "s3" / bucket
        for k in keys:
            store.download_file(k, local / k)
        return [local / k for k in keys]

    def _staged_file(self, field: str, uri: str, digest: str, rest: str) -> Path:
        target = self.cache / digest / rest
        if target.is_file() and sha256_file(target) == digest:
            return target
        store, rel = self._where(field, uri, "")
        store.download_file(rel, target)
        got = sha256_file(target)
        if got != digest:
            target.unlink()
            raise _mismatch(field, store.url(rel), got, digest)
        return target

    # --- folders (models) ---------------------------------------------------------------

    def folder(self, field: str, uri: str) -> Path:
        """A model folder at ``uri``, downloaded; a staged one checked against its manifest."""
        found = stage.address(uri)
        if found is None or found[2]:
            return self._plain_folder(uri)
        digest = found[1]
        target = self.cache / digest
        if (target / MANIFEST).is_file():
            return target  # fetched and checked earlier in this attempt
        store, rel = self._where(field, uri, MANIFEST)
        raw = store.read_bytes(f"{rel}/{MANIFEST}")
        got = hashlib.sha256(raw).hexdigest()
        if got != digest:
            raise _mismatch(field, store.url(f"{rel}/{MANIFEST}"), got, digest)
        entries = json.loads(raw)["files"]
        # Another process of this pod may fetch the same folder: each downloads into its own
        # folder and renames it into place; the first rename wins.
        tmp = self.cache / f".{digest}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for name, entry in sorted(entries.items()):
            local = tmp / name
            store.download_file(f"{rel}/{name}", local)
            sha = sha256_file(local)
            if sha != entry["sha256"] or local.stat().st_size != entry["size"]:
                shutil.rmtree(tmp, ignore_errors=True)
                raise _mismatch(field, store.url(f"{rel}/{name}"), sha, entry["sha256"])
        (tmp / MANIFEST).write_bytes(raw)  # marks the folder complete
        try:
            tmp.rename(target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / MANIFEST).is_file():
                raise
        return target

    def _plain_folder(self, uri: str) -> Path:
        bucket, _, key = uri[5:].partition("/")
        store = self._open(f"s3://{bucket}")
        target = self.cache / "s3" / bucket / key
        prefix = key.rstrip("/")
        keys = store.list_keys(prefix)
        if not keys:
            raise ConfigError(f"model: {uri}: no objects under this prefix")
        for k in keys:
            store.download_file(k, target / (k[len(prefix) + 1 :] if prefix else k))
        return target


def _mismatch(field: str, url: str, got: str, want: str) -> ConfigError:
    return ConfigError(
        f"{field}: {url} has sha256 {got[:12]}…, not the {want[:12]}… it was staged with: the "
        "object was changed after staging; delete it and stage the input again"
    )


def recorded_inputs() -> dict[str, object]:
    """The staged inputs the pod was given (``KUBETUNE_INPUTS``), for run.json."""
    from kubetune.kube.names import INPUTS_ENV
    from kubetune.train.record import env_object

    return env_object(INPUTS_ENV)
