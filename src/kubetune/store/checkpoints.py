"""Crash-safe checkpoints in the store.

A checkpoint is ``<run>/checkpoints/step-000200/``: the files the Trainer saved, and a
``MANIFEST.json`` (step, every file with size and sha256, the writer's id) written **last**.
What can go wrong, and what happens:

- **The trainer dies mid-upload.** The folder has files but no manifest; readers skip it,
  and the step is written again after the restart.
- **A stored byte goes bad.** Resuming downloads the newest checkpoint and checks every file
  against its manifest (sizes from the listing first, then sha256); one that does not match
  is deleted, so its step can be written again, and the one before it is tried.
- **The store blinks.** boto3 retries each request; on top of that each file is retried with
  backoff for up to ``Retry.seconds``. Meanwhile training goes on until its next save (see
  below).
- **Two trainers of one run.** The manifest is written with ``If-None-Match: *``: of two
  writers of a step exactly one succeeds, and the other stops with :class:`WriterConflictError`.
  Pruned checkpoints keep their manifest as a tombstone (``"pruned": true``), so a late
  writer cannot take an old step back either.

**What a kill can lose.** Checkpoints upload in a background thread, one after another, while
training goes on. When the trainer reaches a save while the checkpoint before is still not
stored, it waits for it before it trains on (:meth:`Uploader.submit`). So a SIGKILL at any
moment loses at most the work since the last checkpoint but one: killed at step 22 with a
save every 5 steps, checkpoint 15 is complete in the store, and 20 may be. This follows from
the order of the code, not from how fast the store or the CPU is; a slow store or a busy CPU
shows as training that waits at its saves. The upload threads run at the trainer's own CPU
priority: an unprivileged process cannot raise a thread's priority again once lowered
(SCHED_IDLE or a nice value), and a lowered upload that training has to wait for starves
behind any other busy process on the machine.

Retention keeps the newest ``keep`` complete checkpoints (and the best one, when asked).
**A completed run** is never resumed, so by default its checkpoints lose what only resuming
reads (:func:`trim_resume_state`: the optimizer state, most of a checkpoint's bytes with
Adam, and the scheduler, scaler and RNG files); weights and trainer_state.json stay. The
manifest is rewritten first, atomically, naming what remains and marked ``"trimmed"``; then
the files go, as with a pruned checkpoint's tombstone: a reader never finds a file the
manifest names missing, and a resume never picks a trimmed checkpoint.
This module imports no ML framework: the trainer drives it from a Trainer callback.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubetune.errors import WorldError
from kubetune.faults import failpoint
from kubetune.store.base import MANIFEST, ConflictError, RunLocation, Store, StoreError, sha256_file

T = TypeVar("T")


class CheckpointError(WorldError):
    """A checkpoint could not be stored."""


class WriterConflictError(CheckpointError):
    """Another trainer of the same run stored a checkpoint first."""


class InvalidCheckpointError(Exception):
    """A stored checkpoint does not match its manifest (the reason is the message)."""


def writer_id() -> str:
    """Who writes: the host (the pod's name in a cluster), the process and a random tag."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Retry:
    """How long a failing transfer is retried, on top of boto3's own retries."""

    seconds: float = 300.0
    first_wait: float = 0.5
    max_wait: float = 15.0


def with_retry(what: str, call: Callable[[], T], retry: Retry) -> T:
    """``call()``, retried with exponential backoff on StoreError until ``retry.seconds``.

    A :class:`ConflictError` is an answer, not a failure: it is raised at once.
    """
    deadline = time.monotonic() + retry.seconds
    wait = retry.first_wait
    while True:
        try:
            return call()
        except ConflictError:
            raise
        except StoreError as exc:
            if time.monotonic() + wait > deadline:
                raise CheckpointError(
                    f"{what}: still failing after {retry.seconds:.0f} s: {exc}"
                ) from exc
            # One write: this runs in upload threads, beside the trainer's own output.
            sys.stderr.write(f"kubetune: {what}: {exc}; retrying in {wait:.1f} s\n")
            sys.stderr.flush()
            time.sleep(wait)
            wait = min(2 * wait, retry.max_wait)


def local_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def upload_tree(
    store: Store,
    folder: Path,
    prefix: str,
    pool: ThreadPoolExecutor,
    retry: Retry = Retry(),
    after_each: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Upload every file under ``folder`` in parallel; manifest entries in path order.

    Each worker hashes its file and uploads it, so hashing one file overlaps the upload of
    the others; large files go up in parallel multipart parts (see :mod:`kubetune.store.s3`).
    """

    def one(path: Path) -> dict[str, Any]:
        rel = path.relative_to(folder).as_posix()
        entry = {"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)}
        key = f"{prefix}/{rel}"
        with_retry(f"upload {store.url(key)}", lambda: store.upload_file(path, key), retry)
        if after_each is not None:
            after_each()
        return entry

    return list(pool.map(one, local_files(folder)))


def manifest_key(location: RunLocation, step: int) -> str:
    return f"{location.checkpoint_prefix(step)}/{MANIFEST}"


def write_manifest(
    location: RunLocation,
    step: int,
    files: list[dict[str, Any]],
    writer: str,
    retry: Retry = Retry(),
) -> None:
    """Write the manifest if no one has: the step's checkpoint is then complete.

    Raises:
        WriterConflictError: another writer's manifest is there.
    """
    key = manifest_key(location, step)
    manifest = {"step": step, "files": files, "writer": writer, "created": _now()}
    store = location.store
    try:
        with_retry(
            f"write {store.url(key)}",
            lambda: store.write_json(key, manifest, if_absent=True),
            retry,
        )
    except ConflictError as exc:
        existing = _read_manifest(store, key)
        if existing.get("writer") == writer and existing.get("files") == files:
            return  # our own write, answered 412 on a retry after a lost response
        raise WriterConflictError(
            f"checkpoint step-{step:06d} of {location.url} was stored first by another trainer "
            f"({existing.get('writer', 'unknown')}); two trainers of one run cannot both "
            f"write it, so this one ({writer}) stops"
        ) from exc


def _read_manifest(store: Store, key: str) -> dict[str, Any]:
    try:
        data = store.read_json(key)
    except (StoreError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def prune(location: RunLocation, keep: int, protect: Iterable[int], writer: str) -> list[int]:
    """Keep the newest ``keep`` complete checkpoints (and ``protect``); returns pruned steps.

    The manifest of a pruned checkpoint is replaced by a tombstone before its data goes, so
    readers never take it for complete and no late writer can claim its step again.
    """
    keep_steps = set(protect)
    steps = location.checkpoints()
    pruned = []
    for step in steps[: max(0, len(steps) - keep)]:
        if step in keep_steps:
            continue
        prefix = location.checkpoint_prefix(step)
        location.store.write_json(
            f"{prefix}/{MANIFEST}", {"step": step, "pruned": True, "writer": writer}
        )
        data = [k for k in location.store.list_keys(prefix) if not k.endswith(f"/{MANIFEST}")]
        location.store.delete_keys(data)
        pruned.append(step)
    return pruned


def drop_tombstones(location: RunLocation) -> None:
    """Remove the manifests of pruned checkpoints (once the run is complete), and whatever a
    late trainer uploaded beside one before its manifest write was refused."""
    held: dict[str, list[str]] = {}
    for key in location.store.list_keys(location.key("checkpoints")):
        held.setdefault(key.rsplit("/", 1)[0], []).append(key)
    for folder, keys in held.items():
        manifest = f"{folder}/{MANIFEST}"
        if manifest not in keys:
            continue
        if len(keys) == 1 or _read_manifest(location.store, manifest).get("pruned"):
            location.store.delete_keys(keys)


#: Files of a Trainer checkpoint that only resuming reads: the optimizer's state (twice the
#: weights with Adam), the learning-rate scheduler's, the gradient scaler's, the RNG states.
RESUME_ONLY = re.compile(r"optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth")
#: The manifest key of a checkpoint whose resume-only files were removed.
TRIMMED = "trimmed"
#: The run.json key that records what :func:`trim_resume_state` freed.
STATE_REMOVED = "optimizer_state_removed"


@dataclass(frozen=True)
class Trimmed:
    """What :func:`trim_resume_state` removed: the checkpoints it trimmed, and their bytes."""

    steps: list[int]
    bytes: int

    def record(self) -> dict[str, Any]:
        """The run.json entry (:data:`STATE_REMOVED`)."""
        return {"steps": self.steps, "bytes": self.bytes}


def trim_resume_state(location: RunLocation) -> Trimmed:
    """Remove the resume-only files (:data:`RESUME_ONLY`) from every complete checkpoint.

    Only for a completed run: a trimmed checkpoint cannot be resumed from. Safe to repeat
    after a crash: the manifest is rewritten first, and a second call removes what the
    first left behind.
    """
    steps, freed = [], 0
    for step in location.checkpoints():
        removed = _trim(location, step)
        if removed is not None:
            steps.append(step)
            freed += removed
    return Trimmed(steps, freed)


def _trim(location: RunLocation, step: int) -> int | None:
    """Trim one checkpoint; the bytes its manifest no longer names, None if it was already."""
    store = location.store
    key = manifest_key(location, step)
    manifest = _read_manifest(store, key)
    files = manifest.get("files")
    if manifest.get("pruned") or not isinstance(files, list):
        return None
    kept = [f for f in files if not RESUME_ONLY.fullmatch(f["path"])]
    dropped = [f for f in files if RESUME_ONLY.fullmatch(f["path"])]
    freed = sum(f["size"] for f in dropped)
    if dropped:
        record = {"files": [f["path"] for f in dropped], "bytes": freed, "at": _now()}
        store.write_json(key, {**manifest, "files": kept, TRIMMED: record})
    prefix = location.checkpoint_prefix(step)
    named = {f"{prefix}/{f['path']}" for f in kept}
    left = [
        k
        for k in store.list_keys(prefix)
        if k not in named and RESUME_ONLY.fullmatch(k.removeprefix(f"{prefix}/"))
    ]
    store.delete_keys(left)
    return freed if dropped else None


def fetch(
    location: RunLocation, step: int, target: Path, pool: ThreadPoolExecutor, retry: Retry = Retry()
) -> None:
    """Download checkpoint ``step`` into ``target`` and verify it against its manifest.

    Raises:
        InvalidCheckpointError: the stored checkpoint does not match its manifest.
        CheckpointError: the store kept failing.
    """
    store = location.store
    prefix = location.checkpoint_prefix(step)
    try:
        manifest = store.read_json(f"{prefix}/{MANIFEST}")
    except ValueError as exc:
        raise InvalidCheckpointError(f"its manifest is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("pruned"):
        raise InvalidCheckpointError("its manifest is a tombstone of a pruned checkpoint")
    files = manifest.get("files")
    if manifest.get("step") != step or not isinstance(files, list) or not files:
        raise InvalidCheckpointError("its manifest names another step or no files")
    sizes = store.list_sizes(prefix)
    for entry in files:
        size = sizes.get(f"{prefix}/{entry['path']}")
        if size is None:
            raise InvalidCheckpointError(f"{entry['path']} is missing")
        if size != entry["size"]:
            raise InvalidCheckpointError(
                f"{entry['path']} has {size} bytes, the manifest {entry['size']}"
            )

    def one(entry: dict[str, Any]) -> str | None:
        local = target / entry["path"]
        key = f"{prefix}/{entry['path']}"
        with_retry(f"download {store.url(key)}", lambda: store.download_file(key, local), retry)
        return None if sha256_file(local) == entry["sha256"] else entry["path"]

    bad = [path for path in pool.map(one, files) if path is not None]
    if bad:
        raise InvalidCheckpointError(f"sha256 of {', '.join(bad)} differs from the manifest")


def latest_valid(
    location: RunLocation,
    local_root: Path,
    pool: ThreadPoolExecutor,
    on_reject: Callable[[int, str], None],
    retry: Retry = Retry(),
) -> tuple[Path, int] | None:
    """The newest checkpoint that matches its manifest, downloaded under ``local_root``.

    Each checkpoint that does not match is reported to ``on_reject`` and deleted from the
    store (its step is trained and written again). A trimmed one (:func:`trim_resume_state`)
    is reported and kept: its weights are sound, but there is no optimizer state to resume.
    """
    for step in reversed(location.checkpoints()):
        if _read_manifest(location.store, manifest_key(location, step)).get(TRIMMED):
            on_reject(step, "its optimizer state was removed when the run completed")
            continue
        target = local_root / f"checkpoint-{step}"
        shutil.rmtree(target, ignore_errors=True)
        try:
            fetch(location, step, target, pool, retry)
        except InvalidCheckpointError as exc:
            on_reject(step, str(exc))
            shutil.rmtree(target, ignore_errors=True)
            location.store.delete_prefix(location.checkpoint_prefix(step))
            continue
        return target, step
    return None


def snapshot(folder: Path, target: Path) -> None:
    """Hard-link ``folder``'s files under ``target`` (a copy across filesystems).

    The Trainer deletes old checkpoint folders as it rotates them; the links keep the files
    of a checkpoint that is still uploading, at no cost in time or space.
    """
    for path in local_files(folder):
        dest = target / path.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)


@dataclass
class Stored:
    """One checkpoint in the store."""

    step: int
    files: int
    bytes: int
    seconds: float
    pruned: list[int] = field(default_factory=list)


class Uploader:
    """Stores checkpoints in the background, one at a time, each in parallel.

    The ordering is the durability promise (see the module docstring): :meth:`submit` of a
    checkpoint returns only once every checkpoint submitted before it is stored or has
    failed. A failure that retries cannot fix (the store down past ``retry.seconds``,
    another writer) is kept in :attr:`error` and raised by the next :meth:`submit` or
    :meth:`check`.
    """

    def __init__(
        self,
        location: RunLocation,
        staging: Path,
        *,
        keep: int,
        concurrency: int = 8,
        writer: str | None = None,
        retry: Retry = Retry(),
        on_stored: Callable[[Stored], None] | None = None,
    ) -> None:
        self.location = location
        self.staging = staging
        self.keep = keep
        self.writer = writer or writer_id()
        self.retry = retry
        self.on_stored = on_stored
        self.error: CheckpointError | None = None
        self.stored: list[Stored] = []
        self._queue: queue.SimpleQueue[tuple[Path, int, frozenset[int]] | None] = (
            queue.SimpleQueue()
        )
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="kubetune-upload")
        #: Steps handed to the upload thread and not yet stored (or failed), oldest first.
        self._unstored: list[int] = []
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="kubetune-checkpoints", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise the failure of an earlier checkpoint, if any."""
        if self.error is not None:
            raise self.error

    def unstored(self) -> list[int]:
        """Steps submitted and not yet stored or failed, oldest first."""
        with self._idle:
            return list(self._unstored)

    def submit(
        self,
        folder: Path,
        step: int,
        protect: Iterable[int] = (),
        *,
        wait: bool = True,
        on_wait: Callable[[int], None] | None = None,
    ) -> None:
        """Queue the checkpoint in ``folder`` (saved at ``step``) for upload.

        With ``wait`` (training goes on after this save) it first waits until the checkpoints
        submitted before are stored, calling ``on_wait(step)`` with the newest of them if it
        has to; so a kill after this returns loses at most the work since the checkpoint
        before ``step``. Without ``wait`` (the last save before the process ends, which
        drains the uploads itself) the checkpoint is queued behind them at once.

        Raises:
            CheckpointError: an earlier checkpoint could not be stored.
        """
        self.check()
        if wait:
            self._wait_for_unstored(on_wait)
            self.check()
        snap = self.staging / f"step-{step}"
        shutil.rmtree(snap, ignore_errors=True)
        snapshot(folder, snap)
        with self._idle:
            self._unstored.append(step)
        self._queue.put((snap, step, frozenset(protect)))

    def _wait_for_unstored(self, on_wait: Callable[[int], None] | None) -> None:
        waiting = self.unstored()
        if waiting and on_wait is not None:
            on_wait(waiting[-1])
        self.drain()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued checkpoint is stored or failed; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._unstored, timeout)

    def close(self) -> None:
        """Stop the worker once the queue is empty (call :meth:`drain` first to wait)."""
        self._queue.put(None)
        self._thread.join()
        self._pool.shutdown()
        shutil.rmtree(self.staging, ignore_errors=True)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            snap, step, protect = item
            failed: CheckpointError | None = None
            try:
                if self.error is None:
                    self._store(snap, step, protect)
            except CheckpointError as exc:
                failed = exc
            except Exception as exc:  # a worker must not die silently
                failed = CheckpointError(f"checkpoint step-{step:06d}: {exc!r}")
                failed.__cause__ = exc
            finally:
                shutil.rmtree(snap, ignore_errors=True)
                # The failure and the end of this step's upload are seen together: whoever
                # reads the error finds the step no longer pending.
                with self._idle:
                    self.error = self.error or failed
                    self._unstored.remove(step)
                    self._idle.notify_all()

    def _store(self, snap: Path, step: int, protect: frozenset[int]) -> None:
        started = time.monotonic()
        location = self.location
        files = upload_tree(
            location.store,
            snap,
            location.checkpoint_prefix(step),
            self._pool,
            self.retry,
            after_each=lambda: failpoint("upload", step),
        )
        failpoint("manifest-before", step)
        write_manifest(location, step, files, self.writer, self.retry)
        failpoint("manifest-after", step)
        pruned = with_retry(
            f"prune {location.url}",
            lambda: prune(location, self.keep, protect, self.writer),
            self.retry,
        )
        stored = Stored(
            step=step,
            files=len(files),
            bytes=sum(f["size"] for f in files),
            seconds=round(time.monotonic() - started, 3),
            pruned=pruned,
        )
        self.stored.append(stored)
        if self.on_stored is not None:
            self.on_stored(stored)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_json_file(path: Path) -> dict[str, Any]:
    """A small JSON file beside a checkpoint, or {} when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
