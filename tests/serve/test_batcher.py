"""The batcher: requests queued together go to one model call, off the event loop; each gets
its own results in order; a batch closes at max_batch texts; a failed call fails only its
batch. Requests are queued before the collector starts, so what forms a batch never depends
on timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from kubetune.serve.batcher import Batcher, BatchError

T = TypeVar("T")

#: A bound that only turns a hang into a failure; no assertion depends on it.
HANG = 60.0


class Model:
    """A stand-in model: upper-cases texts and records each call and its thread."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.threads.add(threading.get_ident())
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot read {self.fail_on!r}\nsecond line")
        return [t.upper() for t in texts]


def run(test: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(test(), HANG)

    return asyncio.run(bounded())


def test_requests_queued_together_share_one_call_and_get_their_own_results() -> None:
    model = Model()
    requests = [["a"], ["b", "c"], ["d"], ["e", "f", "g"]]

    async def test() -> tuple[list[list[str]], int]:
        # max_wait is an hour: the batch must close because it is full, not on a timer.
        batcher = Batcher(model, max_batch=7, max_wait_ms=3_600_000)
        futures = [batcher.enqueue(texts) for texts in requests]
        batcher.start()
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return results, threading.get_ident()

    results, loop_thread = run(test)
    assert model.calls == [["a", "b", "c", "d", "e", "f", "g"]]
    assert results == [["A"], ["B", "C"], ["D"], ["E", "F", "G"]]
    assert loop_thread not in model.threads  # the event loop never runs the model


def test_a_batch_closes_at_max_batch_and_keeps_each_request_whole() -> None:
    model = Model()
    requests = [["a"], ["b", "c"], ["d", "e"], ["f", "g", "h", "i", "j"], ["k"]]

    async def test() -> list[list[str]]:
        batcher = Batcher(model, max_batch=3, max_wait_ms=0)
        futures = [batcher.enqueue(texts) for texts in requests]
        batcher.start()
        results = await asyncio.gather(*futures)
        stats = batcher.stats
        assert (stats.batches, stats.texts, stats.requests) == (4, 11, 5)
        await batcher.stop()
        return results

    assert run(test) == [[t.upper() for t in texts] for texts in requests]
    # b,c would make 3 with a; d,e would not fit: the next batch. A request larger than
    # max_batch is a batch of its own, not split across calls.
    assert model.calls == [["a", "b", "c"], ["d", "e"], ["f", "g", "h", "i", "j"], ["k"]]


def test_max_batch_one_is_one_call_per_text() -> None:
    model = Model()

    async def test() -> None:
        batcher = Batcher(model, max_batch=1, max_wait_ms=3_600_000)
        futures = [batcher.enqueue([t]) for t in "abcd"]
        batcher.start()
        assert await asyncio.gather(*futures) == [["A"], ["B"], ["C"], ["D"]]
        await batcher.stop()

    run(test)
    assert model.calls == [["a"], ["b"], ["c"], ["d"]]


def test_a_failed_call_fails_its_batch_only_and_the_batcher_goes_on() -> None:
    model = Model(fail_on="boom")

    async def test() -> list[Any]:
        batcher = Batcher(model, max_batch=2, max_wait_ms=0)
        futures = [batcher.enqueue(["a"]), batcher.enqueue(["boom"]), batcher.enqueue(["c"])]
        batcher.start()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        later = await batcher.submit(["d"])  # after the failure, still serving
        assert batcher.stats.failed == 1
        await batcher.stop()
        return [*outcomes, later]

    first, second, third, later = run(test)
    for failed in (first, second):
        assert isinstance(failed, BatchError)
        assert str(failed) == "ValueError: cannot read 'boom'"  # one line
        assert isinstance(failed.__cause__, ValueError)
    assert third == ["C"]
    assert later == ["D"]
    assert model.calls == [["a", "boom"], ["c"], ["d"]]


def test_a_model_that_returns_too_few_results_fails_the_batch() -> None:
    async def test() -> None:
        batcher = Batcher(lambda texts: texts[:-1], max_batch=4, max_wait_ms=0)
        futures = [batcher.enqueue(["a", "b"])]
        batcher.start()
        with pytest.raises(BatchError, match="gave 1 results for 2 texts"):
            await futures[0]
        await batcher.stop()

    run(test)


def test_a_request_whose_client_left_costs_no_model_time() -> None:
    model = Model()

    async def test() -> None:
        batcher = Batcher(model, max_batch=8, max_wait_ms=0)
        gone, kept = batcher.enqueue(["gone"]), batcher.enqueue(["kept"])
        gone.cancel()
        batcher.start()
        assert await kept == ["KEPT"]
        await batcher.stop()

    run(test)
    assert model.calls == [["kept"]]


def test_stopping_fails_what_is_still_queued() -> None:
    async def test() -> None:
        batcher = Batcher(Model(), max_batch=8, max_wait_ms=0)
        waiting = batcher.enqueue(["a"])
        await batcher.stop()
        with pytest.raises(BatchError, match="shutting down"):
            await waiting

    run(test)


@pytest.mark.parametrize(("max_batch", "max_wait_ms"), [(0, 5.0), (4, -1.0)])
def test_settings_out_of_range_are_refused(max_batch: int, max_wait_ms: float) -> None:
    with pytest.raises(ValueError, match="max_batch|max_wait_ms"):
        Batcher(Model(), max_batch=max_batch, max_wait_ms=max_wait_ms)
