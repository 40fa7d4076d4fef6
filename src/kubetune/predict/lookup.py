"""Answering queries from a stored index: ``kubetune search`` and ``kubetune serve``.

An index lives in the store under ``<store>/<name>/<batch id>/index/`` (written by a
``kind: index`` batch job, :mod:`kubetune.predict.batch`). It is fetched once into a local
cache, keyed by the sha256 of its MANIFEST.json, so a second search reads nothing from the
store but that manifest; the encoder its ``index.json`` names (a stored run's final/, or a
sentence encoder folder) is fetched the same way. A query is then one encoder forward pass
and one FAISS search.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from kubetune import atomic
from kubetune.errors import ConfigError
from kubetune.store import NotFoundError, StoreError, open_store

MODES = ("dense", "bm25", "hybrid")


def cache_root() -> Path:
    """``$KUBETUNE_CACHE``, else ``$XDG_CACHE_HOME/kubetune``, else ``~/.cache/kubetune``."""
    if os.environ.get("KUBETUNE_CACHE"):
        return Path(os.environ["KUBETUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubetune"


def fetch_index(uri: str) -> Path:
    """A stored index as a local folder: ``uri`` is a batch job's folder, its ``index/``,
    or a local index folder.

    Raises:
        ConfigError: no index there (or not finished: no manifest yet).
    """
    uri = uri.rstrip("/")
    local = Path(uri.removeprefix("file://"))
    if "://" not in uri or uri.startswith("file://"):
        for folder in (local / "index", local):
            if (folder / "index.faiss").is_file():
                return folder
        raise ConfigError(
            f"{uri}: no index here; pass an index job's folder (kubetune run prints it)"
        )
    prefix = uri if uri.endswith("/index") else f"{uri}/index"
    try:
        store = open_store(prefix)
        manifest = store.read_bytes("MANIFEST.json")
    except NotFoundError as exc:
        raise ConfigError(
            f"{uri}: no finished index here (no index/MANIFEST.json); pass an index job's "
            "folder, and wait for its last shard"
        ) from exc
    except StoreError as exc:
        raise ConfigError(f"{uri}: {exc}") from exc
    folder = cache_root() / "indexes" / hashlib.sha256(manifest).hexdigest()[:16]
    if not (folder / ".complete").exists():
        import json

        for name in json.loads(manifest)["files"]:
            store.download_file(name, folder / name)
        atomic.write_atomic(folder / ".complete", b"")
    return folder


def fetch_encoder(meta: dict[str, Any]) -> Path:
    """The encoder an index was built with, as a local folder (cached)."""
    source = str(meta.get("encoder", {}).get("source") or "")
    if not source:
        raise ConfigError("index.json names no encoder; rebuild the index with kubetune")
    if source.startswith("pkg:"):
        from kubetune.preflight import package_folder

        return package_folder(source, "model")
    if "://" not in source:
        return Path(source)
    digest = str(meta["encoder"].get("sha256") or hashlib.sha256(source.encode()).hexdigest())
    folder = cache_root() / "encoders" / digest[:16]
    if (folder / ".complete").exists():
        return folder
    store = open_store(source.rstrip("/"))
    prefix = "final/" if store.exists("final/config.json") else ""
    for key in store.list_keys(prefix.rstrip("/")):
        if key.endswith("MANIFEST.json"):
            continue
        store.download_file(key, folder / key.removeprefix(prefix))
    atomic.write_atomic(folder / ".complete", b"")
    return folder


class Searcher:
    """An index, and its encoder loaded on the first dense or hybrid query: BM25 alone needs
    neither torch nor sentence-transformers, whose imports are most of a cold start."""

    def __init__(self, index: Any, encoder: Any = None) -> None:
        self.index = index  # kubetune.retrieval.index.Index
        self._encoder = encoder  # kubetune.predict.encode.Encoder

    @classmethod
    def load(cls, uri: str) -> Searcher:
        from kubetune.retrieval.index import Index

        return cls(Index.load(fetch_index(uri)))

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from kubetune.predict import encode

            self._encoder = encode.load(str(fetch_encoder(self.index.meta)))
        return self._encoder

    def search(self, query: str, k: int = 10, mode: str = "dense") -> tuple[list[Any], float]:
        """The top ``k`` (id, score) of ``query`` and the seconds it took (the encoder's
        forward pass and the index's search, not loading them)."""
        if mode not in MODES:
            raise ConfigError(f"--mode: must be one of {', '.join(MODES)} (got {mode!r})")
        encoder = self.encoder if mode != "bm25" else None
        started = time.perf_counter()
        if encoder is None:
            hits = self.index.search_bm25([query], k)[0]
        else:
            vectors = encoder.encode([query])
            hits = (
                self.index.search(vectors, k)[0]
                if mode == "dense"
                else self.index.search_hybrid(vectors, [query], k)[0]
            )
        return list(hits), time.perf_counter() - started


def served_target(uri: str) -> dict[str, Any]:
    """What ``kubetune serve URI`` serves, as :func:`kubetune.serve.app.serve`'s arguments: a
    stored run's model (an encoder for an embedding run), or an index with its encoder."""
    import json

    from kubetune.predict import batch as batchmod

    uri = uri.rstrip("/")
    location = batchmod.run_at(uri) if "://" in uri else None
    if location is not None:
        cache = cache_root() / "runs" / hashlib.sha256(uri.encode()).hexdigest()[:16]
        model = batchmod.run_model(location, cache)
        about = {"source": uri, "model_sha256": model.sha256}
        if model.task == "embedding":
            return {"encoder": model.folder, **about}
        return {"model": model.folder, **about}
    local = Path(uri.removeprefix("file://"))
    if "://" not in uri and (local / "config.json").is_file():
        return {"model": local}
    folder = fetch_index(uri)
    meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    return {"index": folder, "encoder": fetch_encoder(meta), "source": uri}
