"""The conversation between a trial and its sweep driver, held in the run store.

A trial of a sweep with a pruner gets ``KUBETUNE_RUNGS`` (JSON ``{"metric", "wait"}``). At
each evaluation its trainer writes the objective's value as the next rung,
``<sweep>/<run-id>/rungs/0001.json``, and waits (at most ``wait`` seconds) for the driver's
answer beside it, ``0001.decision.json``: go on, or stop. The driver reads the rung,
reports it to the study (``trial.report(value, rung)``), asks the pruner, and writes the
decision. A stopped trial saves a checkpoint and ends with status ``pruned`` (exit 0: no
retry is burned). The evaluation at a trial's last step is not a rung: stopping there would
save nothing, so the trial completes and its final value is what the driver tells.

Why the trainer waits: the decision then falls at the same evaluation whatever the timing,
so a sweep with the same seed makes the same decisions and asks the same next trials, and
no compute goes past a rung the trial loses. A driver that is down (restarting) costs a
trial ``wait`` seconds at one rung; it trains on, and the driver, back, answers the later
rungs. Both sides only write objects the other side reads, each object once (a rung
written again after a resume carries the same number and is overwritten with the new
value): a folder and S3 both serve this without locks.

No Optuna here: the trainer imports this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubetune.store import NotFoundError, RunLocation

RUNGS = "rungs"


@dataclass(frozen=True)
class Settings:
    """What a trial needs to know to report: the eval metric and how long to wait."""

    metric: str
    wait: float

    def dump(self) -> str:
        return json.dumps({"metric": self.metric, "wait": self.wait}, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> Settings:
        data = json.loads(text)
        return cls(metric=str(data["metric"]), wait=float(data["wait"]))


@dataclass(frozen=True)
class Rung:
    """One evaluation of a trial: its number (1-based), training step, objective value."""

    number: int
    step: int
    value: float | None


def rung_key(location: RunLocation, number: int) -> str:
    return location.key(f"{RUNGS}/{number:04d}.json")


def decision_key(location: RunLocation, number: int) -> str:
    return location.key(f"{RUNGS}/{number:04d}.decision.json")


def write_rung(location: RunLocation, rung: Rung) -> None:
    location.store.write_json(
        rung_key(location, rung.number),
        {"rung": rung.number, "step": rung.step, "value": rung.value},
    )


def read_rungs(location: RunLocation, after: int = 0) -> list[Rung]:
    """The trial's rungs numbered above ``after``, in order, up to the first gap."""
    found: list[Rung] = []
    number = after + 1
    while True:
        try:
            data = location.store.read_json(rung_key(location, number))
        except NotFoundError:
            return found
        value = data.get("value")
        found.append(
            Rung(number, int(data.get("step", 0)), None if value is None else float(value))
        )
        number += 1


def write_decision(location: RunLocation, number: int, *, prune: bool, trial: int) -> None:
    location.store.write_json(
        decision_key(location, number), {"rung": number, "prune": prune, "trial": trial}
    )


def read_decision(location: RunLocation, number: int) -> bool | None:
    """True: stop; False: go on; None: not decided yet."""
    try:
        data = location.store.read_json(decision_key(location, number))
    except NotFoundError:
        return None
    return bool(data.get("prune"))


def await_decision(
    location: RunLocation,
    number: int,
    wait: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool | None:
    """The driver's decision on rung ``number``, polled with a growing pause (0.1 s to 2 s)
    for at most ``wait`` seconds; None when none came."""
    deadline = clock() + wait
    pause = 0.1
    while True:
        decided = read_decision(location, number)
        if decided is not None:
            return decided
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(pause, left))
        pause = min(pause * 1.5, 2.0)


def describe(data: dict[str, Any]) -> str:
    """``rung 2 (step 40): 0.81``: how a pruned run's stop reads in listings."""
    value = data.get("value")
    shown = "—" if value is None else f"{value:.4g}"
    return f"rung {data.get('rung')} (step {data.get('step')}): {shown}"
