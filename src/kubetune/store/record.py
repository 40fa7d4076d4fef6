"""The run folder's files as typed values: ``run.json`` (:class:`RunRecord`), ``metrics.json``
(:data:`Metrics`) and ``history.json`` (:data:`History`), and the one reader of each.

The trainer writes ``run.json`` through :class:`RunRecord` (:class:`kubetune.train.record.
RecordWriter`), and ``runs``, ``report``, ``reproduce``, ``kubetune status`` and the launcher
read it through :func:`read_run` or :func:`load_record`, so writer and readers cannot drift.

Every field is optional: a record is written when a run starts and grows as it goes, and
records written by older kubetunes lack fields added since (``params``, ``attempt``,
``data.fingerprints``, ``render.pod_template``, which replaced ``render.chart``). Fields this
version does not know are kept (``extra="allow"``), so a newer trainer's record still loads.

Reading a run folder tells four cases apart (:attr:`RunFolder.state`): ``run.json`` written;
missing (the run is starting, or its pod died before writing it: status "starting"
everywhere); unreadable (not JSON, or not shaped like a record: one line naming the file);
forbidden (the store refused access: S3 AccessDenied, a file without read permission).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from kubetune.store.base import ForbiddenError, NotFoundError, RunLocation, StoreError

RECORD = "run.json"
METRICS = "metrics.json"
HISTORY = "history.json"

#: What a run says it is doing, as the trainer writes it.
Status = Literal["running", "interrupted", "failed", "completed", "pruned"]
#: Statuses a run does not leave: it is not trained again.
FINAL_STATUSES = ("completed", "pruned")
#: The status shown for a folder without run.json, and for one whose run.json cannot be read.
STARTING, UNREADABLE, FORBIDDEN = "starting", "unreadable", "forbidden"
#: How reading run.json went (:attr:`RunFolder.state`).
State = Literal["written", "missing", "unreadable", "forbidden"]

#: Final metrics: split (train, eval, test) → metric name → value.
Metrics = dict[str, dict[str, Any]]
#: The Trainer's log history: one row per logging or evaluation step.
History = list[dict[str, Any]]


class UnreadableError(StoreError):
    """A run file is in the store but is not JSON, or not shaped as its contract says."""


class _Part(BaseModel):
    # Infinity and NaN stay numbers (a diverged perplexity is inf), as json.dumps writes them.
    model_config = ConfigDict(frozen=True, extra="allow", ser_json_inf_nan="constants")


class ModelIdentity(_Part):
    """The model trained: its hub revision, or the sha256 of every file of a local folder."""

    name: str | None = None
    revision: str | None = None
    path: str | None = None
    files: dict[str, str] | None = None


class DataRecord(_Part):
    fingerprint: str | None = None
    #: Per split; records before it hold the combined ``fingerprint`` alone.
    fingerprints: dict[str, str] | None = None
    sources: dict[str, str] = {}
    rows: dict[str, int] = {}


class Render(_Part):
    """What rendered the run's pod: the chart's pod template revision (``kubetune-job/<n>``)
    and namespace. Records before pod template revisions hold the chart version instead."""

    pod_template: str | None = None
    chart: str | None = None
    namespace: str | None = None


class Git(_Part):
    sha: str | None = None
    dirty: bool = False


class Hardware(_Part):
    platform: str | None = None
    python: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    cuda: str | None = None
    gpus: list[str] = []


class Parameters(_Part):
    trainable: int = 0
    total: int = 0


class ZeroShot(_Part):
    """How a zero-shot baseline scored: its method and examples per class (0: none)."""

    method: str | None = None
    examples_per_class: int = 0


class Classical(_Part):
    """How a classical baseline was fitted: its method (spec ``classical.method``; None in
    records older than methods: tfidf-logreg), features and timings."""

    method: str | None = None
    features: int | None = None
    fit_seconds: float | None = None


class Rejected(_Part):
    step: int
    reason: str


class Compute(_Part):
    """What a run has spent, summed over its attempts (the trainer measures each): CPU time
    of its trainer processes on the main machine, wall-clock time, and GPU time (wall-clock
    × GPUs × nodes)."""

    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    gpu_seconds: float = 0.0

    def plus(self, other: Compute) -> Compute:
        return Compute(
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            wall_seconds=self.wall_seconds + other.wall_seconds,
            gpu_seconds=self.gpu_seconds + other.gpu_seconds,
        )


class StateRemoved(_Part):
    """The optimizer state removed from a completed run's checkpoints, and its bytes."""

    steps: list[int] = []
    bytes: int = 0


class RunRecord(_Part):
    """``run.json``: what produced a result (identity, inputs, code, environment), where the
    run is (status, times, attempt) and how it ended (metrics, or the error)."""

    status: Status | None = None
    run_id: str | None = None
    sweep: str | None = None
    spec_hash: str | None = None
    #: The sweep point's parameters (dotted path → value); absent before sweeps recorded them.
    params: dict[str, Any] = {}
    seed: int | None = None
    task: str | None = None
    model: ModelIdentity | None = None
    #: Staged inputs: field → {source, uri, sha256}.
    inputs: dict[str, Any] = {}
    data: DataRecord | None = None
    packages: dict[str, str | None] = {}
    image: str | None = None
    render: Render = Render()
    git: Git | None = None
    hardware: Hardware | None = None
    started: str | None = None
    attempt: int | None = None
    #: A completed run's end; an interrupted or pruned run's stop, the step it stopped at,
    #: and the newest checkpoint stored; a failed run's one-line error.
    finished: str | None = None
    stopped: str | None = None
    step: int | None = None
    stored_step: int | None = None
    error: str | None = None
    labels: list[str | int] = []
    parameters: Parameters | None = None
    resumed_from_step: int | None = None
    metrics: Metrics = {}
    zero_shot: ZeroShot | None = None
    classical: Classical | None = None
    lora: dict[str, Any] | None = None
    rejected_checkpoints: list[Rejected] = []
    optimizer_state_removed: StateRemoved | None = None
    #: Spent so far, every attempt's (absent from records older than adaptive sweeps).
    compute: Compute | None = None
    #: A pruned run: the evaluation (rung) it was stopped at and the objective's value there.
    pruned_at: dict[str, Any] | None = None

    def value(self, split: str, metric: str) -> float | None:
        """A final metric as a number, or None where the run has none."""
        return metric_value(self.metrics, split, metric)

    @property
    def started_at(self) -> datetime | None:
        return _time(self.started)

    @property
    def ended_at(self) -> datetime | None:
        """When a completed run finished, or an interrupted one stopped."""
        return _time(self.finished or self.stopped)

    def dump(self) -> dict[str, Any]:
        """The JSON object to store: the fields given, nothing filled in."""
        return self.model_dump(mode="json", exclude_unset=True)


def metric_value(metrics: Metrics, split: str, metric: str) -> float | None:
    value = metrics.get(split, {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- reading ------------------------------------------------------------------------------

_T = TypeVar("_T")
_RECORD = TypeAdapter(RunRecord)
_METRICS: TypeAdapter[Metrics] = TypeAdapter(Metrics)
_HISTORY: TypeAdapter[History] = TypeAdapter(History)


def _load(location: RunLocation, name: str, adapter: TypeAdapter[_T], what: str) -> _T:
    key = location.key(name)
    url = location.store.url(key)
    data = location.store.read_bytes(key)
    try:
        return adapter.validate_python(json.loads(data))
    except (ValueError, UnicodeDecodeError) as exc:
        if not isinstance(exc, ValidationError):
            raise UnreadableError(f"{url}: not JSON") from exc
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UnreadableError(
            f"{url}: not {what}: {where + ': ' if where else ''}{first['msg']}"
        ) from exc


def load_record(location: RunLocation) -> RunRecord:
    """The run's ``run.json``.

    Raises:
        NotFoundError: there is none (yet).
        UnreadableError: it is not JSON, or not a record.
        ForbiddenError: the store refused to read it.
        StoreError: the store failed.
    """
    return _load(location, RECORD, _RECORD, "a run record")


def load_metrics(location: RunLocation) -> Metrics:
    """The run's ``metrics.json`` (raises as :func:`load_record`)."""
    return _load(location, METRICS, _METRICS, "metrics per split")


def load_history(location: RunLocation) -> History:
    """The run's ``history.json`` (raises as :func:`load_record`)."""
    return _load(location, HISTORY, _HISTORY, "a list of log rows")


def parse_record(data: Any) -> RunRecord:
    """A record from a JSON value already in hand (raises pydantic's ValidationError)."""
    return _RECORD.validate_python(data)


@dataclass(frozen=True)
class RunFolder:
    """A run folder and its record, however reading ``run.json`` went: :attr:`record` is
    empty unless :attr:`state` is "written"; :attr:`problem` says why it could not be read."""

    location: RunLocation
    record: RunRecord = field(default_factory=RunRecord)
    state: State = "written"
    problem: str | None = None

    @property
    def run_id(self) -> str:
        return self.location.run_id

    @property
    def status(self) -> str:
        """The record's status; "starting" without run.json, "unreadable" or "forbidden"
        where it could not be read; "—" for a record that names none."""
        if self.state == "missing":
            return STARTING
        if self.state != "written":
            return self.state
        return self.record.status or "—"


def read_run(location: RunLocation) -> RunFolder:
    """The run's folder with its record, or with why there is none. Never raises for a
    missing, unreadable or forbidden ``run.json``; a store that fails otherwise reads as
    unreadable, with the store's error as the problem."""
    try:
        return RunFolder(location, load_record(location))
    except NotFoundError:
        return RunFolder(location, state="missing")
    except ForbiddenError as exc:
        return RunFolder(location, state="forbidden", problem=str(exc))
    except StoreError as exc:
        return RunFolder(location, state="unreadable", problem=str(exc))
