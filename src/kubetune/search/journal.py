"""An Optuna study kept in the run store, so a sweep's search resumes from the store alone.

Optuna's :class:`~optuna.storages.JournalStorage` rebuilds a study by replaying an
append-only log of operations. :class:`StoreJournal` keeps that log in the sweep's folder of
a kubetune store (``file://`` or ``s3://``) as numbered objects,
``<sweep>/search/journal/00000000.json``, ``…/00000001.json``, each holding one
``append_logs`` batch. An append writes the next number only if no object has it yet
(``O_EXCL`` on a folder, ``If-None-Match: *`` on S3): of two processes appending at once one
takes the number, and the other reads what it wrote and takes the next. That is the process
safety Optuna asks of a journal backend, with no database and no lock server, and a driver
that restarts, here or in a pod, finds the study where it was left.

The folder holds no ``spec.yaml``, so listings of runs (:func:`kubetune.store.find_runs`)
never take it for a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from kubetune.store import ConflictError, NotFoundError, Store

#: The journal's folder inside a sweep's folder.
JOURNAL = "search/journal"


class StoreJournal(BaseJournalBackend):
    """Optuna's journal as numbered objects under ``<sweep>/search/journal/`` of ``store``."""

    def __init__(self, store: Store, sweep: str) -> None:
        self.store = store
        self.folder = f"{sweep}/{JOURNAL}"
        self._batches: list[list[dict[str, Any]]] = []

    def key(self, number: int) -> str:
        return f"{self.folder}/{number:08d}.json"

    def _catch_up(self) -> None:
        """Read the batches other processes appended since the last read, in order."""
        while True:
            try:
                data = self.store.read_bytes(self.key(len(self._batches)))
            except NotFoundError:
                return
            self._batches.append(json.loads(data))

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        self._catch_up()
        logs = [log for batch in self._batches for log in batch]
        return logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        body = json.dumps(logs, separators=(",", ":")).encode("utf-8")
        while True:
            self._catch_up()
            try:
                self.store.write_bytes(self.key(len(self._batches)), body, if_absent=True)
            except ConflictError:
                continue  # another process took the number: read its batch, take the next
            self._batches.append(json.loads(body))
            return


def study_storage(store: Store, sweep: str) -> JournalStorage:
    """Optuna storage for the search of ``sweep``, kept in ``store``."""
    return JournalStorage(StoreJournal(store, sweep))
