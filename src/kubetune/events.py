"""Progress events: what a trainer tells whoever started it, one line of stdout each.

The trainer (rank 0) prints ``@@kubetune {"event": "<kind>", …fields}`` lines among its log;
``kubetune run`` (:mod:`kubetune.local`) reads them to draw progress and learn the outcome,
the benchmarks read them to time a run's phases. Both sides use the classes here, so a field
renamed on one side is a type error on the other, not a silently empty progress bar.

Lines are JSON so that a newer trainer's extra fields or kinds never break an older reader:
:func:`parse` keeps unknown fields out of the typed event and returns :class:`Other` for an
unknown kind.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Marks a progress event among the trainer's log lines.
PREFIX = "@@kubetune "


@dataclass(frozen=True)
class Event:
    """One progress event; subclasses name their ``kind`` and fields."""

    kind: ClassVar[str] = ""

    def line(self) -> str:
        """The event as the trainer prints it (without the newline)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return PREFIX + json.dumps({"event": self.kind, **fields}, default=str)


@dataclass(frozen=True)
class Model(Event):
    """The model is loaded: its parameter counts and, for classifiers, its label count."""

    kind: ClassVar[str] = "model"
    trainable: int
    total: int
    labels: int = 0


@dataclass(frozen=True)
class Resume(Event):
    """Training continues from the stored checkpoint at ``step``."""

    kind: ClassVar[str] = "resume"
    step: int


@dataclass(frozen=True)
class TrainBegin(Event):
    """The first step is about to run (``step`` > 0 after a resume). Peaks are in bytes."""

    kind: ClassVar[str] = "train_begin"
    step: int
    max_steps: int
    peak_rss: int | None = None
    peak_gpu: int | None = None


@dataclass(frozen=True)
class Step(Event):
    """A step ended: the latest logged loss and seconds since training began."""

    kind: ClassVar[str] = "step"
    step: int
    max_steps: int
    loss: float | None = None
    elapsed: float | None = None
    peak_rss: int | None = None
    peak_gpu: int | None = None


@dataclass(frozen=True)
class Eval(Event):
    """An evaluation: the headline metric's value (None when the metric was not computed)."""

    kind: ClassVar[str] = "eval"
    step: int
    metric: str
    value: float | None


@dataclass(frozen=True)
class Checkpoint(Event):
    """A checkpoint is in the store, verified; ``pruned`` older steps were removed."""

    kind: ClassVar[str] = "checkpoint"
    step: int
    url: str
    bytes: int
    seconds: float
    pruned: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class CheckpointWait(Event):
    """Training waits for the previous checkpoint's upload before storing ``step``'s."""

    kind: ClassVar[str] = "checkpoint_wait"
    step: int
    waiting_for: int


@dataclass(frozen=True)
class CheckpointRejected(Event):
    """A stored checkpoint failed verification and was not resumed from."""

    kind: ClassVar[str] = "checkpoint_rejected"
    step: int
    reason: str


@dataclass(frozen=True)
class Interrupted(Event):
    """Stopped by a signal with a checkpoint at ``step``; the same command resumes."""

    kind: ClassVar[str] = "interrupted"
    step: int
    url: str


@dataclass(frozen=True)
class Pruned(Event):
    """Stopped early by the sweep's pruner at evaluation ``rung``, with a checkpoint."""

    kind: ClassVar[str] = "pruned"
    step: int
    rung: int
    url: str
    value: float | None = None


@dataclass(frozen=True)
class Done(Event):
    """The run is complete (``already``: it was complete before this process started)."""

    kind: ClassVar[str] = "done"
    already: bool
    url: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Other(Event):
    """An event of a kind this version does not know (a newer trainer's)."""

    name: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


KINDS: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Model,
        Resume,
        TrainBegin,
        Step,
        Eval,
        Checkpoint,
        CheckpointWait,
        CheckpointRejected,
        Interrupted,
        Pruned,
        Done,
    )
}


def emit(event: Event) -> None:
    """Print ``event`` on stdout. Call it from the main process's main thread: a line another
    thread printed in two writes could swallow it."""
    sys.stdout.write(event.line() + "\n")
    sys.stdout.flush()


def parse(line: str) -> Event | None:
    """The event on ``line``, or None when it is an ordinary log line (or not valid JSON)."""
    if not line.startswith(PREFIX):
        return None
    try:
        data = json.loads(line[len(PREFIX) :])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    name = str(data.pop("event", ""))
    cls = KINDS.get(name)
    if cls is None:
        return Other(name=name, fields=data)
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError:  # a required field is missing: keep what was said, untyped
        return Other(name=name, fields=data)
