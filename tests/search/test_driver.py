"""The sweep driver with real Optuna over a folder store, and trials played by a scripted
executor that speaks the trainer's side of the store protocol (rungs, run.json): each
question the driver asks it moves a trial by one evaluation. No training, no clock: the same
calls give the same sweep, so restarts can be compared trial by trial.

The driver against real trainers is tests/search/test_local_sweep.py (slow)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from kubetune import spec as specmod
from kubetune.errors import ConfigError
from kubetune.search import rungs
from kubetune.search.driver import Driver, Running
from kubetune.search.state import read_state
from kubetune.store import RunLocation, Store, open_store
from kubetune.store.record import RECORD, read_run
from kubetune.sweep import ResolvedRun

EVALS = 6


def quality(params: dict[str, Any], evaluation: int) -> float:
    """A learning curve: best near lr 3e-4, rising with evaluations."""
    lr = float(params.get("train.learning_rate", 1e-4))
    distance = abs(math.log10(lr) - math.log10(3e-4))
    return round((1 - distance / 3) * (1 - 0.5**evaluation), 6)


class ScriptedTrials:
    """An executor whose trials advance one evaluation each time the driver asks about them.

    ``fail``: run ids whose first launch fails; ``refuse``: run ids that fail as a config
    error; ``crash_at_launch``: raise on the n-th launch (a driver killed mid-sweep)."""

    def __init__(
        self,
        store: Store,
        sweep: str,
        *,
        fail: set[str] = frozenset(),  # type: ignore[assignment]
        refuse: set[str] = frozenset(),  # type: ignore[assignment]
        crash_at_launch: int | None = None,
        cpu_seconds: float = 100.0,
    ) -> None:
        self.store, self.sweep = store, sweep
        self.fail, self.refuse = set(fail), set(refuse)
        self.crash_at_launch = crash_at_launch
        self.cpu_seconds = cpu_seconds
        self.live: dict[str, ResolvedRun] = {}
        self.ended: dict[str, Running] = {}
        self.launches: list[str] = []
        #: Evaluations trained, per run id, over every launch (a resumed run continues).
        self.trained: dict[str, int] = {}

    def launch(self, run: ResolvedRun) -> None:
        if self.crash_at_launch is not None and len(self.launches) + 1 == self.crash_at_launch:
            raise RuntimeError("driver killed")
        self.launches.append(run.run_id)
        self.live[run.run_id] = run
        self.ended.pop(run.run_id, None)

    def _record(self, run: ResolvedRun, status: str, **fields: Any) -> None:
        location = RunLocation(self.store, self.sweep, run.run_id)
        data = {"status": status, "run_id": run.run_id, "params": run.params, **fields}
        data["compute"] = {"cpu_seconds": self.cpu_seconds, "wall_seconds": 10.0}
        self.store.write_json(location.key(RECORD), data)

    def state(self, run_id: str) -> Running:
        if run_id in self.ended:
            return self.ended[run_id]
        run = self.live.get(run_id)
        if run is None:
            return "unknown"
        location = RunLocation(self.store, self.sweep, run_id)
        if run_id in self.refuse:
            return self._end(run_id, "config-error")
        if run_id in self.fail:
            self.fail.discard(run_id)
            self._record(run, "failed", error="CUDA error: out of memory")
            return self._end(run_id, "failed")
        done = self.trained.get(run_id, 0)
        if run.rungs and done:
            decided = rungs.read_decision(location, done)
            if decided is None:
                return "running"  # waiting at its rung
            if decided:
                value = quality(run.params, done)
                self._record(run, "pruned", pruned_at={"rung": done, "value": value})
                return self._end(run_id, "succeeded")
        if done == EVALS:
            metrics = {"eval": {"accuracy": quality(run.params, EVALS)}}
            self._record(run, "completed", metrics=metrics)
            return self._end(run_id, "succeeded")
        self.trained[run_id] = done + 1
        if run.rungs:
            rungs.write_rung(
                location, rungs.Rung(done + 1, 10 * (done + 1), quality(run.params, done + 1))
            )
        return "running"

    def _end(self, run_id: str, how: Running) -> Running:
        self.live.pop(run_id, None)
        self.ended[run_id] = how
        return how

    def close(self) -> None:
        pass


def sweep_spec(tmp_path: Path, sweep: dict[str, Any], name: str = "topic") -> specmod.JobSpec:
    return specmod.validate(
        {
            "name": name,
            "task": "classification",
            "model": {"name": "org/model"},
            "data": {"train": "s3://b/train.jsonl", "eval": "s3://b/eval.jsonl"},
            "resources": {"gpus": 0},
            "sweep": sweep,
        }
    )


SEARCH = {
    "method": "tpe",
    "seed": 7,
    "max_runs": 12,
    "parallelism": 1,
    "pruner": {"type": "asha", "reduction_factor": 3},
    "parameters": {
        "train.learning_rate": {"log_uniform": [1e-5, 1e-2]},
        "lora": {"values": [None, {}]},
        "lora.r": {"values": [4, 8, 16], "when": {"lora": {}}},
    },
}


def drive(spec: specmod.JobSpec, store: Store, trials: ScriptedTrials, **kwargs: Any) -> Driver:
    assert spec.sweep is not None
    parallelism = spec.sweep.parallelism or 1
    driver = Driver(spec, store, trials, parallelism=parallelism, poll=0, **kwargs)
    driver.run()
    return driver


def trial_list(store: Store, sweep: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    state = read_state(store, sweep)
    assert state is not None
    return [(t.number, t.run_id, t.state, t.params) for t in state.trials]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"file://{tmp_path / 'store'}")


def test_tpe_with_asha_prunes_losing_trials_at_their_rungs(tmp_path: Path, store: Store) -> None:
    spec = sweep_spec(tmp_path, SEARCH)
    trials = ScriptedTrials(store, "topic")
    drive(spec, store, trials)
    state = read_state(store, "topic")
    assert state is not None
    assert len(state.trials) == 12
    counts = state.counts()
    assert counts.get("pruned", 0) >= 4 and counts.get("completed", 0) >= 1, counts
    assert state.stopped == "max_runs (12) reached"
    for row in state.trials:
        location = RunLocation(store, "topic", row.run_id)
        if row.state == "pruned":
            record = read_run(location).record
            assert record.status == "pruned"
            # Stopped at a rung of ASHA: 1, 3, 9, … evaluations.
            assert record.pruned_at is not None and record.pruned_at["rung"] in (1, 3)
            assert trials.trained[row.run_id] == record.pruned_at["rung"]
        if row.state == "completed" and row.same_as is None:
            assert trials.trained[row.run_id] == EVALS
    # Conditional: lora.r only where LoRA is on.
    for row in state.trials:
        assert ("lora.r" in row.params) == (row.params["lora"] is not None)
    best = state.best()
    assert best is not None and best.value == max(
        t.value for t in state.trials if t.state == "completed" and t.value is not None
    )


def test_a_restarted_driver_finishes_the_same_sweep_training_nothing_twice(
    tmp_path: Path,
) -> None:
    spec = sweep_spec(tmp_path, SEARCH)
    unbroken_store = open_store(f"file://{tmp_path / 'unbroken'}")
    drive(spec, unbroken_store, ScriptedTrials(unbroken_store, "topic"))

    store = open_store(f"file://{tmp_path / 'broken'}")
    first = ScriptedTrials(store, "topic", crash_at_launch=6)
    with pytest.raises(RuntimeError, match="driver killed"):
        drive(spec, store, first)
    second = ScriptedTrials(store, "topic")
    second.trained = dict(first.trained)  # what the trainers had stored: they resume from it
    drive(spec, store, second)

    assert trial_list(store, "topic") == trial_list(unbroken_store, "topic")
    # A trial finished before the crash is not launched again; the one launched when the
    # driver died is launched once more and resumes.
    finished_before = {
        row.run_id
        for row in read_state(store, "topic").trials  # type: ignore[union-attr]
        if row.run_id in first.ended
    }
    assert finished_before and not finished_before & set(second.launches)


def test_a_trial_asked_by_a_driver_that_died_is_given_the_same_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetune.search import space

    spec = sweep_spec(tmp_path, {**SEARCH, "max_runs": 8})
    unbroken = open_store(f"file://{tmp_path / 'unbroken'}")
    drive(spec, unbroken, ScriptedTrials(unbroken, "topic"))

    store = open_store(f"file://{tmp_path / 'broken'}")
    real = space.suggest
    calls: list[int] = []

    def dies_after_the_fifth(trial: Any, sweep: Any) -> dict[str, Any]:
        point = real(trial, sweep)
        calls.append(trial.number)
        if len(calls) == 5:
            raise RuntimeError("driver killed")
        return point

    monkeypatch.setattr(space, "suggest", dies_after_the_fifth)
    first = ScriptedTrials(store, "topic")
    with pytest.raises(RuntimeError, match="driver killed"):
        drive(spec, store, first)
    monkeypatch.setattr(space, "suggest", real)
    second = ScriptedTrials(store, "topic")
    second.trained = dict(first.trained)
    drive(spec, store, second)
    assert trial_list(store, "topic") == trial_list(unbroken, "topic")


def test_a_budget_stops_launching_before_the_next_trial_would_overrun(
    tmp_path: Path, store: Store
) -> None:
    sweep = {**SEARCH, "pruner": None, "max_runs": 20, "budget": {"cpu_hours": 1.0}}
    spec = sweep_spec(tmp_path, sweep)
    drive(spec, store, ScriptedTrials(store, "topic", cpu_seconds=1000.0))
    state = read_state(store, "topic")
    assert state is not None
    # 3 trials spent 3000 s; a fourth at ≈1000 s would pass 3600 s.
    assert len(state.trials) == 3
    assert state.stopped is not None and state.stopped.startswith("budget: cpu_hours 1")
    assert state.spent.cpu_hours == pytest.approx(3000 / 3600, rel=1e-3)


def test_a_static_grid_retries_a_failed_trial_and_not_a_refused_one(
    tmp_path: Path, store: Store
) -> None:
    sweep = {
        "method": "grid",
        "parallelism": 2,
        "retries": 1,
        "parameters": {"train.learning_rate": {"values": [1e-5, 1e-4, 3e-4, 1e-3]}},
    }
    spec = sweep_spec(tmp_path, sweep)
    from kubetune.sweep import expand

    planned = [r.run_id for r in expand(spec)]
    trials = ScriptedTrials(store, "topic", fail={planned[1]}, refuse={planned[2]})
    drive(spec, store, trials)
    state = read_state(store, "topic")
    assert state is not None
    assert [t.run_id for t in state.trials] == planned
    assert [t.state for t in state.trials] == ["completed", "completed", "failed", "completed"]
    assert [t.refused for t in state.trials] == [False, False, True, False]
    assert trials.launches.count(planned[1]) == 2  # retried once
    assert trials.launches.count(planned[2]) == 1  # the spec's fault: not retried
    assert state.stopped == "all 4 planned trials launched"


def test_trials_asking_for_the_same_run_train_it_once(tmp_path: Path, store: Store) -> None:
    sweep = {
        "method": "tpe",
        "max_runs": 6,
        "parallelism": 1,
        "parameters": {"train.learning_rate": {"values": [1e-4, 3e-4]}},
    }
    spec = sweep_spec(tmp_path, sweep)
    trials = ScriptedTrials(store, "topic")
    drive(spec, store, trials)
    state = read_state(store, "topic")
    assert state is not None and len(state.trials) == 6
    assert len(trials.launches) == len(set(trials.launches)) <= 2
    assert all(t.state == "completed" for t in state.trials)
    assert sum(1 for t in state.trials if t.same_as is not None) >= 4


def test_another_spec_under_the_same_sweep_name_is_refused(tmp_path: Path, store: Store) -> None:
    drive(sweep_spec(tmp_path, {**SEARCH, "max_runs": 4}), store, ScriptedTrials(store, "topic"))
    other = sweep_spec(tmp_path, {**SEARCH, "max_runs": 5})
    with pytest.raises(ConfigError, match="started from another spec; rename"):
        Driver(other, store, ScriptedTrials(store, "topic"), parallelism=1)


@pytest.mark.parametrize(
    "pruner",
    [
        {"type": "hyperband", "min_evals": 1, "max_evals": EVALS, "reduction_factor": 3},
        {"type": "median", "startup_trials": 2, "min_evals": 2},
    ],
    ids=["hyperband", "median"],
)
def test_hyperband_and_median_stop_losing_trials_too(
    tmp_path: Path, store: Store, pruner: dict[str, Any]
) -> None:
    spec = sweep_spec(tmp_path, {**SEARCH, "max_runs": 10, "pruner": pruner})
    trials = ScriptedTrials(store, "topic")
    drive(spec, store, trials)
    state = read_state(store, "topic")
    assert state is not None and len(state.trials) == 10
    pruned = [t for t in state.trials if t.state == "pruned"]
    assert pruned and any(t.state == "completed" for t in state.trials)
    for row in pruned:
        record = read_run(RunLocation(store, "topic", row.run_id)).record
        assert record.pruned_at is not None
        assert trials.trained[row.run_id] == record.pruned_at["rung"] < EVALS
        if pruner["type"] == "median":
            assert record.pruned_at["rung"] >= 2  # no stop before min_evals
    if pruner["type"] == "median":
        # The first two trials finish before any is stopped.
        assert [t.state for t in state.trials[:2]] == ["completed", "completed"]
