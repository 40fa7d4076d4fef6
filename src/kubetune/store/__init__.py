"""The artifact store: where a run's spec, record, checkpoints and final model live.

Layout (``<uri>/<sweep or name>/<run-id>/``)::

    spec.yaml  run.json  metrics.json  predictions.jsonl  confusion_matrix.json
    checkpoints/step-000200/…  + MANIFEST.json, written last
    final/                     save_pretrained output, loadable by transformers' pipeline()

A checkpoint counts only once its ``MANIFEST.json`` (every file with size and sha256) is in
the store: a crash mid-upload leaves a folder without a manifest, which readers skip. How
checkpoints are written, verified and pruned is :mod:`kubetune.store.checkpoints`.

The package, one room per job:

- :mod:`~kubetune.store.base` — the :class:`Store` interface, its errors, :class:`RunLocation`;
- :mod:`~kubetune.store.file` — ``file://`` stores; :mod:`~kubetune.store.s3` — ``s3://``;
- :mod:`~kubetune.store.uri` — the one check of a store URI;
- :mod:`~kubetune.store.checkpoints` — writing, verifying, pruning and fetching checkpoints;
- :mod:`~kubetune.store.record` — the typed run record and the one reader of a run folder.

Here: :func:`open_store` (a URI → its store) and :func:`find_runs`.
"""

from __future__ import annotations

import os

from kubetune.kube import names
from kubetune.store.base import (
    CHECKPOINTS,
    DEFAULT_STORE,
    MANIFEST,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RunLocation,
    Store,
    StoreError,
    sha256_file,
)
from kubetune.store.file import FileStore, file_uri_path
from kubetune.store.uri import URI_FORMS, check_uri, uri_problem

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_STORE",
    "MANIFEST",
    "URI_FORMS",
    "ConflictError",
    "FileStore",
    "ForbiddenError",
    "NotFoundError",
    "RunLocation",
    "Store",
    "StoreError",
    "check_uri",
    "endpoint_here",
    "file_uri_path",
    "find_runs",
    "open_store",
    "sha256_file",
    "uri_problem",
]


def endpoint_here(configured: str | None) -> str | None:
    """The endpoint this process uses (:data:`kubetune.kube.names.STORE_ENDPOINT_ENV`: a
    laptop's port-forward, a store ``reproduce --endpoint`` moved), else ``configured``."""
    return os.environ.get(names.STORE_ENDPOINT_ENV) or configured


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    concurrency: int = 8,
    patient: bool = True,
) -> Store:
    """The store behind ``uri``; ``endpoint``, ``region`` and ``concurrency`` (parallel
    transfers) apply to S3."""
    if check_uri(uri, "store") == "file":
        return FileStore(uri)
    from kubetune.store.s3 import S3Store

    return S3Store(uri, endpoint=endpoint, region=region, concurrency=concurrency, patient=patient)


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
