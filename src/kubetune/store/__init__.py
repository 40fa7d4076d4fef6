"""The artifact store: where a run's spec, record, checkpoints and final model live.

Layout (``<uri>/<sweep or name>/<run-id>/``)::

    spec.yaml  run.json  metrics.json  predictions.jsonl  confusion_matrix.json
    checkpoints/step-000200/…  + MANIFEST.json, written last
    final/                     save_pretrained output, loadable by transformers' pipeline()

A checkpoint counts only once its ``MANIFEST.json`` (every file with size and sha256) is in
the store: a crash mid-upload leaves a folder without a manifest, which readers skip. How
checkpoints are written, verified and pruned is :mod:`kubetune.store.checkpoints`.

``file://`` is implemented here; other schemes plug in through :func:`open_store`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

from kubetune.errors import ConfigError
from kubetune.kube import names
from kubetune.store.base import (
    CHECKPOINTS,
    DEFAULT_STORE,
    MANIFEST,
    ConflictError,
    NotFoundError,
    RunLocation,
    Store,
    StoreError,
    sha256_file,
)
from kubetune.store.file import FileStore, file_uri_path

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_STORE",
    "ENDPOINT_ENV",
    "MANIFEST",
    "ConflictError",
    "FileStore",
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


#: The endpoint at which this process reaches S3-compatible stores, when that differs from
#: the spec's ``storage.endpoint`` (the address pods use): a MinIO in the cluster that a laptop
#: reaches through a port-forward, or a pod whose store ``kubetune reproduce --endpoint``
#: moved. The chart sets it from the rendered endpoint.
ENDPOINT_ENV = names.STORE_ENDPOINT_ENV


def endpoint_here(configured: str | None) -> str | None:
    """The endpoint this process uses: ``$KUBETUNE_STORE_ENDPOINT``, else ``configured``."""
    return os.environ.get(ENDPOINT_ENV) or configured


#: A bucket name as S3 allows it (3–63 lowercase letters, digits, dots and hyphens).
_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$")
#: What a store URI looks like, said the same way by every command that takes one.
URI_FORMS = "file://./runs, file:///abs/path or s3://bucket/prefix"


def uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as a store URI, or None. The one check of a store URI:
    the spec's ``storage.uri``, ``--store`` and every ``runs``/``report`` argument use it."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return None
    if scheme == "s3":
        if _S3_URI.match(uri.rstrip("/")):
            return None
        return f"{uri!r} does not name a valid bucket: s3://<bucket>[/prefix], lowercase"
    return f"use {URI_FORMS}"


def check_uri(uri: str, what: str = "") -> str:
    """``uri``'s scheme (``file`` or ``s3``).

    Raises:
        ConfigError: ``uri`` is not a store URI; the line starts with ``what`` (e.g.
            ``--store``) and the URI.
    """
    problem = uri_problem(uri)
    if problem is not None:
        raise ConfigError(f"{what} {uri}: {problem}".lstrip())
    return urlparse(uri).scheme


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
