"""`kubetune reproduce RUN --submit` against the stricter fake API server (tests/kubefake.py):
it looks at the run's Job before it sends anything, and never applies over an existing one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import spec as specmod
from kubetune import sweep
from kubetune.kube import client as cluster
from kubetune.store import FileStore, RunLocation

from conftest import ROOT, base_spec
from kubefake import FakeKube, kubetune, write_kubeconfig

OTHER_DIGEST = "registry.example/kubetune-trainer@sha256:" + "cd" * 32
KUEUE = "kueue-controller-manager"
KUBETUNE = [sys.executable, "-m", "kubetune.cli"]


@pytest.fixture
def kube(kube_server: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    kube_server.reset()
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", kube_server.url)))
    return kube_server


def stored_run(root: Path, **overrides: Any) -> str:
    """A completed run folder (as the trainer writes it) of a renderable spec; its URI."""
    (run,) = sweep.expand(specmod.validate(base_spec(**overrides)))
    location = RunLocation(FileStore(f"file://{root}"), run.sweep, run.run_id)
    location.store.write_text(location.key("spec.yaml"), specmod.dump(run.spec))
    location.store.write_json(
        location.key("run.json"),
        {
            "status": "completed",
            "run_id": run.run_id,
            "sweep": run.sweep,
            "params": {},
            "image": run.spec.image,
            "render": {"chart": "kubetune-job-0.1.0", "namespace": ""},
        },
    )
    return location.url


def reproduce(uri: str, *args: str) -> Any:
    return kubetune("reproduce", uri, "--submit", "-n", "ml", *args)


def writes(kube: FakeKube) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube.requests if r.method != "GET"]


def env_of(job: dict[str, Any]) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def set_status(kube: FakeKube, run_id: str, manager: str | None = None, **status: Any) -> None:
    job = kube.get("jobs", "ml", run_id)
    assert job is not None
    kube.put({**job, "status": status}, manager=manager)


def test_a_completed_run_in_its_own_store_is_refused_before_any_request(
    kube: FakeKube, tmp_path: Path
) -> None:
    refused = reproduce(stored_run(tmp_path / "runs"))
    assert refused.code == 2 and kube.requests == []
    (line,) = refused.errors
    assert "a Job would find it finished" in line and "--store" in line


def test_no_job_creates_the_objects_owned_by_the_job(kube: FakeKube, tmp_path: Path) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    ran = reproduce(uri, "--store", "s3://kind-runs", "--endpoint", "http://minio:9000")
    assert ran.code == 0, ran.errors
    assert f"created Job ml/{run_id} and its objects" in ran.stderr
    policy = f"/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies/{run_id}"
    config = f"/api/v1/namespaces/ml/configmaps/{run_id}"
    job_path = f"/apis/batch/v1/namespaces/ml/jobs/{run_id}"
    # Look first; the ConfigMap exists before the Job whose pod mounts it; once the Job has a
    # uid, its dependents are applied again with an ownerReference to it.
    assert [(r.method, r.path) for r in kube.requests] == [
        ("GET", job_path),
        ("PATCH", policy),
        ("PATCH", config),
        ("PATCH", job_path),
        ("PATCH", policy),
        ("PATCH", config),
    ]
    assert kube.requests[3].query["force"] == "false", "a new Job never takes fields over"
    assert [r.content_type for r in kube.requests[4:]] == ["application/merge-patch+json"] * 2
    job = kube.get("jobs", "ml", run_id)
    assert job is not None
    env = env_of(job)
    assert env["KUBETUNE_STORE"] == "s3://kind-runs"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["KUBETUNE_RUN_ID"] == run_id, "the same run, written elsewhere"
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": run_id, "uid": job["metadata"]["uid"]}
    for plural in ("networkpolicies", "configmaps"):
        stored = kube.get(plural, "ml", run_id)
        assert stored is not None and stored["metadata"]["ownerReferences"] == [owner]
    spec_yaml = kube.get("configmaps", "ml", run_id)["data"]["spec.yaml"]  # type: ignore[index]
    assert spec_yaml.endswith("\n") and yaml.safe_load(spec_yaml)["name"] == "bbc-topic"

    # ttlSecondsAfterFinished: the TTL controller deletes the Job (Foreground); the garbage
    # collector takes the ConfigMap and NetworkPolicy with it.
    set_status(kube, run_id, conditions=[{"type": "Complete", "status": "True"}])
    kube.expire("ml", run_id)
    assert [k for k in kube.objects if k[1] == "ml"] == []


def test_a_running_kueue_job_is_left_alone_and_keeps_its_pods(
    kube: FakeKube, tmp_path: Path
) -> None:
    uri = stored_run(tmp_path / "runs", resources={"gpus": 1, "queue": "team-q"})
    run_id = uri.rsplit("/", 1)[-1]
    kube.put(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "team-q", "namespace": "ml"},
        }
    )
    assert reproduce(uri, "--store", "s3://other").code == 0
    # Kueue admits the Job: its controller unsuspends it and so owns spec.suspend.
    job = kube.get("jobs", "ml", run_id)
    assert job is not None
    admitted = {**job, "spec": {**job["spec"], "suspend": False}}
    admitted["status"] = {"active": 1, "ready": 1, "startTime": "2026-01-02T03:05:00Z"}
    kube.put(admitted, manager=KUEUE)
    assert ".spec.suspend" in kube.managers("jobs", "ml", run_id)[KUEUE]
    kube.requests.clear()

    again = reproduce(uri, "--store", "s3://other")
    assert again.code == 0, again.errors
    assert f"Job ml/{run_id} is already there (Running) with this pod; nothing changed" in (
        " ".join(again.stderr.split())
    )
    assert writes(kube) == [], "nothing is applied over a running Job"
    job = kube.get("jobs", "ml", run_id)
    assert job is not None and job["spec"]["suspend"] is False


def test_a_completed_job_in_the_target_store_says_nothing_ran(
    kube: FakeKube, tmp_path: Path
) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    assert reproduce(uri, "--store", "s3://kind-runs").code == 0
    set_status(kube, run_id, conditions=[{"type": "Complete", "status": "True"}], succeeded=1)
    kube.requests.clear()
    again = reproduce(uri, "--store", "s3://kind-runs")
    assert again.code == 0, again.errors
    message = " ".join(again.stderr.split())
    assert f"Job ml/{run_id} already completed, so nothing ran" in message
    assert "the run is completed in s3://kind-runs" in message and "--store" in message
    assert writes(kube) == []


def test_a_failed_job_is_refused_and_replace_runs_it_again(kube: FakeKube, tmp_path: Path) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    assert reproduce(uri, "--store", "s3://kind-runs").code == 0
    failed = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    set_status(kube, run_id, conditions=failed, failed=4)
    old_uid = kube.get("jobs", "ml", run_id)["metadata"]["uid"]  # type: ignore[index]
    kube.requests.clear()

    refused = reproduce(uri, "--store", "s3://kind-runs")
    assert refused.code == 2
    assert refused.errors == [
        f"Job ml/{run_id} failed (BackoffLimitExceeded): pass --replace to delete it (its "
        f"trainer stores a checkpoint) and submit this one, or kubetune cancel {run_id} first"
    ]
    assert writes(kube) == []

    replaced = reproduce(uri, "--store", "s3://kind-runs", "--replace")
    assert replaced.code == 0, replaced.errors
    assert f"replaced Job ml/{run_id} (Failed (BackoffLimitExceeded))" in replaced.stderr
    (delete,) = [r for r in kube.requests if r.method == "DELETE"]
    assert yaml.safe_load(delete.body) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Foreground",
        "preconditions": {"uid": old_uid},
    }
    job = kube.get("jobs", "ml", run_id)
    assert job is not None and job["metadata"]["uid"] != old_uid and "status" not in job
    config = kube.get("configmaps", "ml", run_id)
    assert config is not None
    assert config["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]


@pytest.mark.parametrize(
    ("first", "second", "difference"),
    [
        (
            ["--store", "s3://store-a"],
            ["--store", "s3://store-b"],
            "KUBETUNE_STORE s3://store-a → s3://store-b",
        ),
        (
            ["--store", "s3://store-a"],
            ["--store", "s3://store-a", "--image", OTHER_DIGEST],
            f"trainer image ghcr.io/kubetune/kubetune-trainer@sha256:{'ab' * 32} → {OTHER_DIGEST}",
        ),
    ],
)
def test_another_pod_template_is_refused_before_anything_is_sent(
    kube: FakeKube, tmp_path: Path, first: list[str], second: list[str], difference: str
) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    assert reproduce(uri, *first).code == 0
    before = {k: v["metadata"]["resourceVersion"] for k, v in kube.objects.items()}
    kube.requests.clear()

    refused = reproduce(uri, *second)
    assert refused.code == 2
    (line,) = refused.errors
    assert line.startswith(f"Job ml/{run_id} exists with another pod ({difference}")
    assert "a Job's pod template cannot change: pass --replace" in line
    assert writes(kube) == [], "no ConfigMap or NetworkPolicy is changed before the refusal"
    assert {k: v["metadata"]["resourceVersion"] for k, v in kube.objects.items()} == before


def test_the_api_server_would_refuse_that_template_change(kube: FakeKube, tmp_path: Path) -> None:
    """What applying blindly did: the fake, like a real API server, rejects a new pod
    template on an existing Job with 422 "field is immutable"."""
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    assert reproduce(uri, "--store", "s3://store-a").code == 0
    job = kube.get("jobs", "ml", run_id)
    assert job is not None
    changed = yaml.safe_load(yaml.safe_dump(job))
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        changed["metadata"].pop(key)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = OTHER_DIGEST
    target = cluster.connect()
    with pytest.raises(cluster.ClusterError) as caught:
        target.apply(changed, "ml")
    assert str(caught.value) == (
        f'Job ml/{run_id}: 422 Unprocessable Entity: Job.batch "{run_id}" is invalid: '
        "spec.template: Invalid value: core.PodTemplateSpec{…}: field is immutable"
    )


def test_a_job_of_another_run_is_refused(kube: FakeKube, tmp_path: Path) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    kube.put(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": run_id, "namespace": "ml", "annotations": {}},
            "spec": {"template": {"spec": {"containers": []}}},
        }
    )
    refused = reproduce(uri, "--store", "s3://store-a", "--replace")
    assert refused.code == 2
    assert refused.errors == [
        f"Job ml/{run_id} exists and is not this run (spec hash none); delete it (kubectl "
        f"delete job -n ml {run_id}) or reproduce into another namespace (-n)"
    ]
    assert writes(kube) == []


def test_a_job_being_deleted_exits_1_saying_to_try_again(kube: FakeKube, tmp_path: Path) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    assert reproduce(uri, "--store", "s3://store-a").code == 0
    kube.hold_deletion("jobs", "ml", run_id)
    assert cluster.connect().delete(cluster.JOB, "ml", run_id, "Foreground")
    kube.requests.clear()
    ran = reproduce(uri, "--store", "s3://store-a")
    assert ran.code == 1
    assert ran.errors == [f"Job ml/{run_id} is being deleted; run this again once it is gone"]
    assert writes(kube) == []


def test_replace_waits_until_the_old_job_and_its_pods_are_gone(
    kube: FakeKube, tmp_path: Path
) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    assert reproduce(uri, "--store", "s3://store-a").code == 0
    old_uid = kube.get("jobs", "ml", run_id)["metadata"]["uid"]  # type: ignore[index]
    kube.hold_deletion("jobs", "ml", run_id)  # its pods take their grace period to stop
    kube.requests.clear()
    proc = subprocess.Popen(
        [
            *KUBETUNE,
            "reproduce",
            uri,
            "--submit",
            "-n",
            "ml",
            "--store",
            "s3://store-b",
            "--replace",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "250"},
    )
    try:
        deadline = time.monotonic() + 120
        while not any(r.query.get("watch") == "true" for r in kube.requests):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "reproduce never watched the Job"
            time.sleep(0.05)
        watch = next(r for r in kube.requests if r.query.get("watch") == "true")
        assert watch.query["fieldSelector"] == f"metadata.name={run_id}"
        job = kube.get("jobs", "ml", run_id)
        assert job is not None and job["metadata"]["deletionTimestamp"]
        assert not [r for r in kube.requests if r.method == "PATCH"], "nothing created yet"
        kube.finish_deletion("jobs", "ml", run_id)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    job = kube.get("jobs", "ml", run_id)
    assert job is not None and job["metadata"]["uid"] != old_uid
    assert env_of(job)["KUBETUNE_STORE"] == "s3://store-b"


def test_reproduce_submit_api_error_exits_1_in_one_line(kube: FakeKube, tmp_path: Path) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    kube.refuse.add(f"/apis/batch/v1/namespaces/ml/jobs/{run_id}")
    ran = reproduce(uri, "--store", "s3://other")
    assert ran.code == 1
    assert ran.errors == [
        f"Job ml/{run_id}: 422 Unprocessable Entity: Job.batch "
        f'"{run_id}" is invalid: spec.template: Invalid value: field is immutable'
    ]


def test_reproduce_submit_without_kubeconfig_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    ran = reproduce(stored_run(tmp_path / "runs"), "--store", "s3://other")
    assert ran.code == 2
    (line,) = ran.errors
    assert line.startswith("Kubernetes config") and "set KUBECONFIG" in line
