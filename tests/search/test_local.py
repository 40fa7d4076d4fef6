"""The local executor: trials on threads, their outcomes as the driver's states, GPUs shared
out one group per trial. ``kubetune.local.run_one`` is replaced by a stand-in that waits to be
released, so nothing trains."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kubetune import local
from kubetune import spec as specmod
from kubetune.local import Display, Outcome
from kubetune.search.local import LocalExecutor
from kubetune.sweep import ResolvedRun


def run(run_id: str) -> ResolvedRun:
    spec = specmod.validate({"name": "t", "task": "classification", "model": {"name": "m/m"},
                             "data": {"train": "s3://b/t.jsonl"}})  # fmt: skip
    return ResolvedRun(run_id, "t", 0, spec)


class StandIn:
    """run_one that records its environment and ends when told, as told."""

    def __init__(self) -> None:
        self.release: dict[str, threading.Event] = {}
        self.ending: dict[str, str] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.started: dict[str, threading.Event] = {}

    def __call__(self, item: ResolvedRun, store: str, display: Display, **kw: Any) -> Outcome:
        self.envs[item.run_id] = dict(kw.get("extra_env") or {})
        self.started.setdefault(item.run_id, threading.Event()).set()
        self.release.setdefault(item.run_id, threading.Event()).wait(10)
        return Outcome(item, self.ending.get(item.run_id, "completed"))

    def env(self, run_id: str) -> dict[str, str]:
        assert self.started.setdefault(run_id, threading.Event()).wait(10)
        return self.envs[run_id]

    def end(self, run_id: str, how: str) -> None:
        self.ending[run_id] = how
        self.release.setdefault(run_id, threading.Event()).set()


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    fake = StandIn()
    monkeypatch.setattr(local, "run_one", fake)
    return fake


def wait_until(executor: LocalExecutor, run_id: str) -> str:
    executor.threads[run_id].join(10)
    return executor.state(run_id)


def test_states_follow_the_trainers_outcomes(stand_in: StandIn) -> None:
    executor = LocalExecutor("file:///tmp/x", Display)
    assert executor.state("t-00000001") == "unknown"
    for rid in ("t-00000001", "t-00000002", "t-00000003", "t-00000004"):
        executor.launch(run(rid))
    assert executor.state("t-00000001") == "running"
    executor.launch(run("t-00000001"))  # idempotent while it runs
    assert len([t for t in executor.threads.values() if t.is_alive()]) == 4
    stand_in.end("t-00000001", "pruned")
    stand_in.end("t-00000002", "interrupted")
    stand_in.end("t-00000003", "config-error")
    stand_in.end("t-00000004", "failed")
    assert wait_until(executor, "t-00000001") == "succeeded"
    assert wait_until(executor, "t-00000002") == "interrupted"
    assert wait_until(executor, "t-00000003") == "config-error"
    assert wait_until(executor, "t-00000004") == "failed"


def test_each_trial_gets_its_own_gpus_and_gives_them_back(stand_in: StandIn) -> None:
    executor = LocalExecutor("file:///tmp/x", Display, gpus_here=4, gpus_per_trial=2)
    executor.launch(run("t-00000001"))
    executor.launch(run("t-00000002"))
    first = stand_in.env("t-00000001")["CUDA_VISIBLE_DEVICES"]
    second = stand_in.env("t-00000002")["CUDA_VISIBLE_DEVICES"]
    assert {first, second} == {"0,1", "2,3"}
    stand_in.end("t-00000001", "completed")
    wait_until(executor, "t-00000001")
    executor.launch(run("t-00000003"))
    assert stand_in.env("t-00000003")["CUDA_VISIBLE_DEVICES"] == first
    stand_in.end("t-00000002", "completed")
    stand_in.end("t-00000003", "completed")
    wait_until(executor, "t-00000003")


def test_a_cpu_machine_sets_no_gpus(stand_in: StandIn) -> None:
    executor = LocalExecutor("file:///tmp/x", Display)
    executor.launch(run("t-00000001"))
    assert "CUDA_VISIBLE_DEVICES" not in stand_in.env("t-00000001")
    stand_in.end("t-00000001", "completed")
    wait_until(executor, "t-00000001")
