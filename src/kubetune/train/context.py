"""What every step of a run reads: :class:`RunContext`.

The runner builds one context when a run starts (its identity, its place in the store, its
data and model folder) and hands it to each step, instead of the same six objects to every
helper.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.spec import JobSpec, StorageSpec
from kubetune.store import RunLocation
from kubetune.sweep import ResolvedRun
from kubetune.train.data import Splits
from kubetune.train.record import RecordWriter


@dataclass(frozen=True)
class RunContext:
    """One attempt at one run, as its steps see it."""

    #: The resolved spec of this run, as stored in spec.yaml.
    spec: JobSpec
    #: The same spec with an ``s3://`` model.decoder replaced by its fetched, checked copy:
    #: what the task families read (``model.name`` is :attr:`model_path`).
    local_spec: JobSpec
    #: The run's identity: run id, sweep parameters, spec hash.
    resolved: ResolvedRun
    #: Where its outputs go: ``<store>/<sweep>/<run-id>/``.
    location: RunLocation
    #: The store's settings (endpoint, region, upload concurrency).
    storage: StorageSpec
    #: run.json, written by the main process only.
    record: RecordWriter
    #: accelerate's PartialState: this process's rank, the barrier between processes.
    state: Any
    #: Scratch space of this attempt (inputs, data, checkpoints, final/ before upload).
    work: Path
    #: The data splits, loaded and fingerprinted.
    splits: Splits
    #: The local folder (or hub name) of ``model.name``.
    model_path: str

    @property
    def main(self) -> bool:
        """Whether this process writes to the store (rank 0 alone)."""
        return self.record.main

    @contextmanager
    def transfers(self) -> Iterator[ThreadPoolExecutor]:
        """Threads for parallel transfers of whole folders (final/, a checkpoint to resume)."""
        pool = ThreadPoolExecutor(
            self.storage.upload_concurrency, thread_name_prefix="kubetune-transfer"
        )
        try:
            yield pool
        finally:
            pool.shutdown()
