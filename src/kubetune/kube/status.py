"""What a run's Job and pods say about it, as ``kubetune status`` and ``kubetune list`` show it.

Pure functions of the objects the API server returns (plain dicts), so every state can be
tested from a literal: the Job's phase (queued by Kueue, pending, running, succeeded,
failed and why), its pods' state (ContainerCreating, ImagePullBackOff, OOMKilled, Evicted,
CrashLoopBackOff, exit codes), restarts, nodes and age, and what keeps a pod from ever
starting (:func:`stuck`: a missing Secret or ConfigMap, an image that cannot be pulled),
for how long, and what to do. The one effect is reading each run's
headline metric from its store (:class:`Metrics`), which never fails a status: a store that
cannot be read shows "—".
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.markup import escape
from rich.table import Table

from kubetune._tables import add_id_column, add_value_column
from kubetune.errors import KubetuneError
from kubetune.headline import headline_value
from kubetune.kube import names
from kubetune.kube.names import (
    COMPONENT_LABEL,
    CONTAINER,
    DRIVER_COMPONENT,
    DRIVER_CONTAINER,
    INDEX_LABEL,
    PARAMS_ANNOTATION,
    QUEUE_LABEL,
    RUN_ID_LABEL,
    SWEEP_LABEL,
)
from kubetune.runs import DASH, fmt, fmt_duration
from kubetune.store import RunLocation, Store
from kubetune.store.record import RunRecord, load_record

#: Phases in the order a run goes through them (the columns of ``kubetune list``).
PHASES = ("Queued", "Suspended", "Pending", "Running", "Succeeded", "Failed", "Terminating")
PHASE_STYLE = {
    "Queued": "cyan",
    "Suspended": "yellow",
    "Pending": "cyan",
    "Running": "blue",
    "Succeeded": "green",
    "Failed": "red",
    "Terminating": "yellow",
    "Not submitted": "dim",
    "Pruned": "cyan",
}
#: A trial its sweep's pruner stopped: its Job is Complete, its record says "pruned".
PRUNED = "Pruned"
#: Waiting reasons that are only a step on the way, not a problem.
_ON_THE_WAY = frozenset({"ContainerCreating", "PodInitializing"})


@dataclass(frozen=True)
class Phase:
    """Where a run's Job is: one of :data:`PHASES` (or "Not submitted") and why."""

    name: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})" if self.reason else self.name

    @property
    def finished(self) -> bool:
        return self.name in ("Succeeded", "Failed")


NOT_SUBMITTED = Phase("Not submitted")


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _status(obj: Mapping[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


def is_driver(obj: Mapping[str, Any]) -> bool:
    """Whether the object belongs to a driven sweep's driver (its Job, pods, RBAC)."""
    return labels(obj).get(COMPONENT_LABEL) == DRIVER_COMPONENT


def run_id_of(job: Mapping[str, Any]) -> str:
    return str(labels(job).get(RUN_ID_LABEL) or _meta(job).get("name") or "")


def created(obj: Mapping[str, Any]) -> datetime | None:
    value = _meta(obj).get("creationTimestamp")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def job_phase(job: Mapping[str, Any]) -> Phase:
    """The phase of a Job from its spec, conditions and counts.

    A Job that Kueue holds is suspended and labelled with its queue until admitted; a
    finished Job has a Complete or Failed condition (SuccessCriteriaMet and FailureTarget
    come first on Kubernetes ≥ 1.31, while the last pods terminate).
    """
    status = _status(job)
    true = {
        c.get("type"): c
        for c in status.get("conditions") or []
        if isinstance(c, dict) and c.get("status") == "True"
    }
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in true:
            return Phase("Succeeded")
    for kind in ("Failed", "FailureTarget"):
        if kind in true:
            return Phase("Failed", str(true[kind].get("reason") or ""))
    if _meta(job).get("deletionTimestamp"):
        return Phase("Terminating")
    if (job.get("spec") or {}).get("suspend"):
        queue = labels(job).get(QUEUE_LABEL)
        return Phase("Queued", f"Kueue {queue}") if queue else Phase("Suspended")
    if int(status.get("active") or 0) > 0:
        # The trainer has no readiness probe: a pod is ready once its container runs.
        return Phase("Running") if int(status.get("ready") or 0) > 0 else Phase("Pending")
    if int(status.get("failed") or 0) > 0:
        return Phase("Pending", f"retry after {status['failed']} failed")
    return Phase("Pending")


@dataclass(frozen=True)
class PodsView:
    """The pods of one run, summed up for one table row."""

    state: str = DASH
    restarts: int | None = None
    nodes: str = DASH


def pod_state(pod: Mapping[str, Any]) -> str:
    """One pod's state: what a user would look for in ``kubectl describe``."""
    status = _status(pod)
    if _meta(pod).get("deletionTimestamp"):
        return "Terminating"
    if status.get("reason") == "Evicted":
        return "Evicted"
    container = _container(pod)
    state = container.get("state") or {}
    waiting, terminated = state.get("waiting"), state.get("terminated")
    if isinstance(waiting, dict) and waiting.get("reason"):
        last = ((container.get("lastState") or {}).get("terminated")) or {}
        code = last.get("exitCode")
        return str(waiting["reason"]) + (f" (exit {code})" if code is not None else "")
    if isinstance(terminated, dict):
        reason = str(terminated.get("reason") or "Terminated")
        code = terminated.get("exitCode")
        return f"{reason} (exit {code})" if code is not None else reason
    if isinstance(state.get("running"), dict):
        return "Running"
    phase = str(status.get("phase") or "Pending")
    unscheduled = next(
        (
            c
            for c in status.get("conditions") or []
            if isinstance(c, dict)
            and c.get("type") == "PodScheduled"
            and c.get("status") == "False"
        ),
        None,
    )
    if unscheduled is not None:
        return f"{phase} ({unscheduled.get('reason') or 'Unschedulable'})"
    return phase


def _container(pod: Mapping[str, Any]) -> dict[str, Any]:
    statuses = [s for s in _status(pod).get("containerStatuses") or [] if isinstance(s, dict)]
    return next(
        (s for s in statuses if s.get("name") == CONTAINER), statuses[0] if statuses else {}
    )


def pod_index(pod: Mapping[str, Any]) -> int:
    """The completion index (machine rank) of a pod of an Indexed Job; 0 otherwise."""
    value = labels(pod).get(INDEX_LABEL) or (_meta(pod).get("annotations") or {}).get(INDEX_LABEL)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def newest(pods: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The pod created last (a retry replaces a failed pod with a newer one)."""
    ordered = sorted(pods, key=lambda p: (created(p) or datetime.min.replace(tzinfo=UTC), _name(p)))
    return dict(ordered[-1]) if ordered else None


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name") or "")


def pods_view(pods: Sequence[Mapping[str, Any]]) -> PodsView:
    """Rank 0's newest pod, unless another rank's newest pod is in trouble; restarts count
    container restarts plus pods that replaced a failed one."""
    if not pods:
        return PodsView()
    ranks: dict[int, list[Mapping[str, Any]]] = {}
    for pod in pods:
        ranks.setdefault(pod_index(pod), []).append(pod)
    current = {rank: newest(group) or {} for rank, group in sorted(ranks.items())}
    states = {rank: pod_state(pod) for rank, pod in current.items()}
    shown = min(states)
    for rank, state in states.items():
        if state.split(" ")[0] not in ("Running", "Completed", *_ON_THE_WAY) and rank != shown:
            shown = rank
            break
    state = states[shown]
    if len(current) > 1:
        state = f"rank {shown}: {state}"
    restarts = len(pods) - len(current)
    restarts += sum(int(_container(p).get("restartCount") or 0) for p in pods)
    nodes = [str((p.get("spec") or {}).get("nodeName") or "") for p in current.values()]
    return PodsView(state, restarts, ", ".join(n for n in nodes if n) or DASH)


def params_of(job: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep parameters the Job was rendered with (its ``kubetune.io/params``)."""
    raw = (_meta(job).get("annotations") or {}).get(PARAMS_ANNOTATION)
    try:
        params = json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        return {}
    return params if isinstance(params, dict) else {}


# --- pods that will never start on their own -----------------------------------------------

#: A pod waiting in ContainerCreating this long is worth a line: a volume that cannot mount,
#: or an image pull slower than a CUDA image's usual few minutes.
SLOW_START = timedelta(minutes=10)
README_SECRETS = 'README "Secrets for S3 and W&B"'
SECRETS_HINT = f"create it ({README_SECRETS})"
#: The kubelet's words (CreateContainerConfigError): ``secret "x" not found``,
#: ``configmap "x" not found``, ``couldn't find key K in Secret ns/x``.
_MISSING_OBJECT = re.compile(r'\b(secret|configmap)s? "(?P<name>[^"]+)" not found', re.I)
_MISSING_KEY = re.compile(
    r"couldn't find key (?P<key>\S+) in (?P<kind>Secret|ConfigMap) (?P<ns>[^/\s]+)/(?P<name>\S+)"
)
_PULL_REFUSED = re.compile(
    r"unauthorized|authentication required|access denied|denied|forbidden|\b401\b|\b403\b", re.I
)
_PULL_MISSING = re.compile(r"not found|manifest unknown|name unknown|does not exist", re.I)


def waiting_since(pod: Mapping[str, Any]) -> datetime | None:
    """When the pod began to hold its node's resources: ``status.startTime`` (the kubelet
    took it), else when it was scheduled, else created."""
    status = _status(pod)
    scheduled = next(
        (
            c.get("lastTransitionTime")
            for c in status.get("conditions") or []
            if isinstance(c, dict) and c.get("type") == "PodScheduled" and c.get("status") == "True"
        ),
        None,
    )
    for value in (status.get("startTime"), scheduled):
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
    return created(pod)


def config_map_volumes(pod: Mapping[str, Any]) -> list[str]:
    """The ConfigMaps the pod mounts (the run's spec is one)."""
    volumes = ((pod.get("spec") or {}).get("volumes")) or []
    return [
        str(v["configMap"]["name"])
        for v in volumes
        if isinstance(v, dict) and isinstance(v.get("configMap"), dict) and "name" in v["configMap"]
    ]


def is_creating(pod: Mapping[str, Any]) -> bool:
    waiting = (_container(pod).get("state") or {}).get("waiting")
    return isinstance(waiting, dict) and waiting.get("reason") == "ContainerCreating"


def stuck(
    pod: Mapping[str, Any], now: datetime, missing_config_maps: Collection[str] = ()
) -> str | None:
    """Why the pod's trainer cannot start, one line a user can act on, or None.

    Reads the container's waiting state as the kubelet reports it: CreateContainerConfigError
    (a Secret or ConfigMap an env var names is missing, or lacks the key), ErrImagePull and
    ImagePullBackOff (with the registry's answer), InvalidImageName, ErrImageNeverPull. A pod
    in ContainerCreating whose ConfigMap volume is among ``missing_config_maps`` (the caller
    looked) cannot mount it; one in ContainerCreating for longer than :data:`SLOW_START` gets
    a line too (a Secret volume, or a slow pull: the reason is only in the pod's events,
    which the submitter Role does not read).
    """
    if _meta(pod).get("deletionTimestamp"):
        return None
    container = _container(pod)
    waiting = (container.get("state") or {}).get("waiting")
    if not isinstance(waiting, dict):
        return None
    reason = str(waiting.get("reason") or "")
    message = " ".join(str(waiting.get("message") or "").split())
    namespace = str(_meta(pod).get("namespace") or "")
    since = waiting_since(pod)
    took = f" for {fmt_duration(now - since)}" if since else ""
    image = str(container.get("image") or _spec_image(pod))
    if reason == "CreateContainerConfigError":
        key = _MISSING_KEY.search(message)
        if key:
            kind = key["kind"].lower()
            where = f" ({README_SECRETS})" if kind == "secret" else ""
            return (
                f"{kind} {key['name']} in {key['ns']} has no key {key['key']}{took}: add it{where}"
            )
        missing = _MISSING_OBJECT.search(message)
        if missing and missing[1].lower() == "secret":
            return f"secret {missing['name']} not found in {namespace}{took}: {SECRETS_HINT}"
        if missing:
            return (
                f"ConfigMap {missing['name']} not found in {namespace}{took}: submit the run "
                "again (it re-creates its ConfigMap) or kubetune cancel it"
            )
        return f"the trainer cannot be set up{took}: {message or reason}"
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        if _PULL_REFUSED.search(message):
            return (
                f"image {image} cannot be pulled{took}: the registry refused ({_short(message)}); "
                "give the pod an imagePullSecret for it, or use an image it can pull"
            )
        if _PULL_MISSING.search(message):
            return (
                f"image {image} not found{took}: push it, or pin one that exists "
                "(--image / spec image)"
            )
        return f"image {image} cannot be pulled{took}: {_short(message) or reason}"
    if reason == "InvalidImageName":
        return f"image name {image} is invalid{took}: fix the spec's image"
    if reason == "ErrImageNeverPull":
        return f"image {image} is not on the node and its pull policy is Never{took}"
    if reason == "ContainerCreating":
        gone = [name for name in config_map_volumes(pod) if name in missing_config_maps]
        if gone:
            return (
                f"ConfigMap {gone[0]} not found in {namespace}{took}: submit the run again "
                "(it re-creates its ConfigMap) or kubetune cancel it"
            )
        if since is not None and now - since >= SLOW_START:
            name = _meta(pod).get("name")
            return (
                f"pod {name} has waited{took} to start (ContainerCreating): its image may still "
                f"be pulling, or a Secret volume cannot mount; kubectl describe pod -n "
                f"{namespace} {name} shows which"
            )
    return None


def _spec_image(pod: Mapping[str, Any]) -> str:
    containers = ((pod.get("spec") or {}).get("containers")) or []
    found = next((c for c in containers if isinstance(c, dict) and c.get("name") == CONTAINER), {})
    return str(found.get("image") or "")


def _short(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


@dataclass(frozen=True)
class RunRow:
    """One row of ``kubetune status``."""

    run_id: str
    params: dict[str, Any]
    phase: Phase
    pods: PodsView = field(default_factory=PodsView)
    created: datetime | None = None
    metric: str = DASH
    #: Why its newest pod cannot start (:func:`stuck`), if it cannot.
    problem: str = ""


def rows(
    jobs: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    expected: Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Mapping[str, str] | None = None,
    now: datetime | None = None,
    missing_config_maps: Collection[str] = (),
    pruned: Collection[str] = (),
) -> list[RunRow]:
    """A row per Job, plus one per ``expected`` run (id → params) that has no Job yet; a
    sweep driver's Job first. Runs in ``pruned`` (:meth:`Metrics.pruned`) show as Pruned.

    Pods belong to the Job that owns them (by uid, so the pods of an earlier Job of the same
    name never mix in), else to the Job named by their run-id label.
    """
    by_uid: dict[str, list[Mapping[str, Any]]] = {}
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        owners = [o.get("uid") for o in _meta(pod).get("ownerReferences") or []]
        for uid in owners:
            by_uid.setdefault(str(uid), []).append(pod)
        if not owners:
            by_run.setdefault(labels(pod).get(RUN_ID_LABEL, ""), []).append(pod)
    out: dict[str, RunRow] = {}
    for job in jobs:
        run_id = run_id_of(job)
        own = by_uid.get(str(_meta(job).get("uid")), []) + by_run.get(run_id, [])
        out[run_id] = RunRow(
            run_id,
            params_of(job),
            Phase(PRUNED) if run_id in pruned else job_phase(job),
            pods_view(own),
            created(job),
            (metrics or {}).get(run_id, DASH),
            _problem(own, now or datetime.now(UTC), missing_config_maps),
        )
    for run_id, params in (expected or {}).items():
        out.setdefault(run_id, RunRow(run_id, dict(params), NOT_SUBMITTED))
    # A spec's runs in the order it expands to (its sweep's order), then any others.
    drivers = sorted(run_id_of(j) for j in jobs if is_driver(j))
    rest = sorted(set(out) - set(expected or {}) - set(drivers))
    return [out[k] for k in [*drivers, *(expected or {}), *rest]]


def _problem(
    pods: Sequence[Mapping[str, Any]], now: datetime, missing_config_maps: Collection[str]
) -> str:
    """The first stuck pod among each rank's newest."""
    ranks: dict[int, list[Mapping[str, Any]]] = {}
    for pod in pods:
        ranks.setdefault(pod_index(pod), []).append(pod)
    for _rank, group in sorted(ranks.items()):
        latest = newest(group)
        problem = stuck(latest, now, missing_config_maps) if latest else None
        if problem:
            return problem
    return ""


def problem_lines(runs: Sequence[RunRow]) -> list[str]:
    """``run <id>: <problem>``, one line per run that cannot start."""
    return [f"run {row.run_id}: {row.problem}" for row in runs if row.problem]


def status_table(title: str, runs: Sequence[RunRow], now: datetime | None = None) -> Table:
    """The table of ``kubetune status``."""
    now = now or datetime.now(UTC)
    columns: list[str] = []
    for row in runs:
        columns += [p for p in row.params if p not in columns]
    cells = {c: [escape(fmt(row.params.get(c))) for row in runs] for c in columns}
    table = Table(title=escape(title))
    add_id_column(table, "run id", [row.run_id for row in runs])
    for column in columns:
        add_value_column(table, column, cells[column])
    # The phase is what a user watches for: like the ids and values, it is never squeezed out.
    table.add_column(
        "job", no_wrap=True, min_width=max((len(str(r.phase)) for r in runs), default=0)
    )
    table.add_column("pod")
    table.add_column("restarts", justify="right")
    table.add_column("node")
    table.add_column("age", justify="right")
    table.add_column("metric")
    for i, row in enumerate(runs):
        style = PHASE_STYLE.get(row.phase.name)
        phase = escape(str(row.phase))
        restarts = DASH if row.pods.restarts is None else str(row.pods.restarts)
        table.add_row(
            row.run_id,
            *(cells[c][i] for c in columns),
            f"[{style}]{phase}[/]" if style else phase,
            escape(row.pods.state),
            restarts,
            escape(row.pods.nodes),
            fmt_duration(now - row.created) if row.created else DASH,
            escape(row.metric),
        )
    return table


@dataclass(frozen=True)
class SweepSummary:
    """One line of ``kubetune list``: a sweep and how many of its runs are in each phase."""

    sweep: str
    phases: Counter[str]
    newest: datetime | None
    #: Run by a sweep driver (adaptive): its trials appear as the driver creates them.
    driven: bool = False
    #: Trials its pruner stopped (from the store's sweep.json; None: not read).
    pruned: int | None = None

    @property
    def runs(self) -> int:
        return sum(self.phases.values())


def sweeps(jobs: Iterable[Mapping[str, Any]]) -> list[SweepSummary]:
    """The Jobs grouped by their sweep label, sorted by sweep."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        grouped.setdefault(labels(job).get(SWEEP_LABEL) or DASH, []).append(job)
    out = []
    for name, group in sorted(grouped.items()):
        times = [t for t in (created(j) for j in group) if t is not None]
        trials = [j for j in group if not is_driver(j)]
        phases = Counter(job_phase(j).name for j in trials)
        driven = len(trials) != len(group)
        out.append(SweepSummary(name, phases, max(times) if times else None, driven))
    return out


def sweeps_table(namespace: str, summaries: Sequence[SweepSummary], now: datetime) -> Table:
    """The table of ``kubetune list``: one row per sweep, a column per phase any run is in."""
    shown = [p for p in PHASES if any(s.phases.get(p) for s in summaries)]
    runs = sum(s.runs for s in summaries)
    sweeps_ = f"{len(summaries)} sweep{'s' if len(summaries) != 1 else ''}"
    table = Table(
        title=f"namespace {escape(namespace)}: {sweeps_}, {runs} run{'s' if runs != 1 else ''}"
    )
    driven = any(s.driven for s in summaries)
    add_id_column(table, "sweep", [escape(s.sweep) for s in summaries])
    if driven:
        table.add_column("driver")
    table.add_column("runs", justify="right")
    for phase in shown:
        table.add_column(phase, justify="right", style=PHASE_STYLE.get(phase))
    if driven:
        table.add_column(PRUNED, justify="right", style=PHASE_STYLE[PRUNED])
    table.add_column("newest", justify="right")
    for summary in summaries:
        pruned = [] if not driven else [str(summary.pruned or DASH) if summary.driven else DASH]
        table.add_row(
            escape(summary.sweep),
            *(["driven" if summary.driven else "static"] if driven else []),
            str(summary.runs),
            *(str(summary.phases.get(p, 0) or DASH) for p in shown),
            *pruned,
            fmt_duration(now - summary.newest) if summary.newest else DASH,
        )
    return table


# --- metrics from the store ---------------------------------------------------------------


def trainer_env(job: Mapping[str, Any]) -> dict[str, str]:
    """The literal environment variables of the Job's trainer container."""
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    wanted = (CONTAINER, DRIVER_CONTAINER)
    container = next((c for c in containers if c.get("name") in wanted), {})
    return {
        str(e.get("name")): str(e["value"])
        for e in container.get("env") or []
        if isinstance(e, dict) and "value" in e
    }


def metric_cell(record: RunRecord) -> str:
    """``test accuracy 0.9821``: the run's headline metric, of the test split (else eval)."""
    found = headline_value(record.metrics, record.task)
    if found is None:
        return DASH
    split, name, value = found
    return f"{split} {name} {fmt(value)}"


class Metrics:
    """The headline metric of each run from ``run.json`` in its store, as this machine reads
    it: the store is the Job's ``KUBETUNE_STORE``; its endpoint ``$AWS_ENDPOINT_URL`` when
    set here (a port-forward to an in-cluster MinIO), else the Job's.

    A record changes only when its run does, so a value is kept per run and Job phase and
    read again only when the phase moves. Reads run concurrently with short timeouts and
    few retries: a status must not hang on an unreachable store; it shows "—".
    """

    def __init__(self, workers: int = 16) -> None:
        self.workers = workers
        self._values: dict[tuple[str, str], str] = {}
        #: run id → its record's status, for the runs read so far.
        self.statuses: dict[str, str] = {}
        self._stores: dict[tuple[str, str, str], Store | None] = {}
        self._lock = threading.Lock()

    def read(self, jobs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """run id → metric cell, for every Job."""
        keyed = {(run_id_of(j), str(job_phase(j))): j for j in jobs}
        missing = [k for k in keyed if k not in self._values]
        if missing:
            with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(missing)))) as pool:
                for key, value in zip(
                    missing, pool.map(lambda k: self._read(keyed[k]), missing), strict=True
                ):
                    self._values[key] = value
        return {run_id: self._values[(run_id, phase)] for run_id, phase in keyed}

    def _read(self, job: Mapping[str, Any]) -> str:
        env = trainer_env(job)
        uri = env.get(names.STORE_ENV)
        sweep = labels(job).get(SWEEP_LABEL) or env.get(names.SWEEP_ENV)
        if not uri or not sweep:
            return DASH
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or ""
        store = self._store(uri, endpoint, env.get("AWS_DEFAULT_REGION") or "")
        if store is None:
            return DASH
        location = RunLocation(store, sweep, env.get(names.RUN_ID_ENV) or run_id_of(job))
        try:
            record = load_record(location)
        except (KubetuneError, OSError):
            return DASH
        if record.status:
            self.statuses[location.run_id] = record.status
        return metric_cell(record)

    def pruned(self, jobs: Sequence[Mapping[str, Any]]) -> set[str]:
        """The run ids among ``jobs`` (read by :meth:`read`) whose Job completed because the
        sweep's pruner stopped them: their record says "pruned"."""
        return {
            run_id_of(j)
            for j in jobs
            if job_phase(j).name == "Succeeded" and self.statuses.get(run_id_of(j)) == "pruned"
        }

    def sweep_state(self, driver: Mapping[str, Any]) -> tuple[Any, str]:
        """The sweep summary (``sweep.json``) in the store the driver's Job names, or None and
        one line saying why it cannot be shown."""
        from kubetune.search.state import read_state

        env = trainer_env(driver)
        uri = env.get(names.STORE_ENV)
        sweep = labels(driver).get(SWEEP_LABEL) or env.get(names.SWEEP_ENV)
        if not uri or not sweep:
            return None, "the driver's Job names no store: no leaderboard"
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or ""
        store = self._store(uri, endpoint, env.get("AWS_DEFAULT_REGION") or "")
        where = f"{uri.rstrip('/')}/{sweep}/sweep.json"
        if store is None:
            return None, f"cannot open the store {uri}: no leaderboard"
        try:
            state = read_state(store, sweep)
        except (KubetuneError, OSError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return None, f"cannot read {where}: {reason}"
        if state is None:
            return None, f"no {where} yet: the driver has not started"
        return state, ""

    def _store(self, uri: str, endpoint: str, region: str) -> Store | None:
        key = (uri, endpoint, region)
        with self._lock:
            if key not in self._stores:
                self._stores[key] = _open_store(uri, endpoint, region)
            return self._stores[key]


def _open_store(uri: str, endpoint: str, region: str) -> Store | None:
    """The run's store through a client that gives up quickly (a person waits on the table)."""
    from kubetune.store import open_store

    try:
        return open_store(uri, endpoint=endpoint or None, region=region or None, patient=False)
    except (KubetuneError, ValueError, ImportError):
        return None
