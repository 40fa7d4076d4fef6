"""Requests that arrive together, answered by one model call.

Each request puts its texts on an asyncio queue and awaits a future. One collector task takes
the first waiting request, then more, until the batch holds ``max_batch`` texts or
``max_wait_ms`` have passed since it opened; it runs the model over all of the batch's texts
in a thread of its own (the event loop never runs the model, so it keeps accepting requests
meanwhile) and hands each request its own slice of the results, in order. A request's texts
stay in one batch: one larger than ``max_batch`` is a batch of its own.

While the model runs, new requests queue up; the next batch takes them at once, so under load
batches fill without waiting and a lone request waits at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class BatchError(Exception):
    """The model call of a batch failed; every request of that batch gets this error."""


@dataclass
class BatchStats:
    """What the batcher has done so far (served at ``/metrics``)."""

    batches: int = 0  # model calls
    texts: int = 0  # texts over all model calls
    requests: int = 0  # requests answered (or failed) by those calls
    failed: int = 0  # model calls that raised


@dataclass
class _Pending(Generic[T]):
    texts: list[str]
    future: asyncio.Future[list[T]] = field(repr=False)


class Batcher(Generic[T]):
    """Gathers the texts of concurrent requests into calls of ``run`` (texts → one result per
    text, in order).

    Create and use it on the event loop that serves the requests: :meth:`enqueue` (or
    ``await`` :meth:`submit`) queues a request, :meth:`start` starts the collector,
    :meth:`stop` ends it and fails what is still queued.
    """

    def __init__(
        self, run: Callable[[list[Any]], Sequence[T]], *, max_batch: int, max_wait_ms: float
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1 (got {max_batch})")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative (got {max_wait_ms})")
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending[T]] = asyncio.Queue()
        self._carry: _Pending[T] | None = None  # taken from the queue, left for the next batch
        # One thread: model calls never overlap (each already uses every core), and they do
        # not wait behind other work of the default executor.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubetune-model")
        self._task: asyncio.Task[None] | None = None

    def enqueue(self, texts: Sequence[str]) -> asyncio.Future[list[T]]:
        """Queue one request's texts; the future gets their results, in order."""
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(list(texts), future))
        return future

    async def submit(self, texts: Sequence[Any]) -> list[T]:
        """The results of ``texts``, computed in a batch with whatever else is waiting.

        Raises:
            BatchError: the model call of the batch failed (its cause chained).
        """
        return await self.enqueue(texts)

    def start(self) -> None:
        """Start collecting batches (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Stop collecting; requests still queued fail with :class:`BatchError`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = [self._carry] if self._carry else []
        self._carry = None
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        _fail(left, "the server is shutting down")
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _collect(self) -> None:
        while True:
            batch = await self._next_batch()
            await self._answer(batch)

    async def _next_batch(self) -> list[_Pending[T]]:
        """The first waiting request and those that join it before the batch closes."""
        loop = asyncio.get_running_loop()
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.texts)
        closes = loop.time() + self.max_wait
        while size < self.max_batch:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = closes - loop.time()
                if left <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            if size + len(pending.texts) > self.max_batch:
                self._carry = pending
                break
            batch.append(pending)
            size += len(pending.texts)
        return batch

    async def _answer(self, batch: list[_Pending[T]]) -> None:
        # A request whose client went away (its future cancelled) costs no model time.
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        texts = [text for pending in batch for text in pending.texts]
        loop = asyncio.get_running_loop()
        self.stats.batches += 1
        self.stats.texts += len(texts)
        self.stats.requests += len(batch)
        try:
            results = list(await loop.run_in_executor(self._executor, self.run, texts))
            if len(results) != len(texts):
                raise RuntimeError(f"the model gave {len(results)} results for {len(texts)} texts")
        except asyncio.CancelledError:
            _fail(batch, "the server is shutting down")
            raise
        except Exception as exc:
            self.stats.failed += 1
            log.exception("model call over %d texts failed", len(texts))
            _fail(batch, f"{type(exc).__name__}: {exc}", exc)
            return
        start = 0
        for pending in batch:
            end = start + len(pending.texts)
            if not pending.future.done():
                pending.future.set_result(results[start:end])
            start = end


def _fail(batch: list[_Pending[T]], message: str, cause: BaseException | None = None) -> None:
    """Fail each request of ``batch`` still waiting with a one-line :class:`BatchError`."""
    line = message.splitlines()[0] if message else "the model call failed"
    for pending in batch:
        if not pending.future.done():
            error = BatchError(line)
            error.__cause__ = cause
            pending.future.set_exception(error)
