"""kubetune submit against a fake Kubernetes API server over real HTTP (tests/kubefake.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import render as rendermod
from kubetune import spec as specmod
from kubetune import sweep
from kubetune.kube import client as cluster
from kubetune.kube import submit as submitmod

import kubefake
from conftest import ROOT, base_spec
from kubefake import FakeKube, kubetune, table, write_kubeconfig

APPLY_ORDER = ["networkpolicies", "configmaps", "services", "jobs"]
ADOPT_ORDER = ["networkpolicies", "services", "configmaps"]


@pytest.fixture
def kube(kube_server: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    kube_server.reset()
    monkeypatch.setenv(
        "KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", kube_server.url))
    )
    return kube_server


def grid(**overrides: Any) -> dict[str, Any]:
    """Four runs: two learning rates × one and two nodes (two nodes add a Service)."""
    return base_spec(
        resources={"gpus": 1},
        sweep={
            "method": "grid",
            "parameters": {
                "train.learning_rate": {"values": [1e-5, 2e-5]},
                "resources.nodes": {"values": [1, 2]},
            },
        },
        **overrides,
    )


def runs_of(path: Path) -> list[sweep.ResolvedRun]:
    return sweep.expand(specmod.load(path), str(path))


def patches(kube: FakeKube) -> list[kubefake.Request]:
    return [r for r in kube.requests if r.method == "PATCH"]


def applies(kube: FakeKube) -> list[kubefake.Request]:
    return [r for r in patches(kube) if r.content_type == "application/apply-patch+yaml"]


def test_submit_applies_every_runs_objects_in_order_concurrently(
    kube: FakeKube, write_spec: Any
) -> None:
    path = write_spec(grid())
    runs = runs_of(path)
    kube.latency_s = 0.05
    ran = kubetune("submit", str(path), "-n", "ml")
    assert ran.code == 0, ran.errors or ran.stderr
    assert "4 runs in ml: 4 created" in ran.stderr
    assert table(ran.stdout) == {run.run_id: ["created", "—"] for run in runs}
    for run in runs:
        mine = [r for r in kube.requests if r.path.endswith(f"/{run.run_id}")]
        # First the idempotency check, then the objects in install order, Job last, then
        # the dependents again with an ownerReference to the Job (the ConfigMap last).
        check = ("GET", f"/apis/batch/v1/namespaces/ml/jobs/{run.run_id}")
        assert (mine[0].method, mine[0].path) == check
        plurals = [r.path.split("/")[-2] for r in mine[1:]]
        multi = run.spec.resources.nodes > 1
        installed = [p for p in APPLY_ORDER if multi or p != "services"]
        adopted = [p for p in ADOPT_ORDER if multi or p != "services"]
        assert plurals == installed + adopted
        stored = {p: kube.get(p, "ml", run.run_id) for p in APPLY_ORDER}
        assert (stored["services"] is not None) == multi
        job = stored["jobs"]
        assert job is not None
        assert job["metadata"]["annotations"]["kubetune.io/spec-hash"] == run.spec_hash
        assert job["metadata"]["namespace"] == "ml"
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": run.run_id}
        for plural in installed[:-1]:
            refs = stored[plural]["metadata"]["ownerReferences"]  # type: ignore[index]
            assert refs == [{**owner, "uid": job["metadata"]["uid"]}]
    for request in patches(kube):
        if request.content_type == "application/merge-patch+json":
            # The ownerReference: a merge patch never creates an object that is gone.
            assert request.query == {"fieldManager": "kubetune"}
            (ref,) = yaml.safe_load(request.body)["metadata"]["ownerReferences"]
            assert ref["kind"] == "Job" and request.path.endswith(f"/{ref['name']}")
            continue
        assert request.content_type == "application/apply-patch+yaml"
        # A Job is never forced: a Job that appeared meanwhile is a conflict, not taken over.
        force = "false" if "/jobs/" in request.path else "true"
        assert request.query == {"fieldManager": "kubetune", "force": force}
    assert kube.max_in_flight >= 2, "runs are submitted concurrently"


def test_submit_again_sends_no_patch_and_reports_unchanged(kube: FakeKube, write_spec: Any) -> None:
    path = write_spec(grid())
    assert kubetune("submit", str(path), "-n", "ml").code == 0
    kube.requests.clear()
    again = kubetune("submit", str(path), "-n", "ml")
    assert again.code == 0
    assert patches(kube) == []
    # The Job, and its ConfigMap to see that it names the Job (adopted last, so all are).
    assert [r.method for r in kube.requests] == ["GET"] * 8
    assert "4 runs in ml: 4 unchanged" in again.stderr
    assert {tuple(cells) for cells in table(again.stdout).values()} == {("unchanged", "Pending")}


def test_a_job_of_the_same_name_with_another_spec_hash_is_a_conflict_left_alone(
    kube: FakeKube, write_spec: Any
) -> None:
    path = write_spec(grid())
    first, *others = runs_of(path)
    foreign: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": first.run_id,
            "namespace": "ml",
            "annotations": {"kubetune.io/spec-hash": "f" * 64},
        },
        "spec": {"template": {"spec": {"containers": []}}},
    }
    kube.put(foreign)
    ran = kubetune("submit", str(path), "-n", "ml")
    assert ran.code == 1
    rows = table(ran.stdout)
    assert rows[first.run_id] == [
        "conflict",
        f"Job ml/{first.run_id} exists with spec hash ffffffffffff…; kubetune never changes a "
        f"Job: delete it (kubetune cancel {first.run_id}) and submit again",
    ]
    assert {rows[run.run_id][0] for run in others} == {"created"}
    assert "4 runs in ml: 1 conflict, 3 created" in ran.stderr
    assert not [r for r in patches(kube) if r.path.endswith(first.run_id)], "never touched"
    job = kube.get("jobs", "ml", first.run_id)
    assert job is not None and job["metadata"]["annotations"] == foreign["metadata"]["annotations"]
    for run in others:
        assert kube.get("jobs", "ml", run.run_id) is not None


def test_dry_run_sends_the_same_patches_with_dry_run_all_and_stores_nothing(
    kube: FakeKube, write_spec: Any
) -> None:
    path = write_spec(grid())
    ran = kubetune("submit", str(path), "-n", "ml", "--dry-run")
    assert ran.code == 0, ran.errors
    assert "dry run in ml: checked by the API server, nothing stored" in ran.stdout
    assert len(patches(kube)) == 3 + 3 + 4 + 4
    assert {r.query.get("dryRun") for r in patches(kube)} == {"All"}
    assert kube.objects == {}


def test_run_option_submits_one_run(kube: FakeKube, write_spec: Any) -> None:
    path = write_spec(grid())
    target = runs_of(path)[2]
    ran = kubetune("submit", str(path), "-n", "ml", "--run", target.run_id)
    assert ran.code == 0
    assert {k[2] for k in kube.objects} == {target.run_id}


def test_quota_fails_the_runs_it_has_no_room_for(kube: FakeKube, write_spec: Any) -> None:
    path = write_spec(grid())
    kube.job_quota["ml"] = 2
    ran = kubetune("submit", str(path), "-n", "ml")
    assert ran.code == 1
    results = sorted(tuple(cells) for cells in table(ran.stdout).values())
    assert [r[0] for r in results] == ["created", "created", "failed", "failed"]
    for _result, detail in results[2:]:
        assert "ResourceQuota compute-quota in namespace ml is used up" in detail
    assert sum(1 for k in kube.objects if k[0] == "jobs") == 2


def test_rbac_refusal_stops_the_submit_with_one_line(kube: FakeKube, write_spec: Any) -> None:
    path = write_spec(grid())
    kube.denied.add(("patch", "jobs.batch", "ml"))
    ran = kubetune("submit", str(path), "-n", "ml")
    assert ran.code == 1
    (line,) = ran.errors
    assert line.startswith("Job ml/bbc-topic-")
    assert line.endswith(
        ": forbidden: alice may not patch jobs.batch in namespace ml; ask a cluster admin to "
        "bind the kubetune-submitter Role of charts/kubetune-job (helm template … --set "
        "rbac.create=true) to you in that namespace"
    )
    assert not any(k[0] == "jobs" for k in kube.objects)


def test_rbac_refusal_as_the_installed_command_prints_one_line(
    kube: FakeKube, write_spec: Any
) -> None:
    path = write_spec(base_spec())
    kube.denied.add(("get", "jobs.batch", "ml"))
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "submit", str(path), "-n", "ml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: Job ml/bbc-topic-") and "may not get jobs.batch" in line
    assert "Traceback" not in proc.stderr


def test_missing_namespace_exits_2_saying_how_to_fix_it(kube: FakeKube, write_spec: Any) -> None:
    ran = kubetune("submit", str(write_spec(grid())), "-n", "nope")
    assert ran.code == 2
    assert ran.errors == ["namespace nope does not exist: kubectl create namespace nope or pass -n"]
    assert kube.objects == {}


def test_kueue_local_queue_is_checked_before_anything_is_applied(
    kube: FakeKube, write_spec: Any
) -> None:
    path = write_spec(base_spec(resources={"gpus": 1, "queue": "team-q"}))
    missing = kubetune("submit", str(path), "-n", "ml")
    assert missing.code == 2
    assert missing.errors == [
        "resources.queue: Kueue LocalQueue team-q not found in ml; create it (kubectl get "
        "localqueues -A lists them) or fix resources.queue"
    ]
    assert patches(kube) == []
    assert [r.path for r in kube.requests[:2]] == [
        "/apis/kueue.x-k8s.io",
        "/apis/kueue.x-k8s.io/v1beta2/namespaces/ml/localqueues/team-q",
    ]

    kube.kueue = False
    absent = kubetune("submit", str(path), "-n", "ml")
    assert absent.code == 2
    assert absent.errors[0].startswith("resources.queue: Kueue is not installed in this cluster")

    kube.kueue = True
    kube.put(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta1",
            "kind": "LocalQueue",
            "metadata": {"name": "team-q", "namespace": "ml"},
        }
    )
    kube.requests.clear()
    ran = kubetune("submit", str(path), "-n", "ml")
    assert ran.code == 0, ran.errors
    assert kube.requests[1].path.endswith("/localqueues/team-q")
    (job,) = [o for k, o in kube.objects.items() if k[0] == "jobs"]
    # The fake runs no Kueue webhook: in a cluster it suspends the Job; the manifest never does.
    assert "suspend" not in job["spec"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-q"


def test_without_a_kubeconfig_submit_exits_2_naming_kubeconfig(
    tmp_path: Path, write_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    ran = kubetune("submit", str(write_spec(base_spec())))
    assert ran.code == 2
    (line,) = ran.errors
    assert "set KUBECONFIG" in line and "--context" in line and str(tmp_path / "missing") in line


def test_submit_overlaps_runs_and_reports_each(kube: FakeKube, write_spec: Any) -> None:
    data = base_spec(sweep={"parameters": {"train.seed": {"values": list(range(16))}}})
    runs = runs_of(write_spec(data))
    rendered = rendermod.render(runs, "ml")
    target = cluster.connect()
    kube.latency_s = 0.05
    seen: list[str] = []
    outcomes = submitmod.submit(rendered, target, "ml", progress=lambda o: seen.append(o.run_id))
    assert [o.run_id for o in outcomes] == [r.run_id for r in runs]
    assert sorted(seen) == sorted(r.run_id for r in runs)
    assert {o.result for o in outcomes} == {"created"}
    # The fake server saw the runs' requests overlap (each one is held 50 ms there), which is
    # what makes a sweep's submit take a fraction of one request after another.
    assert kube.max_in_flight >= 8


def test_a_rendered_run_applies_the_same_documents_render_prints(
    kube: FakeKube, write_spec: Any
) -> None:
    path = write_spec(base_spec())
    assert kubetune("submit", str(path), "-n", "ml").code == 0
    printed = kubetune("render", str(path), "-n", "ml").stdout
    sent = [yaml.safe_load(r.body) for r in applies(kube)]
    assert sent == [d for d in yaml.safe_load_all(printed) if d]


@pytest.mark.parametrize(
    "resources",
    [
        {"gpus": 0},
        {"gpus": 1, "nodes": 2},
        {"gpus": 1, "queue": "team-q", "priority_class": "high"},
    ],
)
def test_manifests_name_each_document_as_parsing_it_would(resources: dict[str, Any]) -> None:
    (run,) = sweep.expand(specmod.validate(base_spec(name="a-long-name-x", resources=resources)))
    (item,) = rendermod.render([run], "ml")
    found = submitmod.manifests(item)
    assert len(found) == len(item.documents)
    for manifest, (_template, text) in zip(found, item.documents, strict=True):
        doc = yaml.safe_load(text)
        assert manifest.kind is cluster.kind_of(doc)
        assert manifest.name == doc["metadata"]["name"] == run.run_id
        assert manifest.chart == doc["metadata"]["labels"]["helm.sh/chart"]
        assert manifest.text == text


def test_manifests_parse_a_document_the_header_pattern_does_not_fit() -> None:
    (run,) = sweep.expand(specmod.validate(base_spec()))
    (item,) = rendermod.render([run], "ml")
    flow = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: odd, labels: {helm.sh/chart: c-1}}"
    odd = rendermod.Rendered(item.run, item.values, (("configmap.yaml", flow),))
    (manifest,) = submitmod.manifests(odd)
    assert (manifest.kind, manifest.name, manifest.chart) == (cluster.CONFIG_MAP, "odd", "c-1")


@pytest.mark.parametrize(
    ("served", "used"),
    [(["v1beta2"], "v1beta2"), (["v1beta1"], "v1beta1"), (["v1beta2", "v1beta1"], "v1beta2")],
)
def test_the_local_queue_is_read_at_the_version_kueue_serves(
    kube: FakeKube, write_spec: Any, served: list[str], used: str
) -> None:
    kube.kueue_versions = served
    kube.put(
        {
            "apiVersion": f"kueue.x-k8s.io/{used}",
            "kind": "LocalQueue",
            "metadata": {"name": "team-q", "namespace": "ml"},
        }
    )
    path = write_spec(base_spec(resources={"gpus": 1, "queue": "team-q"}))
    ran = kubetune("submit", str(path), "-n", "ml")
    assert ran.code == 0, ran.errors
    assert [r.path for r in kube.requests[:2]] == [
        "/apis/kueue.x-k8s.io",
        f"/apis/kueue.x-k8s.io/{used}/namespaces/ml/localqueues/team-q",
    ]


def test_kueue_missing_or_serving_only_unknown_versions_is_one_line(
    kube: FakeKube, write_spec: Any
) -> None:
    path = write_spec(base_spec(resources={"gpus": 1, "queue": "team-q"}))
    kube.kueue_versions = []
    absent = kubetune("submit", str(path), "-n", "ml")
    assert absent.code == 2
    assert absent.errors == [
        "resources.queue: Kueue is not installed in this cluster (no kueue.x-k8s.io API); "
        "install Kueue or remove resources.queue"
    ]
    kube.kueue_versions = ["v1"]
    unknown = kubetune("submit", str(path), "-n", "ml")
    assert unknown.code == 2
    assert unknown.errors == [
        "resources.queue: this cluster's Kueue serves kueue.x-k8s.io v1; kubetune knows "
        "v1beta2, v1beta1: upgrade kubetune or Kueue"
    ]
    assert patches(kube) == []


def test_a_resubmit_finishes_a_submit_cut_off_before_the_ownerreferences(
    kube: FakeKube, write_spec: Any
) -> None:
    """A submit stopped after creating the Job left its dependents without an owner: the
    next submit finds the Job unchanged and adopts them; the garbage collector then takes
    them with the Job."""
    path = write_spec(base_spec(resources={"gpus": 1, "nodes": 2}))
    (run,) = runs_of(path)
    (rendered,) = rendermod.render([run], "ml")
    target = cluster.connect()
    for doc in submitmod.manifests(rendered):  # what the cut-off submit had sent
        target.apply_text(doc.kind, doc.name, "ml", doc.text + "\n")
    assert all("ownerReferences" not in o["metadata"] for o in kube.objects.values()), (
        "not adopted yet"
    )
    ran = kubetune("submit", str(path), "-n", "ml")
    assert ran.code == 0 and table(ran.stdout)[run.run_id][0] == "unchanged"
    uid = kube.get("jobs", "ml", run.run_id)["metadata"]["uid"]  # type: ignore[index]
    for plural in ("networkpolicies", "configmaps", "services"):
        refs = kube.get(plural, "ml", run.run_id)["metadata"]["ownerReferences"]  # type: ignore[index]
        assert [r["uid"] for r in refs] == [uid]
    # kubectl delete job (Background): the garbage collector deletes the dependents too.
    assert target.delete(cluster.JOB, "ml", run.run_id, "Background")
    assert kube.objects == {}


def test_objects_left_by_a_deleted_job_are_taken_over_by_the_new_one(
    kube: FakeKube, write_spec: Any
) -> None:
    """The Job is gone but the garbage collector has not yet taken its ConfigMap (it runs
    asynchronously): the ConfigMap must not keep the old Job's reference, or the collector
    would delete it under the new Job's pod."""
    path = write_spec(base_spec())
    (run,) = runs_of(path)
    assert kubetune("submit", str(path), "-n", "ml").code == 0
    old = kube.get("jobs", "ml", run.run_id)["metadata"]["uid"]  # type: ignore[index]
    kube.remove("jobs", "ml", run.run_id)  # deleted; its dependents not collected yet
    stale = kube.get("configmaps", "ml", run.run_id)
    assert stale is not None and stale["metadata"]["ownerReferences"][0]["uid"] == old
    assert kubetune("submit", str(path), "-n", "ml").code == 0
    new = kube.get("jobs", "ml", run.run_id)["metadata"]["uid"]  # type: ignore[index]
    for plural in ("networkpolicies", "configmaps"):
        refs = kube.get(plural, "ml", run.run_id)["metadata"]["ownerReferences"]  # type: ignore[index]
        assert [r["uid"] for r in refs] == [new] != [old]
