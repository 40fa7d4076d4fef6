"""``kubetune submit``: create every rendered run's objects in a cluster, concurrently.

Each run is one unit of work on a thread pool (:data:`WORKERS` runs in flight; the
:class:`~kubetune.cluster.Cluster` is shared, its connection pool sized for them):

1. ``GET`` the run's Job. The Job is named by the run id, and the run id is a hash of the
   resolved spec, so a Job of that name whose ``kubetune.io/spec-hash`` annotation matches is
   this very run: it is left alone ("unchanged", nothing is sent). A Job of that name with
   another hash, or none, was made by something else and is never touched ("conflict").
   Jobs are never mutated: a changed spec is a new run id, hence a new Job.
2. Otherwise server-side apply the run's objects in install order (NetworkPolicy, ConfigMap,
   Service for multi-node, then the Job that mounts the ConfigMap). Applying is idempotent,
   so a submit cut off halfway is finished by running it again.

``dry_run`` sends the same requests with ``dryRun=All``: the API server validates and admits
every object (RBAC, quota, webhooks) and stores none.

Failures that every run would hit (no route to the API server, credentials refused, RBAC,
a missing namespace) stop the submit at once with one error; the rest (a quota that is full,
an object the server rejects) are reported per run.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import yaml

from kubetune import cluster as kube
from kubetune.errors import ConfigError, KubetuneError
from kubetune.kube_errors import (
    Action,
    ForbiddenError,
    NamespaceMissingError,
    NotFoundError,
    UnauthorizedError,
    UnreachableError,
)
from kubetune.render import Rendered
from kubetune.sweep import ResolvedRun

#: Runs submitted at once.
WORKERS = 16
SPEC_HASH = "kubetune.io/spec-hash"
CHART_LABEL = "helm.sh/chart"
#: Errors that every run would hit the same way: stop, say it once.
FATAL: tuple[type[KubetuneError], ...] = (
    UnreachableError,
    UnauthorizedError,
    ForbiddenError,
    NamespaceMissingError,
)
KUEUE_API = "/apis/kueue.x-k8s.io"

CREATED, UNCHANGED, CONFLICT, FAILED = "created", "unchanged", "conflict", "failed"
#: libyaml's loader where installed: ~10× faster, and the workers parse while holding the GIL.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Outcome:
    """What became of one run."""

    run_id: str
    result: str  # created | unchanged | conflict | failed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result in (CREATED, UNCHANGED)


def check_queues(target: kube.Cluster, namespace: str, runs: Sequence[ResolvedRun]) -> None:
    """Every Kueue LocalQueue the runs name exists in ``namespace``: a Job naming a missing
    queue is never admitted and waits, suspended, without a word.

    Raises:
        ConfigError: the LocalQueue, or Kueue itself, is missing.
    """
    for queue in sorted({run.spec.resources.queue for run in runs if run.spec.resources.queue}):
        if target.get(kube.LOCAL_QUEUE, namespace, queue) is None:
            raise ConfigError(_missing_queue(target, namespace, queue))


def _missing_queue(target: kube.Cluster, namespace: str, queue: str) -> str:
    """Whether the LocalQueue is missing, or the whole kueue.x-k8s.io API group."""
    action = Action("get", "localqueues.kueue.x-k8s.io", None, "the Kueue API")
    try:
        target.request("GET", KUEUE_API, action)
    except NotFoundError:
        return (
            f"resources.queue: Kueue is not installed in this cluster (no {kube.LOCAL_QUEUE.group}"
            " API); install Kueue or remove resources.queue"
        )
    return (
        f"resources.queue: Kueue LocalQueue {queue} not found in {namespace}; create it "
        "(kubectl get localqueues -A lists them) or fix resources.queue"
    )


def submit(
    rendered: Sequence[Rendered],
    target: kube.Cluster,
    namespace: str,
    *,
    dry_run: bool = False,
    workers: int = WORKERS,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Submit every run (see the module docstring); outcomes in the order of ``rendered``.

    ``progress`` is called (from worker threads) as each run finishes.

    Raises:
        KubetuneError: a failure every run would share (:data:`FATAL`); runs not yet started
            are not submitted, runs already created stay (submitting again is safe).
    """
    stop = threading.Event()

    def one(item: Rendered) -> Outcome | None:
        if stop.is_set():
            return None
        try:
            outcome = _submit_run(item, target, namespace, dry_run)
        except FATAL:
            stop.set()
            raise
        if progress is not None:
            progress(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(rendered)))) as pool:
        futures = [pool.submit(one, item) for item in rendered]
        outcomes: list[Outcome | None] = []
        error: KubetuneError | None = None
        for future in futures:
            try:
                outcomes.append(future.result())
            except FATAL as exc:
                error = error or exc
                outcomes.append(None)
    if error is not None:
        done = sum(1 for o in outcomes if o is not None and o.result == CREATED)
        if not done or dry_run:
            raise error
        runs = f"{done} run{'s' if done != 1 else ''}"
        raise type(error)(
            f"{error} ({runs} created before this; submit again once it is fixed)"
        ) from None
    return [o for o in outcomes if o is not None]


@dataclass(frozen=True)
class Manifest:
    """One rendered document: where it goes, and its YAML text, which is the apply body."""

    kind: kube.Kind
    name: str
    text: str
    chart: str = ""  # its helm.sh/chart label


#: Top-level ``apiVersion:`` / ``kind:`` lines, and ``metadata.name`` as Helm indents it.
_HEADER = re.compile(r"^(apiVersion|kind):[ \t]*[\"']?([^\"'\s]+)[\"']?[ \t]*$", re.MULTILINE)
_NAME = re.compile(
    r"^metadata:[ \t]*\n(?:[ \t]+.*\n)*?  name:[ \t]*[\"']?([^\"'\s]+)[\"']?[ \t]*$", re.MULTILINE
)
_CHART = re.compile(r"^[ \t]+helm\.sh/chart:[ \t]*[\"']?([^\"'\s]+)", re.MULTILINE)


def manifests(item: Rendered) -> list[Manifest]:
    """A run's documents, each sent as the text ``kubetune render`` prints.

    Where each goes is read from its header lines rather than by parsing it: parsing a run's
    YAML takes a few milliseconds of pure Python holding the GIL, which made it most of
    submit's client-side work. A document the pattern does not fit is parsed.
    """
    out = []
    for _template, text in item.documents:
        header = dict(_HEADER.findall(text))
        name = _NAME.search(text)
        chart = _CHART.search(text)
        kind = kube.APPLIED_KINDS.get((header.get("apiVersion", ""), header.get("kind", "")))
        if kind is None or name is None:
            doc = yaml.load(text + "\n", Loader=_Loader)
            kind = kube.kind_of(doc)
            labels = doc["metadata"].get("labels") or {}
            out.append(Manifest(kind, doc["metadata"]["name"], text, labels.get(CHART_LABEL, "")))
        else:
            out.append(Manifest(kind, name[1], text, chart[1] if chart else ""))
    return out


def _submit_run(item: Rendered, target: kube.Cluster, namespace: str, dry_run: bool) -> Outcome:
    run_id = item.run.run_id
    docs = manifests(item)
    job = next(d for d in docs if d.kind is kube.JOB)
    try:
        existing = target.get(kube.JOB, namespace, job.name)
        if existing is not None:
            return _existing(run_id, existing, item.run.spec_hash, job.chart)
        for doc in docs:
            # The document ends with a newline as `kubetune render | kubectl apply` reads it,
            # which a final `|` block keeps (the ConfigMap's spec.yaml).
            target.apply_text(doc.kind, doc.name, namespace, doc.text + "\n", dry_run=dry_run)
    except FATAL:
        raise
    except KubetuneError as exc:
        return Outcome(run_id, FAILED, str(exc))
    return Outcome(run_id, CREATED, "dry run: validated, not stored" if dry_run else "")


def _existing(run_id: str, existing: dict[str, Any], ours: str, chart: str) -> Outcome:
    """The outcome for a run whose Job already exists: unchanged, or a conflict."""
    from kubetune.jobstatus import job_phase

    metadata = existing.get("metadata") or {}
    theirs = (metadata.get("annotations") or {}).get(SPEC_HASH)
    where = f"Job {metadata.get('namespace', '')}/{metadata.get('name', run_id)}"
    if metadata.get("deletionTimestamp"):
        return Outcome(run_id, CONFLICT, f"{where} is being deleted; submit again once it is gone")
    if theirs != ours:
        held = f"spec hash {theirs[:12]}…" if theirs else f"no {SPEC_HASH} annotation"
        return Outcome(
            run_id,
            CONFLICT,
            f"{where} exists with {held}; kubetune never changes a Job: delete it "
            f"(kubetune cancel {run_id}) and submit again",
        )
    notes = [str(job_phase(existing))]
    theirs_chart = (metadata.get("labels") or {}).get(CHART_LABEL)
    if theirs_chart and theirs_chart != chart:
        notes.append(f"rendered by {theirs_chart}")
    return Outcome(run_id, UNCHANGED, ", ".join(notes))
