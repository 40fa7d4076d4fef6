"""Every name kubetune shares with its Helm chart (``charts/kubetune-job``): labels and
annotations on the objects it renders, and the environment variables its pods carry.

The chart writes these names and Python reads them (``kubetune status`` finds a sweep's pods
by label; the trainer finds its store and run id in its environment), so each is spelled once
here and :mod:`tests.kube.test_names` checks that the chart's templates use exactly these.
Nothing here imports anything: the trainer, the launcher and the laptop all read it.
"""

from __future__ import annotations

# --- labels (on the Job, its pods, ConfigMaps, Services, NetworkPolicies) -----------------

#: What an object is for: ``trainer`` (a run's objects) or ``sweep-driver`` (the driver of a
#: driven sweep, its RBAC and ConfigMap); the submitter RBAC says ``submitter-rbac``.
COMPONENT_LABEL = "app.kubernetes.io/component"
TRAINER_COMPONENT = "trainer"
DRIVER_COMPONENT = "sweep-driver"
#: Every object kubetune renders carries ``managed-by: kubetune``.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune"
#: Selects everything kubetune made.
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
RUN_ID_LABEL = "kubetune.io/run-id"
SWEEP_LABEL = "kubetune.io/sweep"
TASK_LABEL = "kubetune.io/task"
#: ``<chart>-<version>``; kept off the pod template, which a Job never lets change.
CHART_LABEL = "helm.sh/chart"
#: Kueue admits a Job to the LocalQueue this label names (Kueue's own name).
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: The pod's index in an Indexed Job, i.e. its machine rank (Kubernetes' own label).
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"

# --- annotations ---------------------------------------------------------------------------

#: sha256 of the resolved run spec: a resubmit of the same run is recognised by it.
SPEC_HASH_ANNOTATION = "kubetune.io/spec-hash"
#: The sweep point's parameters as JSON (what ``kubetune status`` shows per run).
PARAMS_ANNOTATION = "kubetune.io/params"
#: In Chart.yaml: the revision of the pod template the chart renders.
POD_TEMPLATE_ANNOTATION = "kubetune.io/pod-template"

#: The trainer's container in every pod.
CONTAINER = "trainer"
#: The container of a sweep driver's pod.
DRIVER_CONTAINER = "driver"

# --- environment of the trainer's pod (set by the chart, read by the trainer) --------------

#: The store the run writes to, its sweep (folder) and its run id.
STORE_ENV = "KUBETUNE_STORE"
SWEEP_ENV = "KUBETUNE_SWEEP"
RUN_ID_ENV = "KUBETUNE_RUN_ID"
#: The endpoint at which this process reaches the S3-compatible store, when it differs from
#: the spec's ``storage.endpoint`` (a laptop's port-forward; ``reproduce --endpoint``).
STORE_ENDPOINT_ENV = "KUBETUNE_STORE_ENDPOINT"
#: The trainer image, recorded in run.json.
IMAGE_ENV = "KUBETUNE_IMAGE"
#: ``<chart>/<revision>`` of the pod template that rendered the Job, recorded in run.json.
POD_TEMPLATE_ENV = "KUBETUNE_POD_TEMPLATE"
#: The namespace the run was rendered for, recorded in run.json.
RENDER_NAMESPACE_ENV = "KUBETUNE_RENDER_NAMESPACE"
#: The pod's record of its staged inputs (the chart's run.inputs): a JSON object field →
#: {source, uri, sha256} that the trainer copies into run.json as ``inputs``.
INPUTS_ENV = "KUBETUNE_INPUTS"
#: The sweep point's parameters (the chart's run.params, JSON: field → value as the sweep
#: gave it), for run.json: the spec the trainer reads is the point's resolved spec.
PARAMS_ENV = "KUBETUNE_PARAMS"
#: A trial of a driven sweep with a pruner (the chart's run.rungs, JSON {metric, wait}):
#: the trainer reports each evaluation to the store and waits for the driver's decision.
RUNGS_ENV = "KUBETUNE_RUNGS"
#: A batch job's pod: its shard, the Indexed Job's completion index (kubetune.predict).
SHARD_ENV = "KUBETUNE_SHARD"
#: Seconds between SIGTERM and SIGKILL (the pod's terminationGracePeriodSeconds).
STOP_GRACE_ENV = "KUBETUNE_STOP_GRACE_SECONDS"
#: A multi-node pod's machine rank (its completion index) and the address of rank 0.
MACHINE_RANK_ENV = "KUBETUNE_MACHINE_RANK"
MAIN_HOST_ENV = "KUBETUNE_MAIN_HOST"
#: The trainer's working folder (checkpoints before upload, fetched inputs); the chart puts
#: it on the /scratch volume, sized by resources.scratch_size, not on the small /tmp.
WORKDIR_ENV = "KUBETUNE_WORKDIR"

# --- environment of a sweep driver's pod (``kubetune drive``) -------------------------------

#: The driver's own Job (its trials' Jobs carry an ownerReference to it).
DRIVER_JOB_ENV = "KUBETUNE_DRIVER_JOB"
#: The namespace and name of the driver's pod (the downward API).
NAMESPACE_ENV = "KUBETUNE_NAMESPACE"
POD_NAME_ENV = "KUBETUNE_POD_NAME"
#: Every variable ``kubetune drive`` reads (besides the store's AWS_* and the spec file).
DRIVE_ENV = frozenset({DRIVER_JOB_ENV, NAMESPACE_ENV, POD_NAME_ENV, INPUTS_ENV})

#: Every KUBETUNE_* variable the chart sets.
CHART_ENV = frozenset(
    {
        STORE_ENV,
        SWEEP_ENV,
        RUN_ID_ENV,
        STORE_ENDPOINT_ENV,
        IMAGE_ENV,
        POD_TEMPLATE_ENV,
        RENDER_NAMESPACE_ENV,
        INPUTS_ENV,
        PARAMS_ENV,
        RUNGS_ENV,
        SHARD_ENV,
        STOP_GRACE_ENV,
        MACHINE_RANK_ENV,
        MAIN_HOST_ENV,
        WORKDIR_ENV,
        DRIVER_JOB_ENV,
        NAMESPACE_ENV,
        POD_NAME_ENV,
    }
)

# --- environment read on the laptop only ---------------------------------------------------

#: A folder holding the kubetune-job chart to render with instead of the packaged one. Only
#: ``kubetune render``/``submit`` read it; pods never see it (they record POD_TEMPLATE_ENV).
CHART_DIR_ENV = "KUBETUNE_CHART"
