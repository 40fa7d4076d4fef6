"""``kubetune submit``: create every rendered run's objects in a cluster, concurrently.

Each run is one unit of work on a thread pool (:data:`WORKERS` runs in flight; the
:class:`~kubetune.kube.client.Cluster` is shared, its connection pool sized for them):

1. ``GET`` the run's Job. The Job is named by the run id, and the run id is a hash of the
   resolved spec, so a Job of that name whose ``kubetune.io/spec-hash`` annotation matches is
   this very run: it is left alone ("unchanged"; only its dependents are checked, step 3).
   A Job of that name with another hash, or none, was made by something else and is never
   touched ("conflict"). Jobs are never mutated: a changed spec is a new run id, hence a new
   Job.
2. Otherwise (:func:`create`) server-side apply the run's dependents — NetworkPolicy,
   ConfigMap, Service for multi-node — then the Job that mounts the ConfigMap, so its pod
   never starts without it. The Job is applied without ``force``: one that appeared
   meanwhile is a 409, never taken over.
3. Then a JSON merge patch of each dependent's ``ownerReferences``: a reference to the
   Job's uid (known only once it exists). When the Job goes (``ttlSecondsAfterFinished``,
   whose controller deletes with Foreground propagation; ``kubectl delete job``,
   Background), the garbage collector deletes them too. The ConfigMap is adopted last, so
   a ConfigMap that names the Job says the whole run is adopted: a resubmit of an unchanged
   run reads it (one ``GET``) and adopts again only when a submit was cut off before.

Every step is idempotent, so a submit cut off anywhere is finished by running it again.

``dry_run`` sends the same requests with ``dryRun=All``: the API server validates and admits
every object (RBAC, quota, webhooks) and stores none.

Failures that every run would hit (no route to the API server, credentials refused, RBAC,
a missing namespace) stop the submit at once with one error; the rest (a quota that is full,
an object the server rejects) are reported per run.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubetune._yaml import load_rendered
from kubetune.errors import ConfigError, Interrupted, KubetuneError
from kubetune.kube import client as kube
from kubetune.kube.errors import (
    ForbiddenError,
    NamespaceMissingError,
    NotFoundError,
    UnauthorizedError,
    UnreachableError,
)
from kubetune.kube.names import CHART_LABEL, SPEC_HASH_ANNOTATION
from kubetune.render import Rendered
from kubetune.sweep import ResolvedRun

#: Runs submitted at once.
WORKERS = 16
#: Errors that every run would hit the same way: stop, say it once.
FATAL: tuple[type[KubetuneError], ...] = (
    UnreachableError,
    UnauthorizedError,
    ForbiddenError,
    NamespaceMissingError,
)

CREATED, UNCHANGED, CONFLICT, FAILED = "created", "unchanged", "conflict", "failed"
#: A run of a static sweep submitted again (:class:`Stored`): its Job had failed or was gone
#: and its record is not completed, so it was created again and resumes from its checkpoint;
#: or its record is completed (or pruned), so nothing was created although its Job is gone.
RESUMED, COMPLETED = "resumed", "completed"
#: How long a replacement waits for the old Job (and its pods) to be gone: the trainer's grace
#: period to store a checkpoint, and then some.
REPLACE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Stored:
    """What the store says of a run: its record's status (None: no run.json) and its newest
    checkpoint's step."""

    status: str | None = None
    checkpoint: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "pruned")

    def resumes(self) -> str:
        return f"resumes from step {self.checkpoint}" if self.checkpoint else "starts afresh"


@dataclass(frozen=True)
class Outcome:
    """What became of one run."""

    run_id: str
    result: str  # created | unchanged | conflict | failed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result in (CREATED, UNCHANGED, RESUMED, COMPLETED)


def kueue_version(target: kube.Cluster) -> str | None:
    """The ``kueue.x-k8s.io`` version to use: the server's preferred one if kubetune knows
    it, else the newest known one it serves; None where Kueue is not installed.

    Raises:
        ConfigError: Kueue serves only versions kubetune does not know.
    """
    group = target.api_group(kube.KUEUE_GROUP)
    if group is None:
        return None
    served = [str(v.get("version")) for v in group.get("versions") or [] if isinstance(v, dict)]
    preferred = str((group.get("preferredVersion") or {}).get("version") or "")
    if preferred in kube.KUEUE_VERSIONS:
        return preferred
    known = [v for v in kube.KUEUE_VERSIONS if v in served]
    if known:
        return known[0]
    raise ConfigError(
        f"resources.queue: this cluster's Kueue serves {kube.KUEUE_GROUP} "
        f"{', '.join(served) or 'no version'}; kubetune knows {', '.join(kube.KUEUE_VERSIONS)}: "
        "upgrade kubetune or Kueue"
    )


def check_queues(target: kube.Cluster, namespace: str, named: Iterable[str | None]) -> None:
    """Every Kueue LocalQueue ``named`` (each run's resources.queue) exists in
    ``namespace``: a Job naming a missing queue is never admitted and waits, suspended,
    without a word. The LocalQueue is read at the version the cluster serves (API
    discovery), not a hard-coded one.

    Raises:
        ConfigError: the LocalQueue, or Kueue itself, is missing.
    """
    queues = sorted({queue for queue in named if queue})
    if not queues:
        return
    version = kueue_version(target)
    if version is None:
        raise ConfigError(
            f"resources.queue: Kueue is not installed in this cluster (no {kube.KUEUE_GROUP}"
            " API); install Kueue or remove resources.queue"
        )
    for queue in queues:
        if target.get(kube.local_queue(version), namespace, queue) is None:
            raise ConfigError(
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
    stored: Callable[[ResolvedRun], Stored] | None = None,
) -> list[Outcome]:
    """Submit every run (see the module docstring); outcomes in the order of ``rendered``.

    ``progress`` is called (from worker threads) as each run finishes. With ``stored`` (what
    the store says of a run) a sweep submitted again resumes: a run whose record is completed
    or pruned is not created again, even if its Job is gone ("completed"); a run whose Job
    failed (preempted past its backoffLimit, say) or is gone, and whose record is not
    completed, is created again (a failed Job is replaced: deleted, waited for) and resumes
    from its checkpoint ("resumed").

    Raises:
        KubetuneError: a failure every run would share (:data:`FATAL`); runs not yet started
            are not submitted, runs already created stay (submitting again is safe).
    """
    stop = threading.Event()

    def one(item: Rendered) -> Outcome | None:
        if stop.is_set():
            return None
        try:
            outcome = _submit_run(item, target, namespace, dry_run, stored)
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
        try:
            for future in futures:
                try:
                    outcomes.append(future.result())
                except FATAL as exc:
                    error = error or exc
                    outcomes.append(None)
        except KeyboardInterrupt as exc:
            # Without this the pool would go on to submit every run before the CLI exits.
            stop.set()
            pool.shutdown(cancel_futures=True)
            raise _interrupted(futures, len(rendered), dry_run) from exc
    if error is not None:
        done = sum(1 for o in outcomes if o is not None and o.result == CREATED)
        if not done or dry_run:
            raise error
        runs = f"{done} run{'s' if done != 1 else ''}"
        raise type(error)(
            f"{error} ({runs} created before this; submit again once it is fixed)"
        ) from error
    return [o for o in outcomes if o is not None]


def _interrupted(futures: list[Future[Outcome | None]], total: int, dry_run: bool) -> Interrupted:
    """What a Ctrl-C during a submit left in the cluster (the runs in flight finished)."""
    if dry_run:
        return Interrupted("dry run: nothing stored")
    done = [f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()]
    created = sum(1 for o in done if o is not None and o.result == CREATED)
    return Interrupted(
        f"{created} of {total} runs created before the stop; submitting again is safe: "
        "it creates the rest"
    )


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
            doc = load_rendered(text + "\n")
            kind = kube.kind_of(doc)
            labels = doc["metadata"].get("labels") or {}
            out.append(Manifest(kind, doc["metadata"]["name"], text, labels.get(CHART_LABEL, "")))
        else:
            out.append(Manifest(kind, name[1], text, chart[1] if chart else ""))
    return out


def _submit_run(
    item: Rendered,
    target: kube.Cluster,
    namespace: str,
    dry_run: bool,
    stored: Callable[[ResolvedRun], Stored] | None = None,
) -> Outcome:
    from kubetune.kube.status import job_phase

    run_id = item.run.run_id
    docs = manifests(item)
    job = job_manifest(docs)
    note = "dry run: validated, not stored" if dry_run else ""
    try:
        existing = target.get(kube.JOB, namespace, job.name)
        record = (
            stored(item.run) if stored is not None and isinstance(item.run, ResolvedRun) else None
        )
        if existing is not None:
            outcome = _existing(run_id, existing, item.run.spec_hash, job.chart)
            failed = job_phase(existing).name == "Failed"
            if outcome.result != UNCHANGED or not failed or record is None:
                if outcome.result == UNCHANGED and not dry_run:
                    adopt(target, namespace, docs, existing, check=True)
                return outcome
            if record.finished:
                return Outcome(run_id, COMPLETED, f"{record.status} in the store; its Job failed")
            if not dry_run:
                replace_job(target, namespace, docs, existing)
            return Outcome(run_id, RESUMED, note or f"its Job had failed: {record.resumes()}")
        if record is not None and record.finished:
            return Outcome(run_id, COMPLETED, f"{record.status} in the store; not created again")
        create(target, namespace, docs, dry_run=dry_run)
        if record is not None and record.status is not None:
            return Outcome(run_id, RESUMED, note or f"its Job was gone: {record.resumes()}")
    except FATAL:
        raise
    except KubetuneError as exc:
        return Outcome(run_id, FAILED, str(exc))
    return Outcome(run_id, CREATED, note)


def replace_job(
    target: kube.Cluster,
    namespace: str,
    docs: Sequence[Manifest],
    existing: Mapping[str, Any],
    *,
    timeout_s: int = REPLACE_TIMEOUT_S,
) -> dict[str, Any]:
    """Delete the run's Job ``existing`` (that very one: a uid precondition; Foreground, so
    its pods are gone first, each trainer storing a checkpoint on SIGTERM), wait until it is
    gone, and create the run's objects again. Returns the new Job as stored.

    Raises:
        ClusterError: the old Job is still there after ``timeout_s``, or a request failed.
    """
    metadata = existing.get("metadata") or {}
    name = str(metadata.get("name") or job_manifest(docs).name)
    uid = str(metadata.get("uid") or "")
    if not metadata.get("deletionTimestamp"):
        target.delete(kube.JOB, namespace, name, "Foreground", uid=uid or None)
    if uid:
        target.wait_deleted(kube.JOB, namespace, name, uid, timeout_s)
    return create(target, namespace, docs)


def job_manifest(docs: Sequence[Manifest]) -> Manifest:
    return next(d for d in docs if d.kind is kube.JOB)


def dependents(docs: Sequence[Manifest]) -> list[Manifest]:
    """The objects that serve the Job, in install order, the ConfigMap last (see
    :func:`adopt`)."""
    others = [d for d in docs if d.kind is not kube.JOB]
    return sorted(others, key=lambda d: d.kind is kube.CONFIG_MAP)


def create(
    target: kube.Cluster, namespace: str, docs: Sequence[Manifest], *, dry_run: bool = False
) -> dict[str, Any]:
    """Create a run whose Job does not exist: its dependents, its Job, then the dependents'
    ownerReferences to the Job. Returns the Job as stored."""
    for doc in docs:
        if doc.kind is not kube.JOB:
            _apply(target, namespace, doc, dry_run=dry_run)
    job = _apply(target, namespace, job_manifest(docs), dry_run=dry_run, force=False)
    if not dry_run:
        adopt(target, namespace, docs, job)
    return job


def adopt(
    target: kube.Cluster,
    namespace: str,
    docs: Sequence[Manifest],
    job: dict[str, Any],
    *,
    check: bool = False,
) -> None:
    """Give the run's dependents an ownerReference to ``job``, so they go when it goes.

    A JSON merge patch of ``metadata.ownerReferences`` (the list is replaced whole, so a
    reference to an earlier Job of this name goes); a dependent deleted meanwhile is applied
    again, whole, with the reference. With ``check``, the ConfigMap (adopted last) is read
    first and nothing is sent if it already names the Job.
    """
    metadata = job.get("metadata") or {}
    uid = str(metadata.get("uid") or "")
    if not uid:
        return
    if check:
        config = next((d for d in docs if d.kind is kube.CONFIG_MAP), None)
        stored = target.get(kube.CONFIG_MAP, namespace, config.name) if config else None
        refs = ((stored or {}).get("metadata") or {}).get("ownerReferences") or []
        if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
            return
    reference = owner_reference(str(metadata.get("name") or job_manifest(docs).name), uid)
    patch = {"metadata": {"ownerReferences": [reference]}}
    for doc in dependents(docs):
        try:
            target.merge_patch(doc.kind, doc.name, namespace, patch)
        except NotFoundError:
            # Deleted meanwhile (the collector took it for an earlier Job of this name,
            # or a person did): made again, whole, with the reference.
            _apply(target, namespace, with_owner(doc, reference))


def owner_reference(job_name: str, uid: str) -> dict[str, Any]:
    """A reference to the run's Job. Not ``controller`` (no controller manages the object)
    and not ``blockOwnerDeletion``: setting it needs the right to update the Job's finalizers
    where the OwnerReferencesPermissionEnforcement admission plugin runs, and only holds a
    Foreground deletion of the Job until these small objects are gone."""
    return {"apiVersion": kube.JOB.api_version, "kind": kube.JOB.kind, "name": job_name, "uid": uid}


#: The top-level ``metadata:`` line of a rendered document.
_METADATA = re.compile(r"^metadata:[ \t]*\n", re.MULTILINE)


def with_owner(doc: Manifest, reference: dict[str, Any]) -> Manifest:
    """The manifest with ``metadata.ownerReferences: [reference]``, written as a JSON flow
    sequence under the ``metadata:`` line (YAML reads it), so the document is not parsed."""
    line = f"  ownerReferences: [{json.dumps(reference)}]\n"
    found = _METADATA.search(doc.text)
    if found is not None:
        text = doc.text[: found.end()] + line + doc.text[found.end() :]
    else:
        data = load_rendered(doc.text + "\n")
        data.setdefault("metadata", {})["ownerReferences"] = [reference]
        text = json.dumps(data)
    return Manifest(doc.kind, doc.name, text, doc.chart)


def _apply(
    target: kube.Cluster,
    namespace: str,
    doc: Manifest,
    *,
    dry_run: bool = False,
    force: bool = True,
) -> dict[str, Any]:
    # The document ends with a newline as `kubetune render | kubectl apply` reads it, which a
    # final `|` block keeps (the ConfigMap's spec.yaml).
    return target.apply_text(
        doc.kind, doc.name, namespace, doc.text + "\n", dry_run=dry_run, force=force
    )


def _existing(run_id: str, existing: dict[str, Any], ours: str, chart: str) -> Outcome:
    """The outcome for a run whose Job already exists: unchanged, or a conflict."""
    from kubetune.kube.status import job_phase

    metadata = existing.get("metadata") or {}
    theirs = (metadata.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    where = f"Job {metadata.get('namespace', '')}/{metadata.get('name', run_id)}"
    if metadata.get("deletionTimestamp"):
        return Outcome(run_id, CONFLICT, f"{where} is being deleted; submit again once it is gone")
    if theirs != ours:
        held = f"spec hash {theirs[:12]}…" if theirs else f"no {SPEC_HASH_ANNOTATION} annotation"
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


# --- how an existing Job differs from a rendered one --------------------------------------


def pod_differences(ours: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """What differs between the pod template of a rendered Job and a stored one, in the
    fields kubetune varies for one run (image, command, args, literal environment): the API
    server fills defaults into the rest (imagePullPolicy, terminationMessagePath, a fieldRef's
    apiVersion…), so the whole templates never compare equal. ``["image a → b", …]``."""
    mine, theirs = _containers(ours), _containers(live)
    out = []
    for name, container in mine.items():
        other = theirs.get(name)
        if other is None:
            out.append(f"no container {name}")
            continue
        for key in ("image", "command", "args"):
            if container.get(key) != other.get(key):
                out.append(f"{name} {key} {_show(other.get(key))} → {_show(container.get(key))}")
        env, live_env = _literal_env(container), _literal_env(other)
        for var in sorted(set(env) | set(live_env)):
            if env.get(var) != live_env.get(var):
                out.append(f"{var} {_show(live_env.get(var))} → {_show(env.get(var))}")
    return out


def _containers(job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    pod = (((job.get("spec") or {}).get("template") or {}).get("spec")) or {}
    return {
        str(c.get("name")): c
        for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
        if isinstance(c, dict)
    }


def _literal_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(e.get("name")): str(e.get("value", ""))
        for e in container.get("env") or []
        if isinstance(e, dict) and "valueFrom" not in e
    }


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)


# --- what the store says before a submit ---------------------------------------------------


class StoreView:
    """The store of a static sweep as ``kubetune submit`` reads it before creating anything:
    each run's record status and newest checkpoint (:class:`Stored`, for resuming), and the
    compute of the sweep's finished runs (for the cost estimate). A store that cannot be
    read says nothing: the submit goes on as if it were empty."""

    def __init__(self, runs: Sequence[ResolvedRun]) -> None:
        from kubetune.store import RunLocation, endpoint_here, open_store

        self.locations: dict[str, Any] = {}
        self.stores: dict[tuple[str, str, str], Any] = {}
        for run in runs:
            storage = run.spec.storage
            if storage is None:
                continue
            key = (storage.uri, storage.endpoint or "", storage.region or "")
            if key not in self.stores:
                try:
                    self.stores[key] = open_store(
                        storage.uri,
                        endpoint=endpoint_here(storage.endpoint),
                        region=storage.region,
                        patient=False,
                    )
                except (KubetuneError, ValueError, ImportError):
                    self.stores[key] = None
            if self.stores[key] is not None:
                self.locations[run.run_id] = RunLocation(self.stores[key], run.sweep, run.run_id)

    def stored(self, run: ResolvedRun) -> Stored:
        """What the store says of ``run`` (nothing, where it cannot be read)."""
        from kubetune.store import StoreError
        from kubetune.store.record import read_run

        location = self.locations.get(run.run_id)
        if location is None:
            return Stored()
        folder = read_run(location)
        if folder.state != "written":
            return Stored()
        checkpoint = None
        if folder.record.status not in ("completed", "pruned"):
            try:
                steps = location.checkpoints()
            except (StoreError, OSError):
                steps = []
            checkpoint = steps[-1] if steps else None
        return Stored(folder.record.status, checkpoint)

    def finished_compute(self, sweep: str) -> list[Any]:
        """The ``compute`` of every completed run of ``sweep`` in the runs' stores."""
        from kubetune.store import RunLocation, StoreError
        from kubetune.store.record import read_run

        out = []
        for store in {id(s): s for s in self.stores.values() if s is not None}.values():
            try:
                keys = store.list_keys(f"{sweep}/")
            except (StoreError, OSError):
                continue
            run_ids = sorted(
                {p[1] for p in (k.split("/") for k in keys) if len(p) == 3 and p[2] == "run.json"}
            )
            for run_id in run_ids:
                folder = read_run(RunLocation(store, sweep, run_id))
                record = folder.record
                if folder.state == "written" and record.status == "completed" and record.compute:
                    out.append(record.compute)
        return out


def cost_line(runs: Sequence[ResolvedRun], finished: Sequence[Any]) -> str:
    """The estimated cost of a static sweep: runs × GPUs (or CPUs) each, from the mean
    ``compute`` of the sweep's finished runs (``finished``, run.json's Compute), else the
    upper bound every Job's ``activeDeadlineSeconds`` allows. Says which."""
    from kubetune import spec as specmod

    n = len(runs)
    if not n:
        return ""
    res = runs[0].spec.resources
    gpus = res.gpus * res.nodes
    cpus = specmod.quantity_value(str(res.cpu)) * res.nodes
    unit = "GPU" if gpus else "CPU"
    each = f"{gpus:g} GPU" if gpus else f"{cpus:g} CPU"
    head = f"{n} run{'s' if n != 1 else ''} × {each}{'s' if (gpus or cpus) != 1 else ''} each"
    if finished:
        field = "gpu_seconds" if gpus else "cpu_seconds"
        mean = sum(getattr(c, field) for c in finished) / len(finished)
        wall = sum(c.wall_seconds for c in finished) / len(finished)
        return (
            f"estimated cost: {head} ≈ {n * mean / 3600:.3g} {unit}-hours "
            f"(mean of {len(finished)} finished run{'s' if len(finished) != 1 else ''} of this "
            f"sweep in the store: {wall / 3600:.2g} h each)"
        )
    hours = res.active_deadline_seconds / 3600
    per = gpus if gpus else cpus
    return (
        f"estimated cost: {head}: at most {n * per * hours:.4g} {unit}-hours (upper bound: "
        f"resources.active_deadline_seconds {hours:g} h per run; no finished run of this "
        "sweep in the store yet)"
    )
