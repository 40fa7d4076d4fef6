"""ResolvedRun → Helm values → Kubernetes manifests, through the real Helm engine.

There is no second template system: the chart in ``charts/kubetune-job`` is the only place a
manifest's shape is written down. This module builds its values from a resolved spec, asks
Helm's Go engine (in-process, via ``helm_python``) to render it, and writes the result either
as one multi-document stream for ``kubectl apply -f -`` or as a folder for a GitOps commit.

Output is byte-identical for the same input: no timestamps, a fixed document order.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import yaml

from kubetune import gpus, launch
from kubetune import spec as specmod
from kubetune.atomic import write_atomic
from kubetune.errors import ConfigError, RenderError
from kubetune.kube import names
from kubetune.sweep import ResolvedRun

#: Install order: what a Job mounts or resolves must exist before it.
_ORDER = (
    "networkpolicy.yaml",
    "configmap.yaml",
    "driver-serviceaccount.yaml",
    "driver-role.yaml",
    "driver-rolebinding.yaml",
    "service.yaml",
    "job.yaml",
    "jobset.yaml",
    "driver.yaml",
)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

KUSTOMIZATION = "kustomization.yaml"
_MARK = (
    "# Written by kubetune render; lists the runs of this folder. Apply with kubectl apply -k.\n"
)


def chart_dir() -> Path:
    """The kubetune-job chart: ``$KUBETUNE_CHART``, else the one inside the package.

    In the source tree ``src/kubetune/charts`` links to ``charts/``; a wheel carries a copy.
    """
    env = os.environ.get(names.CHART_DIR_ENV)
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parent / "charts" / "kubetune-job"
    if (candidate / "Chart.yaml").is_file():
        return candidate.resolve()
    raise RenderError("the kubetune-job chart was not found; set KUBETUNE_CHART to its folder")


@lru_cache(maxsize=4)
def _chart(path: str) -> Any:
    import helm_python

    try:
        return helm_python.Chart.load(path)
    except helm_python.HelmError as exc:
        raise RenderError(f"cannot load chart {path}: {exc}") from exc


def check_renderable(run: ResolvedRun) -> None:
    """Refuse specs that would make a Job that cannot work.

    Raises:
        ConfigError: naming the field to change.
    """
    spec = run.spec
    if spec.storage is None:
        raise ConfigError(
            "storage.uri: a Kubernetes Job needs an s3:// store, or its checkpoints and model "
            "die with the pod; add storage: {uri: s3://bucket/prefix, secret: <Secret name>}"
        )
    if not spec.storage.uri.startswith("s3://"):
        raise ConfigError(
            f"storage.uri: {spec.storage.uri} lives on one machine; a Kubernetes Job needs "
            "an s3:// store (file:// is for kubetune run)"
        )
    wandb = spec.tracking.wandb
    if wandb.mode == "online" and not wandb.secret:
        raise ConfigError(
            "tracking.wandb.secret: mode online in a cluster needs the name of a Secret "
            "holding WANDB_API_KEY (or set mode: offline)"
        )


#: /tmp's emptyDir size limit.
TMP_SIZE = "1Gi"
#: Local disk beyond /scratch and /tmp that a pod writes: container logs (the root
#: filesystem is read-only).
DISK_MARGIN = "1Gi"


def _quantity_sum(*quantities: str) -> str:
    """Sum of Kubernetes quantities, rounded up to a whole Mi (or Gi when exact)."""
    total = sum(specmod.quantity_value(q) for q in quantities)
    mib = math.ceil(total / 2**20)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _scheduling(res: specmod.ResourcesSpec) -> tuple[dict[str, str], dict[str, Any]]:
    """nodeSelector and affinity: the spec's, with the GPU model's node terms added.

    A known model adds a required node affinity with one term per labeller (ORed); the
    spec's own required terms are each combined with each of them, so both must hold.
    """
    selector = dict(res.node_selector)
    affinity = json.loads(json.dumps(res.affinity))  # a deep copy of plain data
    if not res.gpu_type:
        return selector, affinity
    exact = gpus.exact_label(res.gpu_type)
    if exact is not None:
        selector[exact[0]] = exact[1]
        return selector, affinity
    model = gpus.lookup(res.gpu_type)
    assert model is not None  # the spec validated it
    gpu_terms = gpus.node_terms(model)
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []}
    )
    own = required.get("nodeSelectorTerms") or []
    if own:
        gpu_terms = [
            {
                **term,
                "matchExpressions": [
                    *(term.get("matchExpressions") or []),
                    *gpu_term["matchExpressions"],
                ],
            }
            for term in own
            for gpu_term in gpu_terms
        ]
    required["nodeSelectorTerms"] = gpu_terms
    return selector, affinity


def values_for(
    run: ResolvedRun, namespace: str | None = None, *, gitops: bool = False
) -> dict[str, Any]:
    """The chart values of one run.

    ``gitops``: for a folder that Argo CD or Flux applies (``render --out``): the Job gets no
    ttlSecondsAfterFinished, since either would re-create the Job the TTL deleted, and the
    run would train again.
    """
    check_renderable(run)
    spec = run.spec
    res = spec.resources
    storage = spec.storage
    assert storage is not None
    return {
        "namespace": namespace or "",
        "run": {
            "id": run.run_id,
            "sweep": run.sweep,
            "task": spec.task,
            "specHash": run.spec_hash,
            "params": json.dumps(run.params, sort_keys=True, separators=(",", ":")),
            "inputs": json.dumps(run.inputs, sort_keys=True, separators=(",", ":")),
            **({"rungs": run.rungs} if run.rungs else {}),
        },
        # Only what differs from the defaults: a release that adds a defaulted field leaves
        # this immutable ConfigMap as it was, and an older trainer image can still read it.
        "spec": specmod.dump(spec, defaults=False),
        "command": launch.accelerate_command(
            launch.SPEC_PATH, gpus=res.gpus, nodes=res.nodes, max_restarts=res.backoff_limit
        ),
        "nodes": res.nodes,
        "gang": res.gang,
        **pod_values(res, storage, spec.image, gitops=gitops),
        "wandb": {"secret": spec.tracking.wandb.secret or ""},
    }


def pod_values(
    res: specmod.ResourcesSpec, storage: specmod.StorageSpec, image: str, *, gitops: bool
) -> dict[str, Any]:
    """The values of what a pod asks of the cluster and where it stores: shared by training
    runs and batch jobs."""
    tolerations = [t.model_dump(exclude_none=True) for t in res.tolerations]
    node_selector, affinity = _scheduling(res)
    return {
        "image": {"reference": image, "pullPolicy": "IfNotPresent"},
        "imagePullSecrets": list(res.image_pull_secrets),
        "serviceAccountName": res.service_account or "",
        "resources": {
            "gpus": res.gpus,
            "cpu": str(res.cpu),
            # PyTorch sizes its thread pool from the node's cores, not the pod's CPU limit;
            # more threads than the CPU stall each other under CFS throttling, and the pod
            # runs one training process per GPU, each with its own pool.
            "threads": threads_per_process(str(res.cpu), res.gpus),
            "memory": str(res.memory),
            "shmSize": str(res.shm_size),
            "scratchSize": str(res.scratch_size),
            "tmpSize": TMP_SIZE,
            "ephemeralStorage": _quantity_sum(str(res.scratch_size), TMP_SIZE, DISK_MARGIN),
        },
        "scheduling": {
            "nodeSelector": node_selector,
            "tolerations": tolerations,
            "affinity": affinity,
            "priorityClassName": res.priority_class or "",
            "queue": res.queue or "",
        },
        "job": {
            "backoffLimit": res.backoff_limit,
            "activeDeadlineSeconds": res.active_deadline_seconds,
            "ttlSecondsAfterFinished": None if gitops else res.ttl_seconds_after_finished,
            "terminationGracePeriodSeconds": res.termination_grace_seconds,
        },
        "storage": {
            "uri": storage.uri,
            "endpoint": storage.endpoint or "",
            "region": storage.region or "",
            "secret": storage.secret or "",
        },
    }


#: The sweep driver's command (``kubetune drive``), on the spec the chart mounts.
DRIVER_COMMAND = ("python", "-m", "kubetune.cli", "drive", launch.SPEC_PATH)


def driver_name(sweep: str) -> str:
    """The name of a driven sweep's driver objects: ``<sweep>-driver`` (never a run id, whose
    suffix is 8 hex digits)."""
    return f"{sweep}-driver"


def driver_run(
    spec: specmod.JobSpec, inputs: dict[str, dict[str, str]] | None = None
) -> ResolvedRun:
    """The driver of a driven sweep as the chart renders it: a "run" named
    :func:`driver_name` whose spec is the sweep's own (with its sweep block) and whose
    ``inputs`` are the sweep's staged inputs, which the driver gives every trial."""
    return ResolvedRun(driver_name(spec.name), spec.name, 0, spec, {}, inputs=dict(inputs or {}))


def driver_values(
    spec: specmod.JobSpec,
    namespace: str | None = None,
    *,
    inputs: dict[str, dict[str, str]] | None = None,
    gitops: bool = False,
) -> dict[str, Any]:
    """The chart values of a driven sweep's driver (:data:`DRIVER_COMMAND` on the sweep's
    spec, the sweep's store and image); see the chart's ``driver`` values."""
    assert spec.sweep is not None and spec.sweep.driven
    values = values_for(driver_run(spec, inputs), namespace, gitops=gitops)
    values["command"] = list(DRIVER_COMMAND)
    values["driver"] = {"enabled": True}
    return values


def render_driver(
    spec: specmod.JobSpec,
    namespace: str | None = None,
    chart: Path | None = None,
    *,
    inputs: dict[str, dict[str, str]] | None = None,
    gitops: bool = False,
) -> Rendered:
    """The driver objects of a driven sweep: its ConfigMap (the sweep's spec), NetworkPolicy,
    ServiceAccount (unless the spec names one), Role, RoleBinding and Job."""
    values = driver_values(spec, namespace, inputs=inputs, gitops=gitops)
    return Rendered(driver_run(spec, inputs), values, render_values(values, chart))


def threads_per_process(cpu: str, gpus: int) -> int:
    """OMP_NUM_THREADS: the pod's CPU over its max(gpus, 1) processes, at least 1."""
    return max(1, int(specmod.quantity_value(cpu) // max(gpus, 1)))


class Named(Protocol):
    """What names a rendered Job other than a run: a batch job (kubetune.predict.chart)."""

    @property
    def run_id(self) -> str: ...

    @property
    def spec_hash(self) -> str: ...


@dataclass(frozen=True)
class Rendered:
    """The manifests of one run and the values that produced them."""

    run: ResolvedRun | Named
    values: dict[str, Any]
    documents: tuple[tuple[str, str], ...]  # (template file, YAML document)

    def text(self) -> str:
        """The run's manifests as a multi-document YAML stream."""
        return "".join(
            f"---\n# Source: kubetune-job/templates/{name}\n{doc}\n" for name, doc in self.documents
        )


def _clean(doc: str) -> str:
    lines = [line for line in doc.splitlines() if line.strip()]
    return "\n".join(lines)


def render_values(values: dict[str, Any], chart: Path | None = None) -> tuple[tuple[str, str], ...]:
    """Render chart values with the Helm engine; documents in install order."""
    import helm_python

    path = str(chart or chart_dir())
    try:
        out = _chart(path).render(
            values, name=values["run"]["id"], namespace=values["namespace"] or "default"
        )
    except helm_python.HelmError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RenderError(f"helm: {message}") from exc
    docs: list[tuple[str, str]] = []
    for key, doc in out.items():
        name = key.rsplit("/", 1)[-1]
        if name.startswith("_") or name == "NOTES.txt":
            continue
        body = _clean(doc)
        if body:
            docs.append((name, body))
    rank = {n: i for i, n in enumerate(_ORDER)}
    docs.sort(key=lambda d: (rank.get(d[0], len(rank)), d[0]))
    return tuple(docs)


def render(
    runs: Iterable[ResolvedRun],
    namespace: str | None = None,
    chart: Path | None = None,
    *,
    gitops: bool = False,
) -> list[Rendered]:
    """Render every run; all are checked before any is rendered. ``gitops``: for a folder
    (:func:`values_for`)."""
    runs = list(runs)
    values = [values_for(run, namespace, gitops=gitops) for run in runs]
    return [Rendered(run, v, render_values(v, chart)) for run, v in zip(runs, values, strict=True)]


def stream(rendered: Sequence[Rendered]) -> str:
    """All runs as one multi-document stream for ``kubectl apply -f -``."""
    return "".join(r.text() for r in rendered)


def write_dir(rendered: Sequence[Rendered], out: Path) -> list[Path]:
    """Write ``<run-id>.yaml`` per run, its values under ``values/``, and a kustomization.

    The kustomization lists exactly the runs rendered now, so Argo CD and Flux apply these
    and nothing else (the values files are not Kubernetes objects). Run files that an earlier
    render of this folder listed and this one does not are removed, so a GitOps commit of the
    folder drops stale runs. Files kubetune did not write are never touched. Jobs here carry
    no ttlSecondsAfterFinished (:func:`for_gitops`): a finished run stays until it leaves
    the folder.
    """
    try:
        (out / "values").mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(
            f"--out: {out} is a file, or inside one; give a folder (created if missing)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {out}: {exc.strerror or exc}") from exc
    previous = _listed_runs(out)
    written: list[Path] = []
    names: list[str] = []
    for item in map(for_gitops, rendered):
        rid = item.run.run_id
        manifest = out / f"{rid}.yaml"
        values = out / "values" / f"{rid}.values.yaml"
        write_atomic(manifest, item.text())
        write_atomic(
            values, yaml.dump(item.values, Dumper=_Dumper, sort_keys=True, allow_unicode=True)
        )
        written += [manifest, values]
        names.append(manifest.name)
    for stale in sorted(previous - set(names)):
        (out / stale).unlink(missing_ok=True)
        (out / "values" / stale.replace(".yaml", ".values.yaml")).unlink(missing_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(names),
    }
    path = out / KUSTOMIZATION
    write_atomic(path, _MARK + yaml.dump(kustomization, Dumper=_Dumper, sort_keys=False))
    written.append(path)
    return written


def for_gitops(item: Rendered) -> Rendered:
    """``item`` as a GitOps folder holds it: without ttlSecondsAfterFinished, which Argo CD
    self-heal and Flux would answer by re-creating the Job, so the run would train again
    (and fail again) every TTL. Re-rendered only if it has one (``render(gitops=True)``
    already leaves it out)."""
    if item.values["job"].get("ttlSecondsAfterFinished") is None:
        return item
    values = {**item.values, "job": {**item.values["job"], "ttlSecondsAfterFinished": None}}
    return Rendered(item.run, values, render_values(values))


def _listed_runs(out: Path) -> set[str]:
    path = out / KUSTOMIZATION
    if not path.is_file():
        return set()
    text = path.read_text(encoding="utf-8")
    if not text.startswith(_MARK):
        raise ConfigError(f"--out: {path} was not written by kubetune; choose another folder")
    data = yaml.safe_load(text) or {}
    return {
        str(r) for r in data.get("resources", []) if str(r).endswith(".yaml") and "/" not in str(r)
    }
