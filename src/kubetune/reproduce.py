"""``kubetune reproduce``: a stored run's spec and record → the same manifests, or a re-run here.

A run folder holds the resolved spec (``spec.yaml``) and the record (``run.json``). From them
this module rebuilds the :class:`~kubetune.sweep.ResolvedRun` that ``kubetune render`` or
``kubetune run`` had, after checking that the stored spec still hashes to the run id (an edited
spec is a different run). Then:

- :func:`render` gives the manifests ``kubetune render SPEC --run RUN_ID`` gave, byte for byte,
  pinned to the recorded image;
- :func:`submit` creates them in the current kube context, after looking at what is there:
  it never applies over an existing Job (see :func:`submit`);
- :func:`run_local` re-runs the spec through ``kubetune run``'s own code path into another
  store, and :func:`compare` judges its final metrics against the record within the spec's
  ``reproduce.tolerance``; :func:`environment_differences` says beforehand what differs here.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeGuard

from kubetune import local, preflight, sweep
from kubetune import render as rendermod
from kubetune import spec as specmod
from kubetune._yaml import load_rendered
from kubetune.errors import ConfigError, KubetuneError
from kubetune.kube import client as cluster
from kubetune.kube.names import POD_TEMPLATE_ANNOTATION, SPEC_HASH_ANNOTATION, STORE_ENV
from kubetune.local import Display, Outcome
from kubetune.runs import is_timing, locate
from kubetune.stage import copy_inputs, local_fields, reach
from kubetune.store import (
    NotFoundError,
    RunLocation,
    StoreError,
    check_uri,
    file_uri_path,
    open_store,
)
from kubetune.store.record import Metrics, Render, RunRecord, UnreadableError, load_record, read_run
from kubetune.sweep import ResolvedRun

#: Where ``reproduce --local`` puts its runs unless told otherwise.
DEFAULT_STORE = "file://./reproductions"
#: The splits whose final metrics a reproduction is judged on.
SPLITS = ("eval", "test")
_DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Recorded:
    """A stored run: where it is, its spec and record, and the run they rebuild."""

    location: RunLocation
    spec: specmod.JobSpec
    record: RunRecord
    run: ResolvedRun

    @property
    def status(self) -> str:
        return self.record.status or "—"

    @property
    def render_info(self) -> Render:
        return self.record.render


def load(uri: str) -> Recorded:
    """Read a run folder and rebuild its run.

    Raises:
        ConfigError: ``uri`` is not one run, its files are missing or unreadable, or the
            stored spec no longer hashes to the run id.
    """
    location = locate(uri)
    store, url = location.store, location.url
    try:
        record = load_record(location)
    except NotFoundError as exc:
        raise ConfigError(
            f"{url}: no run.json yet (the run is starting); try again once it runs"
        ) from exc
    except UnreadableError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        text = store.read_text(location.key("spec.yaml"))
    except (StoreError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{url}: cannot read the run's files: {exc}") from exc
    try:
        spec = specmod.loads(text, f"{url}/spec.yaml")
    except KubetuneError as exc:
        raise ConfigError(f"{url}/spec.yaml is not a valid spec: {exc}") from exc
    if spec.sweep is not None:
        raise ConfigError(f"{url}/spec.yaml has a sweep block; a run's spec is one resolved run")
    expected = sweep.run_id(spec)
    if expected != location.run_id:
        raise ConfigError(
            f"{url}/spec.yaml hashes to run id {expected}, not {location.run_id}: the stored "
            "spec was changed after the run; restore it, or run it as a new job"
        )
    run = ResolvedRun(
        location.run_id,
        record.sweep or location.sweep,
        0,
        spec,
        dict(record.params),
        inputs=dict(record.inputs),  # staged inputs: the pod's KUBETUNE_INPUTS
    )
    return Recorded(location, spec, record, run)


# --- --render and --submit ----------------------------------------------------------------


def is_digest(image: str | None) -> bool:
    """Whether an image reference pins its bits (``…@sha256:<64 hex>``)."""
    return bool(image and _DIGEST.match(image))


def render(
    recorded: Recorded,
    namespace: str | None = None,
    image: str | None = None,
    store: str | None = None,
    endpoint: str | None = None,
) -> tuple[list[rendermod.Rendered], list[str]]:
    """The run's manifests, and warnings about what may make them run differently.

    The namespace is ``namespace`` if given, else the one the run was rendered for. With the
    recorded image pinned by digest, the manifests are byte-identical to the original
    ``kubetune render``. ``image`` (a digest) pins a run recorded with a tag, and ``store``
    (with its ``endpoint``) sends the rerun's outputs to another store (a MinIO beside a kind
    cluster, say): only the pod's image and environment change, not the spec, so the run id
    and the spec in the ConfigMap stay the recorded ones.

    Raises:
        ConfigError: ``image`` is not a digest reference, ``store`` is not s3://, or the spec
            cannot be rendered.
    """
    warnings = _chart_warnings(recorded)
    recorded_ns = recorded.render_info.namespace or None
    if namespace and recorded_ns and namespace != recorded_ns:
        warnings.append(
            f"the run was rendered for namespace {recorded_ns}; these manifests use {namespace}"
        )
    if store is not None and check_uri(store, "--store") != "s3":
        raise ConfigError(f"--store {store}: a Kubernetes Job writes to s3://bucket/prefix")
    pinned, image_warnings = _pinned_image(recorded, image)
    warnings += image_warnings
    ns = namespace or recorded_ns
    for field, value in local_fields(recorded.spec):
        # A run trained with `kubetune run` read this machine's files; its spec, and so its
        # run id, names them. Staging would make another run.
        raise ConfigError(
            f"{recorded.location.url} read {field} from {value} on the machine it ran on; a pod "
            "cannot read it: reproduce it here with --local, or submit its spec with kubetune "
            "submit (which stages the inputs, as a new run)"
        )
    try:
        if pinned == recorded.spec.image and store is None and endpoint is None:
            return rendermod.render([recorded.run], ns), warnings
        values = rendermod.values_for(recorded.run, ns)
    except ConfigError as exc:
        # The stored spec cannot change (it is the run), so say which run cannot be a Job.
        raise ConfigError(f"{recorded.location.url} cannot run as a Kubernetes Job: {exc}") from exc
    values["image"]["reference"] = pinned
    if store is not None:
        # The trainer looks for staged inputs in its own store first: put them there.
        copy_inputs(recorded.spec, [recorded.location.store], reach(store, endpoint))
        values["storage"]["uri"] = store
    if endpoint is not None:
        values["storage"]["endpoint"] = endpoint
    return [rendermod.Rendered(recorded.run, values, rendermod.render_values(values))], warnings


def _pinned_image(recorded: Recorded, override: str | None) -> tuple[str, list[str]]:
    """The image the rerun's pod gets: ``override``, else the recorded digest, else the spec's
    image (with a warning when that is a tag)."""
    spec_image = recorded.spec.image
    ran = recorded.record.image
    if override is not None:
        if not is_digest(override):
            raise ConfigError(
                f"--image {override}: give a digest reference, REF@sha256:<64 hex> "
                "(docker buildx imagetools inspect REF shows it)"
            )
        warnings = []
        if is_digest(ran) and override != ran:
            warnings.append(f"--image {override} is not the image the run recorded, {ran}")
        return override, warnings
    if ran is not None and is_digest(ran):
        return ran, []
    if is_digest(spec_image):
        return spec_image, []
    return spec_image, [
        f"image {spec_image} is a tag, not a digest: the rerun may get different bits; pin it "
        "with --image REF@sha256:…"
    ]


def current_chart() -> str:
    """``<name>-<version>`` of the chart render uses now (as run.json's render.chart, which
    runs recorded before pod template revisions)."""
    return f"{_chart_yaml()['name']}-{_chart_yaml()['version']}"


def current_pod_template() -> str:
    """``<name>/<revision>`` of the pod template render uses now (run.json's
    render.pod_template)."""
    chart = _chart_yaml()
    return f"{chart['name']}/{(chart.get('annotations') or {}).get(POD_TEMPLATE_ANNOTATION)}"


def _chart_yaml() -> dict[str, Any]:
    data: dict[str, Any] = load_rendered(
        (rendermod.chart_dir() / "Chart.yaml").read_text(encoding="utf-8")
    )
    return data


def _chart_warnings(recorded: Recorded) -> list[str]:
    info = recorded.render_info
    recorded_template: str | None
    if info.pod_template:
        recorded_template, now = info.pod_template, current_pod_template()
        what = "pod template"
    else:
        # Records written before the revision: compare chart versions, as they recorded.
        recorded_template, now = info.chart, current_chart()
        what = "chart"
    if recorded_template and recorded_template != now:
        return [
            f"the run was rendered with {what} {recorded_template}; this is {now}, so the "
            "manifests may differ from the original"
        ]
    return []


def check_submit(recorded: Recorded, store: str | None) -> str | None:
    """Refuse a submit that cannot train; else a warning about what it may do unexpectedly.

    The Job writes into the run's folder of its store: in the recorded store a completed run
    would be found finished, and a run still running would get a second trainer.

    Raises:
        ConfigError: the run is completed and no other store is given.
    """
    recorded_store = recorded.location.store.uri.rstrip("/")
    elsewhere = store is not None and store.rstrip("/") != recorded_store
    where = f"{recorded.run.run_id} is {recorded.status} in {recorded.location.url}"
    if elsewhere:
        return None
    if recorded.status == "completed":
        raise ConfigError(
            f"{where}, so a Job would find it finished and stop: pass --store "
            "s3://bucket/prefix (and --endpoint for MinIO) to train the reproduction into "
            "another store, or use --local"
        )
    if recorded.status == "running":
        return (
            f"{where}: if its Job is still alive elsewhere, two trainers now race for it and "
            "one of them stops at its first checkpoint"
        )
    return None


#: What ``reproduce --submit`` did: created the run's objects, found its Job running or
#: finished (and changed nothing), or replaced a Job (``--replace``).
CREATED, RUNNING, FINISHED, REPLACED = "created", "running", "finished", "replaced"


@dataclass(frozen=True)
class Submitted:
    """What ``reproduce --submit`` did, and the line that says so."""

    action: str  # created | running | finished | replaced
    message: str
    objects: list[str]


def submit(
    rendered: list[rendermod.Rendered],
    namespace: str | None = None,
    target: cluster.Cluster | None = None,
    *,
    replace: bool = False,
) -> Submitted:
    """Create the run's objects (:func:`render`) in ``target`` (else the current context),
    after looking at the Job of the run's name there:

    - none: create the objects (:func:`kubetune.kube.submit.create`: the dependents, the Job,
      then the dependents' ownerReferences to it);
    - one with the same spec and pod, running or queued: nothing is sent (a Kueue Job's
      ``spec.suspend`` belongs to Kueue once admitted; applying over it would stop its pods);
    - one with the same spec and pod that completed: nothing is sent, nothing ran;
    - a failed one, or one whose pod differs (``--image``, ``--store``, ``--endpoint``; a
      Job's pod template is immutable): refused, unless ``replace``, which deletes it
      (Foreground: its pods are gone first, each trainer storing a checkpoint on SIGTERM),
      waits until it is gone, and creates the objects;
    - one with another spec hash (another run) or being deleted: refused.

    Nothing is created before these checks, so a refusal leaves the cluster as it was.

    Raises:
        ConfigError: a refusal (exit 2): the line says what to do.
        ClusterError: the Job is being deleted, or the API server refused a request or could
            not be reached (exit 1).
    """
    from kubetune.kube import submit as submitmod
    from kubetune.kube.status import job_phase, trainer_env

    (item,) = rendered
    assert isinstance(item.run, ResolvedRun)
    queue = item.run.spec.resources.queue
    target = target or cluster.connect()
    docs = submitmod.manifests(item)
    job_doc = submitmod.job_manifest(docs)
    ours = yaml_doc(job_doc.text)
    ns = (ours.get("metadata") or {}).get("namespace") or target.namespace_for(namespace)
    run_id = item.run.run_id
    where = f"Job {ns}/{job_doc.name}"
    names = [f"{d.kind.kind} {ns}/{d.name}" for d in docs]
    existing = target.get(cluster.JOB, ns, job_doc.name)
    if existing is None:
        submitmod.check_queues(target, ns, [queue])
        submitmod.create(target, ns, docs)
        return Submitted(CREATED, f"created {where} and its objects", names)
    metadata = existing.get("metadata") or {}
    store = trainer_env(ours).get(STORE_ENV, "its store")
    if metadata.get("deletionTimestamp"):
        # The world's state, not the user's choice: the same command works in a moment.
        raise cluster.ClusterError(f"{where} is being deleted; run this again once it is gone")
    theirs = (metadata.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if theirs != item.run.spec_hash:
        raise ConfigError(
            f"{where} exists and is not this run (spec hash {str(theirs or 'none')[:12]}); "
            f"delete it (kubectl delete job -n {ns} {job_doc.name}) or reproduce into another "
            "namespace (-n)"
        )
    differences = submitmod.pod_differences(ours, existing)
    phase = job_phase(existing)
    if not differences:
        # A reproduce cut off after the Job was created left its dependents unowned.
        submitmod.adopt(target, ns, docs, existing, check=True)
    if not differences and phase.name == "Succeeded":
        return Submitted(
            FINISHED,
            f"{where} already completed, so nothing ran: the run is completed in {store}; "
            "to train it again, reproduce into another store (--store s3://…)",
            [],
        )
    if not differences and not phase.finished:
        return Submitted(
            RUNNING,
            f"{where} is already there ({phase}) with this pod; nothing changed "
            f"(kubetune status {run_id} follows it)",
            [],
        )
    if not replace:
        why = (
            f"failed ({phase.reason or 'Failed'})"
            if not differences
            else f"exists with another pod ({'; '.join(differences)}), and a Job's pod "
            "template cannot change"
        )
        raise ConfigError(
            f"{where} {why}: pass --replace to delete it (its trainer stores a checkpoint) and "
            f"submit this one, or kubetune cancel {run_id} first"
        )
    submitmod.check_queues(target, ns, [queue])
    submitmod.replace_job(target, ns, docs, existing)
    return Submitted(REPLACED, f"replaced {where} ({phase}) and created its objects", names)


def yaml_doc(text: str) -> dict[str, Any]:
    data = load_rendered(text + "\n")
    return data if isinstance(data, dict) else {}


# --- --local ------------------------------------------------------------------------------


def environment_differences(record: RunRecord) -> list[str]:
    """What differs between this machine and the one the run recorded, one line each:
    package versions, GPUs, Python, platform, and the image the run had."""
    lines = []
    for name, version in record.packages.items():
        here = _installed(name)
        if here != version:
            lines.append(f"{name} {version or 'absent'} in the record, {here or 'absent'} here")
    hardware = record.hardware
    if hardware is not None:
        if "gpus" in hardware.model_fields_set:
            ran, here_gpus = hardware.gpus, local_gpu_names()
            if ran != here_gpus:
                lines.append(f"GPUs: {_gpus(ran)} in the record, {_gpus(here_gpus)} here")
        for key, recorded, here_value in (
            ("python", hardware.python, platform.python_version()),
            ("platform", hardware.platform, platform.platform()),
        ):
            if recorded and recorded != here_value:
                lines.append(f"{key} {recorded} in the record, {here_value} here")
    if record.image:
        lines.append(
            f"the run ran in image {record.image}; this re-run uses this machine's packages"
        )
    return lines


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _gpus(names: list[str]) -> str:
    if not names:
        return "none"
    counted: dict[str, int] = {}
    for name in names:
        counted[name] = counted.get(name, 0) + 1
    return ", ".join(f"{n}× {name}" for name, n in counted.items())


def local_gpu_names() -> list[str]:
    """Names of the GPUs a run here would see (``nvidia-smi -L``; torch is not imported)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    names = []
    for line in listing.stdout.splitlines():
        if line.startswith("GPU ") and ": " in line:
            names.append(line.split(": ", 1)[1].rsplit(" (UUID", 1)[0].strip())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(p.strip().isdigit() for p in visible.split(",") if p.strip()):
        picked = [int(p) for p in visible.split(",") if p.strip()]
        names = [names[i] for i in picked if i < len(names)]
    return names


@dataclass(frozen=True)
class Comparison:
    """One final metric, recorded against reproduced."""

    split: str
    metric: str
    recorded: float
    reproduced: float | None  # None: the reproduction did not report it
    tolerance: float

    @property
    def difference(self) -> float | None:
        """|reproduced − recorded| / |recorded|; for a recorded 0, the absolute difference."""
        if self.reproduced is None:
            return None
        if math.isnan(self.recorded) or math.isnan(self.reproduced):
            return 0.0 if math.isnan(self.recorded) and math.isnan(self.reproduced) else math.inf
        gap = abs(self.reproduced - self.recorded)
        return gap / abs(self.recorded) if self.recorded else gap

    @property
    def ok(self) -> bool:
        return self.difference is not None and self.difference <= self.tolerance


def compared_metrics(spec: specmod.JobSpec, record: RunRecord) -> list[tuple[str, str]]:
    """(split, metric) pairs to judge: the spec's ``reproduce.metrics`` in each of the eval and
    test splits that records them, else every numeric quality metric of those splits.

    Raises:
        ConfigError: the run recorded no final metrics, or none of a named metric.
    """
    recorded = {s: record.metrics[s] for s in SPLITS if record.metrics.get(s)}
    numeric = {
        split: [n for n, v in values.items() if _number(v)] for split, values in recorded.items()
    }
    if not any(numeric.values()):
        status = record.status or "—"
        raise ConfigError(
            f"run.json of this {status} run records no final eval or test metrics; "
            "reproduce --local compares those, so it needs a completed run"
        )
    wanted = spec.reproduce.metrics
    if not wanted:
        return [(s, n) for s, names in numeric.items() for n in names if not is_timing(n)]
    pairs = [(s, n) for n in wanted for s, names in numeric.items() if n in names]
    missing = [n for n in wanted if not any(n == m for _s, m in pairs)]
    if missing:
        have = sorted({n for names in numeric.values() for n in names if not is_timing(n)})
        raise ConfigError(
            f"reproduce.metrics: {', '.join(missing)} not recorded in eval or test "
            f"(run.json has {', '.join(have)})"
        )
    return pairs


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare(
    pairs: list[tuple[str, str]],
    recorded: Metrics,
    reproduced: Metrics,
    tolerance: float,
) -> list[Comparison]:
    """Each (split, metric) of ``pairs``, recorded against reproduced."""
    out = []
    for split, name in pairs:
        value = reproduced.get(split, {}).get(name)
        out.append(
            Comparison(
                split,
                name,
                float(recorded[split][name]),
                float(value) if _number(value) else None,
                tolerance,
            )
        )
    return out


def check_store(store: str, recorded: Recorded) -> str:
    """The store of a local reproduction, which must not be the recorded run's own.

    Raises:
        ConfigError: ``store`` is not a store URI, or is where the recorded run lives.
    """
    preflight.check_store(store, create=False)
    target = RunLocation(open_store(store), recorded.run.sweep, recorded.run.run_id)
    if _same_place(target, recorded.location):
        raise ConfigError(
            f"--store {store}: the recorded run lives there; a reproduction goes to another "
            f"store (default {DEFAULT_STORE})"
        )
    return store


def _same_place(a: RunLocation, b: RunLocation) -> bool:
    if a.url.startswith("file://") and b.url.startswith("file://"):
        return file_uri_path(a.url).resolve() == file_uri_path(b.url).resolve()
    return a.url.rstrip("/") == b.url.rstrip("/")


@dataclass(frozen=True)
class LocalPlan:
    """A checked ``reproduce --local``: where it goes, what it compares, how strictly."""

    recorded: Recorded
    store: str
    pairs: list[tuple[str, str]]
    tolerance: float


def plan_local(recorded: Recorded, store: str, tolerance: float | None = None) -> LocalPlan:
    """Check everything a local reproduction needs before it spends any time training.

    Raises:
        ConfigError: the store is not one, or is the run's own; the tolerance is negative; or
            the record holds nothing to compare with.
    """
    limit = recorded.spec.reproduce.tolerance if tolerance is None else tolerance
    if limit < 0 or math.isnan(limit):
        raise ConfigError(f"--tolerance {tolerance}: give a relative difference ≥ 0, e.g. 0.01")
    pairs = compared_metrics(recorded.spec, recorded.record)
    return LocalPlan(recorded, check_store(store, recorded), pairs, limit)


@dataclass(frozen=True)
class Reproduction:
    """What ``reproduce --local`` ended with."""

    outcome: Outcome
    comparisons: list[Comparison]

    @property
    def completed(self) -> bool:
        return self.outcome.status in ("completed", "already-completed")

    @property
    def outside(self) -> list[Comparison]:
        """The compared metrics that were not reproduced within the tolerance."""
        return [c for c in self.comparisons if not c.ok]


def run_local(plan: LocalPlan, display: Display, *, gpus: int | None = None) -> Reproduction:
    """Re-run the recorded spec here, through ``kubetune run``'s own code path, into the plan's
    store; compare its final metrics with the record.

    A store that already holds a completed reproduction of the run is not trained again (as
    with ``kubetune run``): its metrics are compared, without starting a trainer only to
    learn that.
    """
    recorded = plan.recorded
    target = read_run(RunLocation(open_store(plan.store), recorded.run.sweep, recorded.run.run_id))
    if target.status == "completed":
        outcome = Outcome(
            recorded.run,
            "already-completed",
            url=target.location.url,
            metrics=target.record.metrics,
        )
    else:
        outcome = local.run_one(recorded.run, plan.store, display, gpus=gpus)
    comparisons: list[Comparison] = []
    if outcome.status in ("completed", "already-completed"):
        comparisons = compare(plan.pairs, recorded.record.metrics, outcome.metrics, plan.tolerance)
    return Reproduction(outcome, comparisons)
