"""Driven sweeps on the cluster: the driver's objects from the chart, the driver running
in-process with :class:`~kubetune.search.cluster.JobExecutor` against the fake API server
(tests/kubefake.py) and a moto store, with a small controller in the test playing the trials
(writing rungs and records the way a trainer does, setting Job conditions as the Job
controller does), and ``kubetune submit | status | list | cancel`` of such a sweep.

No clock and no sleeps: the driver's loop is turned by hand (:meth:`Driver.step`), one
controller tick per turn."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import render
from kubetune import spec as specmod
from kubetune.kube import client as cluster
from kubetune.kube import names
from kubetune.search import rungs
from kubetune.store import RunLocation, open_store
from kubetune.store.record import RECORD, read_run

import kubefake
from conftest import base_spec, yaml_docs
from kubefake import FakeKube, kubetune, table, write_kubeconfig

NS = "ml"
EVALS = 4
DRIVER_RULES = {
    ("batch", "jobs"): {"create", "patch", "get", "list", "watch", "delete"},
    ("", "configmaps"): {"create", "patch", "get"},
    ("", "services"): {"create", "patch"},
    ("networking.k8s.io", "networkpolicies"): {"create", "patch"},
    ("", "pods"): {"list"},
}


def quality(params: dict[str, Any], evaluation: int) -> float:
    """A learning curve: best near lr 3e-4, rising with evaluations."""
    lr = float(params.get("train.learning_rate", 1e-4))
    return round((1 - abs(math.log10(lr / 3e-4)) / 3) * (1 - 0.5**evaluation), 6)


def driven(store: str, sweep: dict[str, Any], name: str = "topic") -> dict[str, Any]:
    return base_spec(
        name=name,
        resources={"gpus": 0, "cpu": "2", "memory": "4Gi", "shm_size": "1Gi"},
        storage={"uri": store, "secret": "kubetune-s3"},
        sweep=sweep,
    )


#: The best point first, one at a time: ASHA prunes the later, worse ones at their rungs.
PRUNED_GRID = {
    "method": "grid",
    "parallelism": 1,
    "pruner": {"type": "asha", "reduction_factor": 2},
    "parameters": {"train.learning_rate": {"values": [3e-4, 1e-3, 1e-5, 1e-6]}},
}


@pytest.fixture
def kube(kube_server: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    kube_server.reset()
    monkeypatch.setenv(
        "KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, NS))
    )
    return kube_server


def objects(rendered: render.Rendered) -> dict[str, dict[str, Any]]:
    return {yaml.safe_load(doc)["kind"]: yaml.safe_load(doc) for _t, doc in rendered.documents}


# --- the driver's objects -------------------------------------------------------------------


def test_driver_renders_its_rbac_configmap_and_job_valid_for_kubernetes() -> None:
    import kubernetes_validate

    spec = specmod.validate(driven("s3://runs/x", PRUNED_GRID))
    rendered = render.render_driver(spec, NS)
    docs = objects(rendered)
    assert list(docs) == [
        "NetworkPolicy", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"
    ]  # fmt: skip
    for doc in docs.values():
        kubernetes_validate.validate(doc, "1.33", strict=True)
        assert doc["metadata"]["name"] == "topic-driver"
        assert doc["metadata"]["labels"][names.COMPONENT_LABEL] == names.DRIVER_COMPONENT
    # The ConfigMap holds the sweep's spec, sweep block included: what kubetune drive reads.
    held = specmod.loads(docs["ConfigMap"]["data"]["spec.yaml"])
    assert held == spec and held.sweep is not None and held.sweep.driven
    job = docs["Job"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "topic-driver"
    assert pod["automountServiceAccountToken"] is True
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 3
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget",
                                                     "status": "True"}]} in rules  # fmt: skip
    by_code = {r["onExitCodes"]["values"][0]: r["action"] for r in rules if "onExitCodes" in r}
    assert by_code == {130: "Ignore", 2: "FailJob"}
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {
        "cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"
    }  # fmt: skip
    assert "nvidia.com/gpu" not in json.dumps(job)
    binding = docs["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "topic-driver"
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "topic-driver",
                                    "namespace": NS}]  # fmt: skip


def test_driver_role_is_exactly_what_the_driver_does_and_within_the_submitters() -> None:
    """The exact rules; and a subset of the submitter's Role, since the API server lets a
    subject create (and bind) a Role only with rights it holds itself."""
    from test_chart import SUBMITTER_RULES

    spec = specmod.validate(driven("s3://runs/x", PRUNED_GRID))
    role = objects(render.render_driver(spec, NS))["Role"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == DRIVER_RULES
    for key, verbs in granted.items():
        assert verbs <= SUBMITTER_RULES[key], key


def test_a_spec_naming_a_service_account_binds_the_driver_role_to_it() -> None:
    data = driven("s3://runs/x", PRUNED_GRID)
    data["resources"]["service_account"] = "s3-reader"
    docs = objects(render.render_driver(specmod.validate(data), NS))
    assert "ServiceAccount" not in docs
    assert docs["RoleBinding"]["subjects"][0]["name"] == "s3-reader"
    assert docs["Job"]["spec"]["template"]["spec"]["serviceAccountName"] == "s3-reader"


def test_driver_pod_runs_kubetune_drive_from_its_manifest_alone() -> None:
    """Its command is a kubetune command line that parses, on the spec its ConfigMap mounts;
    its env names everything kubetune drive reads."""
    import typer

    from kubetune import cli

    inputs = {"data.train": {"source": "x.jsonl", "uri": "s3://runs/x/inputs/sha256/ab/x.jsonl",
                             "sha256": "ab"}}  # fmt: skip
    spec = specmod.validate(driven("s3://runs/x", PRUNED_GRID))
    docs = objects(render.render_driver(spec, NS, inputs=inputs))
    pod = docs["Job"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "kubetune.cli"]
    group: Any = typer.main.get_command(cli.app)  # typer's own copy of click's Group
    ctx = group.make_context("kubetune", list(command[3:]))
    name, drive, rest = group.resolve_command(ctx, list(command[3:]))
    assert name == "drive" and drive.hidden
    sub = drive.make_context("drive", rest)
    spec_path = Path(sub.params["spec"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[volume]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert spec_path.parent == Path(mounts[volume]) and spec_path.name in docs["ConfigMap"]["data"]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) >= names.DRIVE_ENV
    assert env[names.DRIVER_JOB_ENV]["value"] == docs["Job"]["metadata"]["name"]
    assert env[names.NAMESPACE_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env[names.POD_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert json.loads(env[names.INPUTS_ENV]["value"]) == inputs
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    assert "WANDB_API_KEY" not in env  # the driver trains nothing
    assert shlex.join(command).endswith("drive /etc/kubetune/spec.yaml")


def test_gitops_folder_of_a_driven_sweep_holds_the_driver_not_the_trials(
    write_spec: Any, tmp_path: Path
) -> None:
    path = write_spec(driven("s3://runs/x", PRUNED_GRID))
    out = tmp_path / "gitops"
    ran = kubetune("render", str(path), "--out", str(out), "-n", NS)
    assert ran.code == 0, ran.errors
    assert sorted(p.name for p in out.glob("*.yaml")) == ["kustomization.yaml", "topic-driver.yaml"]
    docs = yaml_docs((out / "topic-driver.yaml").read_text())
    kinds = [d["kind"] for d in docs]
    assert kinds == ["NetworkPolicy", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"]
    job = docs[-1]
    assert "ttlSecondsAfterFinished" not in job["spec"]  # Argo CD would re-create it
    printed = kubetune("render", str(path), "-n", NS)
    assert [d["kind"] for d in yaml_docs(printed.stdout)] == kinds


# --- the driver in-process, trials played by a fake controller ------------------------------


class Controller:
    """Plays every trial Job in the fake API server as its trainer and the Job controller
    would: one evaluation per tick (a rung, when the Job's env asks for rungs), waiting at a
    rung for the driver's decision; a pruned trial writes a "pruned" record and its Job
    completes; a trial that trained every evaluation writes a completed record."""

    def __init__(self, kube: FakeKube, store_uri: str, *, cpu_seconds: float = 600.0) -> None:
        self.kube, self.store = kube, open_store(store_uri)
        self.cpu_seconds = cpu_seconds
        self.trained: dict[str, int] = {}

    def trials(self) -> list[dict[str, Any]]:
        return [
            o
            for (plural, ns, _n), o in sorted(self.kube.objects.items())
            if plural == "jobs" and ns == NS
            and o["metadata"]["labels"].get(names.COMPONENT_LABEL) == names.TRAINER_COMPONENT
        ]  # fmt: skip

    def tick(self) -> None:
        for job in self.trials():
            conditions = {c["type"] for c in (job.get("status") or {}).get("conditions", [])}
            if conditions & {"Complete", "Failed"}:
                continue
            self.step(job)

    def step(self, job: dict[str, Any]) -> None:
        run_id = job["metadata"]["name"]
        sweep = job["metadata"]["labels"][names.SWEEP_LABEL]
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        params = json.loads(job["metadata"]["annotations"][names.PARAMS_ANNOTATION])
        location = RunLocation(self.store, sweep, run_id)
        done = self.trained.get(run_id, 0)
        if env.get(names.RUNGS_ENV) and done:
            decided = rungs.read_decision(location, done)
            if decided is None:
                return  # waiting at its rung
            if decided:
                self.record(location, params, "pruned")
                self.complete(job)
                return
        if done == EVALS:
            self.record(location, params, "completed", metrics={"eval": {
                "accuracy": quality(params, EVALS)}})  # fmt: skip
            self.complete(job)
            return
        self.trained[run_id] = done + 1
        if env.get(names.RUNGS_ENV):
            rungs.write_rung(location, rungs.Rung(done + 1, 10 * (done + 1),
                                                  quality(params, done + 1)))  # fmt: skip

    def record(self, location: RunLocation, params: dict[str, Any], status: str,
               **fields: Any) -> None:  # fmt: skip
        data = {"status": status, "run_id": location.run_id, "params": params, **fields,
                "compute": {"cpu_seconds": self.cpu_seconds, "wall_seconds": 60.0}}  # fmt: skip
        self.store.write_json(location.key(RECORD), data)

    def complete(self, job: dict[str, Any], kind: str = "Complete", reason: str = "") -> None:
        live = json.loads(json.dumps(job))
        condition = {"type": kind, "status": "True", **({"reason": reason} if reason else {})}
        live["status"] = {"conditions": [condition]}
        self.kube.put(live)


@pytest.fixture
def store_uri(s3_env: str, request: pytest.FixtureRequest) -> str:
    return f"s3://runs/{request.node.name[:40].replace('_', '-')}"


def driver_job(kube: FakeKube, spec: specmod.JobSpec) -> dict[str, Any]:
    """The driver's objects in the fake cluster, as kubetune submit creates them."""
    from kubetune.kube import submit

    target = cluster.connect()
    (outcome,) = submit.submit([render.render_driver(spec, NS)], target, NS)
    assert outcome.result == submit.CREATED, outcome
    job = kube.get("jobs", NS, "topic-driver")
    assert job is not None
    return job


def run_driver(
    kube: FakeKube, spec: specmod.JobSpec, store_uri: str, controller: Controller
) -> Iterator[Any]:
    """Turn the driver until it finishes; yields it after each turn."""
    from kubetune.search.cluster import JobExecutor, owner_of
    from kubetune.search.driver import Driver, parallelism_for

    target = cluster.connect()
    executor = JobExecutor(target, NS, owner=owner_of(target, NS, "topic-driver"))
    drive = Driver(
        spec, open_store(store_uri), executor,
        parallelism=parallelism_for(spec, cluster=True), where="pod topic-driver-abcde",
    )  # fmt: skip
    for _turn in range(200):
        drive.step()
        yield drive
        if drive.finished():
            return
        controller.tick()
    raise AssertionError("the sweep never finished")


@pytest.mark.slow
def test_pruned_trials_end_complete_with_a_pruned_record_owned_by_the_driver(
    kube: FakeKube, store_uri: str
) -> None:
    spec = specmod.validate(driven(store_uri, PRUNED_GRID))
    owner = driver_job(kube, spec)
    controller = Controller(kube, store_uri)
    *_, drive = run_driver(kube, spec, store_uri, controller)
    state = drive.state
    assert state.driver == "pod topic-driver-abcde"
    counts = state.counts()
    assert counts.get("pruned", 0) >= 1 and counts.get("completed", 0) >= 1, counts
    assert sum(counts.values()) == 4
    trials = controller.trials()
    assert len(trials) == 4
    reference = {"apiVersion": "batch/v1", "kind": "Job", "name": "topic-driver",
                 "uid": owner["metadata"]["uid"]}  # fmt: skip
    store = open_store(store_uri)
    for job in trials:
        # Owned by the driver's Job; claimed by no GitOps tool.
        assert job["metadata"]["ownerReferences"] == [reference]
        labels, annotations = job["metadata"]["labels"], job["metadata"].get("annotations", {})
        assert labels["app.kubernetes.io/instance"] == job["metadata"]["name"]
        for key in [*labels, *annotations]:
            assert not key.startswith(("argocd.argoproj.io/", "kustomize.toolkit.fluxcd.io/"))
        (condition,) = job["status"]["conditions"]
        assert condition["type"] == "Complete"
        record = read_run(RunLocation(store, "topic", job["metadata"]["name"])).record
        row = next(r for r in state.trials if r.run_id == job["metadata"]["name"])
        assert record.status == row.state
    # Deleting the driver's Job takes its trials (and their objects) with it.
    cluster.connect().delete(cluster.JOB, NS, "topic-driver", "Background")
    assert controller.trials() == []
    assert not [k for k in kube.objects if k[0] == "configmaps" and k[2] != "topic-driver"]


@pytest.mark.slow
def test_a_budget_stops_launching_trials(kube: FakeKube, store_uri: str) -> None:
    sweep = {
        "method": "tpe", "seed": 3, "max_runs": 10, "parallelism": 1,
        "budget": {"cpu_hours": 2.5},
        "parameters": {"train.learning_rate": {"log_uniform": [1e-5, 1e-2]}},
    }  # fmt: skip
    spec = specmod.validate(driven(store_uri, sweep))
    driver_job(kube, spec)
    controller = Controller(kube, store_uri, cpu_seconds=3600.0)
    *_, drive = run_driver(kube, spec, store_uri, controller)
    # One CPU-hour a trial: after two, a third would overrun 2.5.
    assert len(controller.trials()) == 2
    assert drive.state.counts() == {"completed": 2}
    assert (drive.state.stopped or "").startswith("budget: cpu_hours 2.5")


@pytest.mark.slow
def test_a_failed_trial_is_replaced_and_a_refused_one_is_not_retried(
    kube: FakeKube, store_uri: str
) -> None:
    from kubetune.search.cluster import JobExecutor

    sweep = {
        "method": "grid", "parallelism": 2, "retries": 1,
        "parameters": {"train.learning_rate": {"values": [1e-4, 3e-4]}},
    }  # fmt: skip
    spec = specmod.validate(driven(store_uri, sweep))
    driver_job(kube, spec)
    controller = Controller(kube, store_uri)
    turns = run_driver(kube, spec, store_uri, controller)
    next(turns)
    first, second = controller.trials()
    executor = JobExecutor(cluster.connect(), NS)
    # Preempted past its backoff: a Failed Job; a spec its trainer refused: FailJob (exit 2).
    controller.complete(first, "Failed", "BackoffLimitExceeded")
    controller.complete(second, "Failed", "PodFailurePolicy")
    assert executor.state(first["metadata"]["name"]) == "failed"
    assert executor.state(second["metadata"]["name"]) == "config-error"
    *_, drive = turns
    rows = {r.run_id: r for r in drive.state.trials}
    assert rows[first["metadata"]["name"]].state == "completed"
    assert rows[first["metadata"]["name"]].launches == 2
    replaced = kube.get("jobs", NS, first["metadata"]["name"])
    assert replaced is not None and replaced["metadata"]["uid"] != first["metadata"]["uid"]
    assert rows[second["metadata"]["name"]].state == "failed"
    kept = kube.get("jobs", NS, second["metadata"]["name"])
    assert kept is not None and kept["metadata"]["uid"] == second["metadata"]["uid"]
    assert executor.state("topic-00000000") == "unknown"


# --- kubetune submit | status | list | cancel of a driven sweep -----------------------------


@pytest.mark.slow
def test_submit_status_list_cancel_of_a_driven_sweep(
    kube: FakeKube, store_uri: str, write_spec: Any
) -> None:
    path = write_spec(driven(store_uri, PRUNED_GRID))
    ran = kubetune("submit", str(path), "-n", NS)
    assert ran.code == 0, ran.errors
    assert "sweep driver topic-driver in ml created" in ran.stderr
    assert "kubetune status topic shows the leaderboard" in ran.stderr
    kinds = sorted((k[0], k[2]) for k in kube.objects)
    assert kinds == sorted(
        (p, "topic-driver")
        for p in (
            "networkpolicies",
            "configmaps",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "jobs",
        )
    )
    again = kubetune("submit", str(path), "-n", NS)
    assert again.code == 0 and "is already there" in again.stderr
    # Before the driver wrote anything: one line, not a traceback.
    early = kubetune("status", "topic", "-n", NS)
    assert early.code == 0, early.errors
    assert "topic-driver" in table(early.stdout)
    assert "no s3://" in early.stdout and "sweep.json yet" in early.stdout

    spec = specmod.load(path)
    controller = Controller(kube, store_uri)
    *_, drive = run_driver(kube, spec, store_uri, controller)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "topic-driver-abcde", "namespace": NS,
        "labels": {**kube.get("jobs", NS, "topic-driver")["metadata"]["labels"]},  # type: ignore[index]
        "ownerReferences": [{"uid": kube.get("jobs", NS, "topic-driver")["metadata"]["uid"]}],  # type: ignore[index]
    }, "status": {"phase": "Running", "containerStatuses": [
        {"name": "driver", "restartCount": 1, "state": {"running": {}}}]}}  # fmt: skip
    kube.put(pod)
    status = kubetune("status", "topic", "-n", NS)
    assert status.code == 0, status.errors
    rows = table(status.stdout)
    assert rows["topic-driver"][2:4] == ["Running", "1"]
    pruned = [r.run_id for r in drive.state.trials if r.state == "pruned"]
    assert pruned and all(rows[run_id][1] == "Pruned" for run_id in pruned)
    assert "topic: grid" in status.stdout and "launching stopped" in status.stdout
    listed = kubetune("list", "-n", NS)
    assert listed.code == 0, listed.errors
    (cells,) = [c for k, c in table(listed.stdout).items() if k == "topic"]
    assert cells[0] == "driven" and cells[-2] == str(len(pruned))

    kube.requests.clear()
    cancelled = kubetune("cancel", "topic", "-n", NS)
    assert cancelled.code == 0, cancelled.errors
    deletes = [r.path for r in kube.requests if r.method == "DELETE"]
    assert deletes[0] == f"/apis/batch/v1/namespaces/{NS}/jobs/topic-driver"
    assert kube.objects == {}


def test_static_sweep_submit_prints_its_cost_upper_bound_then_from_finished_runs(
    kube: FakeKube, store_uri: str, write_spec: Any
) -> None:
    grid = {"method": "grid", "parameters": {"train.learning_rate": {"values": [1e-5, 2e-5]}}}
    data = driven(store_uri, grid)
    data["resources"]["active_deadline_seconds"] = 7200
    path = write_spec(data)
    ran = kubetune("submit", str(path), "-n", NS, "--dry-run")
    assert ran.code == 0, ran.errors
    assert "2 runs × 2 CPUs each: at most 8 CPU-hours (upper bound" in ran.stderr
    store = open_store(store_uri)
    store.write_json("topic/topic-0000aaaa/run.json", {"status": "completed", "compute": {
        "cpu_seconds": 1800.0, "wall_seconds": 1000.0}})  # fmt: skip
    ran = kubetune("submit", str(path), "-n", NS, "--dry-run")
    assert "2 runs × 2 CPUs each ≈ 1 CPU-hours (mean of 1 finished run of this sweep" in (
        ran.stderr
    )


def test_a_static_sweep_resumes_on_resubmit(
    kube: FakeKube, store_uri: str, write_spec: Any
) -> None:
    """Two preempted trials (one Job Failed past its backoff, one Job gone) resume from their
    checkpoints; a completed one whose Job is gone is not created again."""
    from kubetune import sweep as sweepmod
    from kubetune.store import MANIFEST

    grid = {"method": "grid",
            "parameters": {"train.learning_rate": {"values": [1e-5, 2e-5, 3e-5]}}}  # fmt: skip
    path = write_spec(driven(store_uri, grid))
    assert kubetune("submit", str(path), "-n", NS).code == 0
    failed, gone, done = (r.run_id for r in sweepmod.expand(specmod.load(path)))
    store = open_store(store_uri)
    for run_id in (failed, gone):
        location = RunLocation(store, "topic", run_id)
        store.write_json(location.key(RECORD), {"status": "interrupted", "run_id": run_id})
        store.write_bytes(f"{location.checkpoint_prefix(20)}/model.safetensors", b"w")
        store.write_bytes(f"{location.checkpoint_prefix(20)}/{MANIFEST}", b"{}")
    store.write_json(RunLocation(store, "topic", done).key(RECORD), {"status": "completed"})
    job = kube.get("jobs", NS, failed)
    assert job is not None
    kube.put({**job, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}})  # fmt: skip
    old_uid = job["metadata"]["uid"]
    for run_id in (gone, done):
        cluster.connect().delete(cluster.JOB, NS, run_id, "Background")
    kube.requests.clear()
    ran = kubetune("submit", str(path), "-n", NS)
    assert ran.code == 0, ran.errors
    rows = table(ran.stdout)
    assert rows[failed] == ["resumed", "its Job had failed: resumes from step 20"]
    assert rows[gone] == ["resumed", "its Job was gone: resumes from step 20"]
    assert rows[done] == ["completed", "completed in the store; not created again"]
    assert "3 runs in ml: 2 resumed, 1 completed" in ran.stderr
    replaced = kube.get("jobs", NS, failed)
    assert replaced is not None and replaced["metadata"]["uid"] != old_uid
    assert kube.get("jobs", NS, gone) is not None
    assert kube.get("jobs", NS, done) is None
    deleted = [r.path for r in kube.requests if r.method == "DELETE"]
    assert deleted == [f"/apis/batch/v1/namespaces/{NS}/jobs/{failed}"]


# --- the fake API server is as strict as a real one about RBAC objects ----------------------


@pytest.mark.parametrize(
    ("plural", "body", "message"),
    [
        ("roles", {"rules": [{"apiGroups": [""], "resources": ["pods"]}]},
         "rules[0].verbs: Required value"),
        ("roles", {"rules": [{"resources": ["pods"], "verbs": ["get"]}]},
         "rules[0].apiGroups: Required value"),
        ("roles", {"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]},
         "namespaced rules cannot apply to non-resource URLs"),
        ("rolebindings", {"roleRef": {"apiGroup": "rbac", "kind": "Role", "name": "r"}},
         'roleRef.apiGroup: Unsupported value: "rbac"'),
        ("rolebindings", {"roleRef": {"apiGroup": kubefake.RBAC_GROUP, "kind": "Role",
                                      "name": "r"},
                          "subjects": [{"kind": "ServiceAccount", "name": "d",
                                        "apiGroup": kubefake.RBAC_GROUP}]},
         "subjects[0].apiGroup: Unsupported value"),
        ("serviceaccounts", {"automountServiceAccountToken": "yes"}, "must be a boolean"),
    ],
)  # fmt: skip
def test_fake_refuses_rbac_objects_a_real_api_server_refuses(
    kube: FakeKube, plural: str, body: dict[str, Any], message: str
) -> None:
    from kubetune.errors import KubetuneError

    kind = {"roles": cluster.ROLE, "rolebindings": cluster.ROLE_BINDING,
            "serviceaccounts": cluster.SERVICE_ACCOUNT}[plural]  # fmt: skip
    doc = {"apiVersion": kind.api_version, "kind": kind.kind,
           "metadata": {"name": "bad"}, **body}  # fmt: skip
    with pytest.raises(KubetuneError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cluster.connect().apply(doc, NS)
    assert kube.get(plural, NS, "bad") is None


def test_fake_refuses_a_changed_role_ref(kube: FakeKube) -> None:
    from kubetune.errors import KubetuneError

    spec = specmod.validate(driven("s3://runs/x", PRUNED_GRID))
    binding = objects(render.render_driver(spec, NS))["RoleBinding"]
    target = cluster.connect()
    target.apply(binding, NS)
    changed = {**binding, "roleRef": {**binding["roleRef"], "name": "other"}}
    with pytest.raises(KubetuneError, match="cannot change roleRef"):
        target.apply(changed, NS)


@pytest.mark.slow
def test_checkov_passes_the_driver_but_for_its_api_token(tmp_path: Path) -> None:
    import shutil
    import sys

    from test_chart import ACCEPTED, checkov

    if shutil.which("checkov", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("checkov is part of the dev extra")
    spec = specmod.validate(driven("s3://runs/x", PRUNED_GRID))
    (tmp_path / "driver.yaml").write_text(render.render_driver(spec, "ml-training").text())
    failed = {c["check_id"] for c in checkov(tmp_path)["failed_checks"]}
    # CKV_K8S_38: the driver's pod mounts its service account token: it calls the API.
    assert failed <= set(ACCEPTED) | {"CKV_K8S_38"}, failed
