"""kubetune status, logs, cancel and list against a fake Kubernetes API server over real HTTP
(tests/kubefake.py): runs are submitted with ``kubetune submit``, then their Jobs and pods
are moved through the states a cluster would put them in."""

from __future__ import annotations

import copy
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kubetune import spec as specmod
from kubetune import sweep
from kubetune.kube import client as cluster
from kubetune.kube import watch as kuberuns
from kubetune.store import RunLocation, open_store

from conftest import base_spec
from kubefake import FakeKube, kubetune, table, write_kubeconfig

NS = "ml"


@pytest.fixture
def kube(kube_server: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    kube_server.reset()
    config = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, namespace=NS)
    monkeypatch.setenv("KUBECONFIG", str(config))
    return kube_server


def seeds(count: int, name: str = "bbc-topic", **overrides: Any) -> dict[str, Any]:
    return base_spec(
        name=name, sweep={"parameters": {"train.seed": {"values": list(range(count))}}}, **overrides
    )


def submitted(
    write_spec: Any, data: dict[str, Any], file: str = "job.yaml"
) -> tuple[Path, list[str]]:
    """Submit a spec; its path and run ids."""
    path = write_spec(data, file)
    ran = kubetune("submit", str(path))
    assert ran.code == 0, ran.errors
    return path, [r.run_id for r in sweep.expand(specmod.load(path), str(path))]


def set_job(kube: FakeKube, run_id: str, **status: Any) -> dict[str, Any]:
    job = copy.deepcopy(kube.get("jobs", NS, run_id))
    assert job is not None
    job["status"] = status
    return kube.put(job)


def condition(kind: str, reason: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason}


def add_pod(
    kube: FakeKube,
    run_id: str,
    name: str,
    *,
    state: dict[str, Any],
    phase: str = "Running",
    index: int | None = None,
    created: str = "2026-01-02T03:05:00Z",
    node: str = "gpu-1",
) -> dict[str, Any]:
    job = kube.get("jobs", NS, run_id)
    assert job is not None
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = str(index)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": created,
            "labels": labels,
            "ownerReferences": [{"kind": "Job", "name": run_id, "uid": job["metadata"]["uid"]}],
        },
        "spec": {"nodeName": node},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }
    return kube.put(pod)


RUNNING = {"running": {"startedAt": "2026-01-02T03:06:00Z"}}
OOM = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}


# --- status -------------------------------------------------------------------------------


def test_status_of_a_spec_shows_phase_pods_restarts_node_and_stored_metric(
    kube: FakeKube, write_spec: Any, s3_env: str
) -> None:
    path = write_spec(seeds(4))
    ids = [r.run_id for r in sweep.expand(specmod.load(path), str(path))]
    done, running, failed, later = ids
    for run_id in (done, running, failed):
        assert kubetune("submit", str(path), "--run", run_id).code == 0
    set_job(kube, done, conditions=[condition("Complete")], succeeded=1)
    add_pod(
        kube,
        done,
        "done-1",
        phase="Succeeded",
        state={"terminated": {"reason": "Completed", "exitCode": 0}},
    )
    set_job(kube, running, active=1, ready=1, failed=1)
    add_pod(kube, running, "run-1", phase="Failed", state=OOM, created="2026-01-02T03:01:00Z")
    add_pod(kube, running, "run-2", state=RUNNING, node="gpu-7")
    set_job(kube, failed, conditions=[condition("Failed", "BackoffLimitExceeded")], failed=4)
    add_pod(kube, failed, "failed-1", phase="Failed", state=OOM)
    store = open_store("s3://runs/kubetune")
    store.write_json(
        RunLocation(store, "bbc-topic", done).key("run.json"),
        {"status": "completed", "metrics": {"test": {"accuracy": 0.9821, "f1": 0.98}}},
    )

    ran = kubetune("status", str(path))
    assert ran.code == 0, ran.errors
    assert "sweep bbc-topic in ml" in ran.stdout
    rows = table(ran.stdout)
    # run id → seed, job, pod, restarts, node, age, metric
    assert rows[done][:5] == ["0", "Succeeded", "Completed (exit 0)", "0", "gpu-1"]
    assert rows[done][6] == "test accuracy 0.9821"
    assert rows[running][:5] == ["1", "Running", "Running", "1", "gpu-7"]
    assert rows[failed][1:3] == ["Failed (BackoffLimitExceeded)", "OOMKilled (exit 137)"]
    assert rows[later] == ["3", "Not submitted", "—", "—", "—", "—", "—"]
    assert rows[running][6] == rows[failed][6] == "—", "no record yet"


def test_status_says_which_run_cannot_start_why_and_what_to_do(
    kube: FakeKube, write_spec: Any
) -> None:
    path, (stuck, fine) = submitted(write_spec, seeds(2))
    set_job(kube, stuck, active=1)
    missing = {
        "waiting": {
            "reason": "CreateContainerConfigError",
            "message": 'secret "kubetune-s3" not found',
        }
    }
    add_pod(kube, stuck, "stuck-1", state=missing, phase="Pending")
    set_job(kube, fine, active=1, ready=1)
    add_pod(kube, fine, "fine-1", state=RUNNING)
    ran = kubetune("status", str(path))
    assert ran.code == 0, ran.errors
    assert table(ran.stdout)[stuck][2] == "CreateContainerConfigError"
    (line,) = [line for line in ran.stdout.splitlines() if line.startswith("stuck:")]
    assert line.startswith(f"stuck: run {stuck}: secret kubetune-s3 not found in ml for ")
    assert line.endswith(': create it (README "Secrets for S3 and W&B")')


def test_status_finds_a_pod_waiting_for_a_config_map_that_is_gone(
    kube: FakeKube, write_spec: Any
) -> None:
    path, (run_id,) = submitted(write_spec, base_spec())
    set_job(kube, run_id, active=1)
    pod = add_pod(kube, run_id, "waits-1", state={"waiting": {"reason": "ContainerCreating"}})
    job = kube.get("jobs", NS, run_id)
    assert job is not None
    pod["spec"]["volumes"] = job["spec"]["template"]["spec"]["volumes"]
    kube.put(pod)
    kube.remove("configmaps", NS, run_id)  # deleted by hand, say
    kube.requests.clear()
    ran = kubetune("status", str(path))
    assert ran.code == 0, ran.errors
    assert ("GET", f"/api/v1/namespaces/{NS}/configmaps/{run_id}") in [
        (r.method, r.path) for r in kube.requests
    ]
    (line,) = [line for line in ran.stdout.splitlines() if line.startswith("stuck:")]
    assert line.startswith(f"stuck: run {run_id}: ConfigMap {run_id} not found in {NS} for ")
    # Submitting again makes it again (the Job is unchanged; its ConfigMap is adopted anew).
    assert kubetune("submit", str(path)).code == 0
    config = kube.get("configmaps", NS, run_id)
    assert (
        config is not None
        and config["metadata"]["ownerReferences"][0]["uid"] == (job["metadata"]["uid"])
    )
    after = kubetune("status", str(path)).stdout
    assert f"ConfigMap {run_id} not found" not in after


def test_status_shows_a_dash_when_the_store_cannot_be_reached(
    kube: FakeKube, write_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec())
    set_job(kube, run_id, conditions=[condition("Complete")])
    # A store that hangs up on every connection, counting them: a status gives up after a
    # couple of tries (the run's client retries 10 times, with backoff, for minutes).
    listener = socket.create_server(("127.0.0.1", 0))
    tries = []

    def hang_up() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            tries.append(1)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    try:
        ran = kubetune("status", run_id)
    finally:
        listener.close()
    assert ran.code == 0, ran.errors
    assert table(ran.stdout)[run_id][0] == "Succeeded"
    assert table(ran.stdout)[run_id][-1] == "—"
    assert 1 <= len(tries) <= 4  # 2 tries a request; the default client makes 10


def test_status_by_run_id_by_sweep_name_and_of_nothing(kube: FakeKube, write_spec: Any) -> None:
    _path, ids = submitted(write_spec, seeds(3))
    submitted(write_spec, seeds(2, name="other-sweep"), "other.yaml")
    one = kubetune("status", ids[1])
    assert one.code == 0
    assert "run " + ids[1] in one.stdout
    assert list(table(one.stdout)) == [ids[1]]
    everything = kubetune("status", "bbc-topic")
    assert sorted(table(everything.stdout)) == sorted(ids)
    nothing = kubetune("status", "no-such-sweep")
    assert nothing.code == 2
    assert nothing.errors == [
        "no sweep or run no-such-sweep in namespace ml; kubetune list shows what is there"
    ]


def test_status_names_the_missing_permission(kube: FakeKube, write_spec: Any) -> None:
    kube.denied.add(("list", "pods", NS))
    ran = kubetune("status", "bbc-topic")
    assert ran.code == 1
    (line,) = ran.errors
    assert line.startswith("Pods in ml: forbidden: alice may not list pods in namespace ml;")


# --- watch --------------------------------------------------------------------------------


def test_watch_follows_jobs_and_pods_through_their_streams(kube: FakeKube, write_spec: Any) -> None:
    _path, (first, second) = submitted(write_spec, seeds(2))
    target = cluster.connect()
    stop = threading.Event()
    selector = kuberuns.resolve(target, NS, "bbc-topic").selector
    updates = kuberuns.watch(target, NS, selector, stop, timeout_s=30, refresh_s=30)
    try:
        jobs, pods = next(updates)
        assert sorted(j["metadata"]["name"] for j in jobs) == sorted([first, second])
        assert pods == []
        set_job(kube, first, active=1, ready=1)
        jobs, pods = next(updates)
        assert {j["metadata"]["name"]: j.get("status") for j in jobs}[first] == {
            "active": 1,
            "ready": 1,
        }
        add_pod(kube, first, "p-1", state=RUNNING)
        jobs, pods = next(updates)
        assert [p["metadata"]["name"] for p in pods] == ["p-1"]
        kube.remove("jobs", NS, second)
        jobs, pods = next(updates)
        assert [j["metadata"]["name"] for j in jobs] == [first]
        watches = [r for r in kube.requests if r.query.get("watch") == "true"]
        assert {r.path for r in watches} == {
            f"/apis/batch/v1/namespaces/{NS}/jobs",
            f"/api/v1/namespaces/{NS}/pods",
        }
        assert {r.query["labelSelector"] for r in watches} == {selector}
    finally:
        stop.set()
        updates.close()


def test_watch_lists_again_when_its_version_is_too_old(kube: FakeKube, write_spec: Any) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec())
    target = cluster.connect()
    stop = threading.Event()
    # Every watch from a version below 1000 is answered 410 Gone; a later list resets it.
    kube.expired_below = 1000
    # Watches and refreshes far longer than the test: only a 410 can make it list again.
    updates = kuberuns.watch(target, NS, "", stop, timeout_s=3600, refresh_s=3600)
    try:
        jobs, _pods = next(updates)
        while sum(1 for r in kube.requests if r.query.get("limit")) < 4:
            time.sleep(0.05)  # the test's timeout ends a watch that never lists again
        kube.expired_below = 0
        set_job(kube, run_id, active=1, ready=1)
        # Snapshots of the lists made while versions were expiring may come first.
        for jobs, _pods in updates:
            if jobs[0].get("status") == {"active": 1, "ready": 1}:
                break
    finally:
        stop.set()
        updates.close()


class Cli:
    """``kubetune …`` as a user runs it: a real process, its stdout read line by line as it
    comes (a thread feeds a queue, so a test waits on a line, never on time)."""

    #: Only for a hang: a line that never comes fails the test instead of blocking it.
    PATIENCE_S = 120

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "300"},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str) -> None:
        """Read stdout until a line holding ``text`` has been printed."""
        while True:
            line = self.lines.get(timeout=self.PATIENCE_S)
            assert line is not None, f"exited before printing {text!r}: {self.seen}"
            self.seen.append(line)
            if text in line:
                return

    def ctrl_c(self) -> tuple[int, list[str]]:
        """SIGINT, as a terminal's Ctrl-C sends it; the exit code and the stderr lines."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stderr is not None
        code = self.proc.wait(timeout=self.PATIENCE_S)
        return code, self.proc.stderr.read().splitlines()


def test_status_watch_prints_each_change_until_ctrl_c_then_exits_130(
    kube: FakeKube, write_spec: Any
) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec())
    watching = Cli("status", run_id, "--watch")
    try:
        # Not a terminal: the first table, then a whole table again at each change.
        watching.wait_for(f"│ {run_id}")
        set_job(kube, run_id, conditions=[condition("Complete")])
        watching.wait_for("Succeeded")
    finally:
        code, errors = watching.ctrl_c()
    assert code == 130
    assert errors == ["interrupted: stopped watching; the runs go on in the cluster"]
    assert table("".join(watching.seen))[run_id][0] == "Succeeded"


# --- logs ---------------------------------------------------------------------------------


def test_logs_print_the_newest_pods_trainer_log(kube: FakeKube, write_spec: Any) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec())
    add_pod(kube, run_id, "old", phase="Failed", state=OOM, created="2026-01-02T03:01:00Z")
    add_pod(kube, run_id, "new", state=RUNNING, created="2026-01-02T03:09:00Z")
    kube.append_log(NS, "old", "attempt 1\n", done=True)
    kube.append_log(NS, "new", "attempt 2: resumed from step-000200\n", done=True)
    ran = kubetune("logs", run_id)
    assert ran.code == 0, ran.errors
    assert ran.stdout == "attempt 2: resumed from step-000200\n"
    assert "pod new (Running)" in ran.stderr
    log = kube.requests[-1]
    assert (log.path, log.query) == (
        f"/api/v1/namespaces/{NS}/pods/new/log",
        {"container": "trainer"},
    )


def test_logs_follow_prints_lines_as_the_trainer_writes_them(
    kube: FakeKube, write_spec: Any
) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec())
    add_pod(kube, run_id, "p", state=RUNNING)
    kube.append_log(NS, "p", "step 1\n")

    def trainer() -> None:
        for step in (2, 3):
            time.sleep(0.2)
            kube.append_log(NS, "p", f"step {step}\n")
        kube.append_log(NS, "p", "done\n", done=True)

    threading.Thread(target=trainer, daemon=True).start()
    ran = kubetune("logs", run_id, "-f")
    assert ran.code == 0, ran.errors
    assert ran.stdout == "step 1\nstep 2\nstep 3\ndone\n"
    assert kube.requests[-1].query == {"container": "trainer", "follow": "true"}


def test_logs_follow_stops_on_ctrl_c_with_one_line_and_exit_130(
    kube: FakeKube, write_spec: Any
) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec())
    add_pod(kube, run_id, "p", state=RUNNING)
    kube.append_log(NS, "p", "step 1\n")
    following = Cli("logs", run_id, "--follow")
    try:
        following.wait_for("step 1")
    finally:
        code, errors = following.ctrl_c()
    assert code == 130
    assert errors == [
        "pod p (Running)",
        "interrupted: stopped following the log; the run goes on in the cluster",
    ]


def test_logs_of_a_multi_node_run_take_the_pod_of_the_rank(kube: FakeKube, write_spec: Any) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec(resources={"gpus": 1, "nodes": 2}))
    add_pod(kube, run_id, "r0", state=RUNNING, index=0)
    add_pod(
        kube, run_id, "r1-a", phase="Failed", state=OOM, index=1, created="2026-01-02T03:01:00Z"
    )
    add_pod(kube, run_id, "r1-b", state=RUNNING, index=1, created="2026-01-02T03:07:00Z")
    for pod in ("r0", "r1-a", "r1-b"):
        kube.append_log(NS, pod, f"I am {pod}\n", done=True)
    assert kubetune("logs", run_id).stdout == "I am r0\n"
    assert kubetune("logs", run_id, "--rank", "1").stdout == "I am r1-b\n"
    missing = kubetune("logs", run_id, "--rank", "2")
    assert (missing.code, missing.errors) == (2, [f"--rank 2: run {run_id} has pods of ranks 0, 1"])


def test_logs_say_why_there_is_nothing_to_show(kube: FakeKube, write_spec: Any) -> None:
    _path, (run_id,) = submitted(write_spec, base_spec())
    no_pod = kubetune("logs", run_id)
    assert no_pod.code == 2
    assert no_pod.errors == [
        f"run {run_id} has no pod yet (Pending); kubetune status {run_id} says why"
    ]
    add_pod(kube, run_id, "p", phase="Pending", state={"waiting": {"reason": "ImagePullBackOff"}})
    waiting = kubetune("logs", run_id)
    assert waiting.code == 2
    assert waiting.errors == [
        f"pod {NS}/p has not started its trainer yet (ImagePullBackOff); kubetune status shows "
        "why, try again once it runs"
    ]
    single = kubetune("logs", run_id, "--rank", "1")
    assert single.errors == [f"--rank 1: run {run_id} runs on one node; its pod is rank 0"]
    unknown = kubetune("logs", "bbc-topic-00000000")
    assert unknown.errors == [
        "no run bbc-topic-00000000 in namespace ml; kubetune list shows the sweeps there"
    ]


# --- cancel and list ----------------------------------------------------------------------


def test_cancel_deletes_the_sweeps_objects_by_label_and_leaves_others(
    kube: FakeKube, write_spec: Any
) -> None:
    path, ids = submitted(write_spec, seeds(2, resources={"gpus": 1, "nodes": 2}))
    _other, (kept,) = submitted(write_spec, base_spec(name="other-sweep"), "other.yaml")
    for i, run_id in enumerate(ids):
        add_pod(kube, run_id, f"pod-{i}", state=RUNNING)
    kube.requests.clear()
    ran = kubetune("cancel", str(path))
    assert ran.code == 0, ran.errors
    lines = [line.strip() for line in ran.stderr.splitlines() if "deleted" in line]
    # kubetune submit gave the ConfigMaps, Services and NetworkPolicies an ownerReference to
    # their Job, so the garbage collector takes them with it (the fake's does so at once);
    # cancel deletes any that are left (objects applied without one, by GitOps).
    assert lines == [f"✓ deleted Job {NS}/{run_id}" for run_id in sorted(ids)]
    deletes = [r for r in kube.requests if r.method == "DELETE"]
    jobs = [r for r in deletes if "/jobs/" in r.path]
    assert len(jobs) == 2
    assert all('"propagationPolicy": "Background"' in r.body for r in jobs)
    assert not any("propagationPolicy" in r.body for r in deletes if r not in jobs)
    lists = [r for r in kube.requests if r.method == "GET"]
    sweep = "app.kubernetes.io/managed-by=kubetune,kubetune.io/sweep=bbc-topic"
    # First the sweep's driver (a driven sweep's), which must stop before its trials go.
    assert lists[0].query["labelSelector"] == f"{sweep},app.kubernetes.io/component=sweep-driver"
    assert all(r.query["labelSelector"] == sweep for r in lists[1:])
    assert {k[2] for k in kube.objects} == {kept}, "pods went with their Jobs; others stay"
    again = kubetune("cancel", str(path))
    assert again.code == 0
    assert "nothing to cancel: no objects of sweep bbc-topic in ml" in again.stderr


def test_cancel_deletes_the_objects_of_a_run_applied_without_owner_references(
    kube: FakeKube, write_spec: Any
) -> None:
    """Manifests applied by GitOps (kubetune render | kubectl apply) carry no ownerReference:
    cancel deletes each object itself."""
    import yaml

    from kubetune import render as rendermod

    path = write_spec(base_spec(resources={"gpus": 1, "nodes": 2}))
    (run,) = sweep.expand(specmod.load(path), str(path))
    (rendered,) = rendermod.render([run], NS)
    cluster.apply([yaml.safe_load(doc) for _name, doc in rendered.documents])
    ran = kubetune("cancel", str(path))
    assert ran.code == 0, ran.errors
    lines = [line.strip() for line in ran.stderr.splitlines() if "deleted" in line]
    assert lines == [
        f"✓ deleted {kind} {NS}/{run.run_id}"
        for kind in ("Job", "ConfigMap", "Service", "NetworkPolicy")
    ]
    assert kube.objects == {}


def test_cancel_of_one_run(kube: FakeKube, write_spec: Any) -> None:
    _path, (first, second) = submitted(write_spec, seeds(2))
    ran = kubetune("cancel", first)
    assert ran.code == 0
    assert {k[2] for k in kube.objects} == {second}


def test_list_counts_each_sweeps_runs_per_phase(kube: FakeKube, write_spec: Any) -> None:
    empty = kubetune("list")
    assert (empty.code, empty.stderr.strip()) == (0, "no kubetune runs in namespace ml")
    _path, ids = submitted(write_spec, seeds(3))
    submitted(write_spec, seeds(2, name="other-sweep"), "other.yaml")
    set_job(kube, ids[0], conditions=[condition("Complete")])
    set_job(kube, ids[1], active=1, ready=1)
    ran = kubetune("list")
    assert ran.code == 0
    assert "namespace ml: 2 sweeps, 5 runs" in ran.stdout
    rows = table(ran.stdout)
    # sweep → runs, Pending, Running, Succeeded, newest
    assert rows["bbc-topic"][:4] == ["3", "1", "1", "1"]
    assert rows["other-sweep"][:4] == ["2", "2", "—", "—"]
