"""``<sweep>/sweep.json``: what a driven sweep is doing, for the people watching it.

The driver writes it at every change: each trial (its run, parameters, state, objective
value, last rung), the budget spent, why launching stopped, and the driver's heartbeat.
``kubetune status``, ``runs list`` and ``report`` read this one object, without Optuna.
The truth the driver resumes from is the study's journal and the runs' records
(:mod:`kubetune.search.journal`); this file is their summary and is rewritten from them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kubetune.store import NotFoundError, Store, StoreError

STATE = "sweep.json"

TrialState = Literal["running", "completed", "pruned", "failed"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")


class TrialRow(_Part):
    """One trial of the sweep."""

    number: int
    run_id: str
    params: dict[str, Any] = {}
    state: TrialState = "running"
    #: The objective's final value (completed), or its value at the last rung.
    value: float | None = None
    #: Rungs (evaluations) reported to the pruner.
    rungs: int = 0
    #: Launches of the run by the driver: 1, more after failures (retries) or restarts.
    launches: int = 0
    #: Another trial asked for the same run: it shares that run's result, trains nothing.
    same_as: int | None = None
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None
    #: Failed because its point's spec or data was refused (the user's to fix: exit 2).
    refused: bool = False


class Spent(_Part):
    """What the sweep has spent, from its runs' records (running trials so far)."""

    cpu_hours: float = 0.0
    gpu_hours: float = 0.0
    hours: float = 0.0


class SweepState(_Part):
    """The summary of a driven sweep."""

    sweep: str
    method: str
    seed: int
    #: sha256 of the spec that started the sweep: another spec under the same name is refused.
    spec_hash: str
    metric: str
    direction: Literal["maximize", "minimize"]
    parallelism: int
    started: str
    updated: str
    finished: str | None = None
    #: Why no more trials are launched (all planned ran, max_runs, a budget, cancelled).
    stopped: str | None = None
    budget: dict[str, float] = {}
    spent: Spent = Spent()
    #: Where the driver runs: "local" or "pod <name>".
    driver: str = ""
    trials: list[TrialRow] = []

    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.state == "completed" and t.value is not None]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda t: t.value if t.value is not None else 0.0)

    def leaderboard(self) -> list[TrialRow]:
        """Completed trials best first, then pruned (by their last rung's value), then the
        running and failed ones, each in trial order."""
        sign = -1.0 if self.direction == "maximize" else 1.0

        def key(t: TrialRow) -> tuple[int, float, int]:
            order = {"completed": 0, "pruned": 1, "running": 2, "failed": 3}[t.state]
            value = sign * t.value if t.value is not None else float("inf")
            return order, value if t.state in ("completed", "pruned") else 0.0, t.number

        return sorted(self.trials, key=key)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(store: Store, sweep: str) -> SweepState | None:
    """The sweep's summary, or None when it is not a driven sweep (or not started)."""
    try:
        data = store.read_json(f"{sweep}/{STATE}")
    except NotFoundError:
        return None
    try:
        return SweepState.model_validate(data)
    except ValueError as exc:
        raise StoreError(f"{store.url(sweep)}/{STATE} is not a sweep summary: {exc}") from exc


def write_state(store: Store, state: SweepState) -> None:
    store.write_json(f"{state.sweep}/{STATE}", state.model_dump(mode="json"))
