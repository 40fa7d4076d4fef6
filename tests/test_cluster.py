"""kubetune.cluster and kubetune.kube_errors against a fake Kubernetes API server over real
HTTP (tests/kubefake.py): connecting, server-side apply, create, list, watch, logs, delete,
and every refusal as one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubefake import TOKEN, FakeKube, write_kubeconfig
from kubetune import cluster, sweep
from kubetune import kube_errors as ke
from kubetune import render as rendermod
from kubetune import spec as specmod
from kubetune.errors import ConfigError
from kubetune.store import FileStore, RunLocation

from conftest import ROOT, base_spec, free_port


@pytest.fixture
def kube(kube_server: FakeKube) -> FakeKube:
    kube_server.reset()
    return kube_server


@pytest.fixture
def connected(kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> cluster.Cluster:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", kube.url)))
    return cluster.connect()


def documents(namespace: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The rendered manifests of a two-node run: NetworkPolicy, ConfigMap, Service, Job."""
    data = base_spec(resources={"gpus": 1, "nodes": 2}, **overrides)
    (run,) = sweep.expand(specmod.validate(data))
    (rendered,) = rendermod.render([run], namespace)
    return [yaml.safe_load(doc) for _name, doc in rendered.documents]


def test_apply_sends_one_server_side_apply_patch_per_document(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", kube.url)))
    docs = documents()
    name = docs[0]["metadata"]["name"]
    applied = cluster.apply(docs)
    assert [r.method for r in kube.requests] == ["PATCH"] * 4
    assert [r.path for r in kube.requests] == [
        f"/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/{name}",
        f"/api/v1/namespaces/team-a/configmaps/{name}",
        f"/api/v1/namespaces/team-a/services/{name}",
        f"/apis/batch/v1/namespaces/team-a/jobs/{name}",
    ]
    for request, doc in zip(kube.requests, docs, strict=True):
        assert request.content_type == "application/apply-patch+yaml"
        assert request.query == {"fieldManager": "kubetune", "force": "true"}
        assert request.authorization == f"Bearer {TOKEN}"
        assert yaml.safe_load(request.body) == doc
    assert [str(a) for a in applied] == [
        f"{k} team-a/{name}" for k in ("NetworkPolicy", "ConfigMap", "Service", "Job")
    ]
    assert [a.uid for a in applied] == ["uid-1", "uid-2", "uid-3", "uid-4"]


def test_namespace_is_the_manifests_then_the_callers_then_the_contexts_then_default(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    monkeypatch.setenv("KUBECONFIG", str(config))
    write_kubeconfig(config, kube.url, namespace="team-a")
    (job,) = [d for d in documents("ml") if d["kind"] == "Job"]
    (bare,) = [d for d in documents() if d["kind"] == "Job"]
    assert cluster.apply([job], "other")[0].namespace == "ml"
    assert cluster.apply([bare], "other")[0].namespace == "other"
    assert cluster.apply([bare])[0].namespace == "team-a"
    write_kubeconfig(config, kube.url, namespace=None)
    assert cluster.apply([bare])[0].namespace == "default"
    assert [r.path.split("/")[5] for r in kube.requests] == ["ml", "other", "team-a", "default"]


def test_api_error_is_one_line_with_status_and_reason(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", kube.url)))
    docs = documents()
    name = docs[0]["metadata"]["name"]
    kube.refuse.add(f"/apis/batch/v1/namespaces/team-a/jobs/{name}")
    with pytest.raises(cluster.ClusterError) as caught:
        cluster.apply(docs)
    message = str(caught.value)
    assert message == (
        f'Job team-a/{name}: 422 Unprocessable Entity: Job.batch "{name}" is '
        "invalid: spec.template: Invalid value: field is immutable"
    )
    assert caught.value.exit_code == 1


def test_an_unsupported_kind_applies_nothing(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", kube.url)))
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}
    with pytest.raises(ConfigError, match="apps/v1 Deployment x: kubetune applies only"):
        cluster.apply([*documents(), deployment])
    assert kube.requests == []


def test_missing_kubeconfig_names_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="set KUBECONFIG") as caught:
        cluster.connect()
    assert str(tmp_path / "nope") in str(caught.value) and "\n" not in str(caught.value)


def test_unreachable_api_server_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", url)))
    with pytest.raises(cluster.ClusterError, match=f"cannot reach the Kubernetes API at {url}"):
        cluster.apply(documents()[:1])


# --- kubetune reproduce --submit, as a user runs it -----------------------------------------


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


def submit(uri: str, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "reproduce", uri, "--submit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": "250"},
    )


def test_reproduce_submit_applies_the_runs_manifests(kube: FakeKube, tmp_path: Path) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    config = write_kubeconfig(tmp_path / "config", kube.url)
    # The stored run is completed: in its own store the Job would find it finished.
    refused = submit(uri, config, "-n", "ml")
    assert refused.returncode == 2 and kube.requests == []
    (line,) = refused.stderr.strip().splitlines()
    assert "a Job would find it finished" in line and "--store" in line

    proc = submit(
        uri, config, "-n", "ml", "--store", "s3://kind-runs", "--endpoint", "http://minio:9000"
    )
    assert proc.returncode == 0, proc.stderr
    assert [r.path for r in kube.requests] == [
        f"/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies/{run_id}",
        f"/api/v1/namespaces/ml/configmaps/{run_id}",
        f"/apis/batch/v1/namespaces/ml/jobs/{run_id}",
    ]
    assert f"applied Job ml/{run_id}" in proc.stderr
    job = yaml.safe_load(kube.requests[-1].body)
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KUBETUNE_STORE"] == "s3://kind-runs"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["KUBETUNE_RUN_ID"] == run_id, "the same run, written elsewhere"


def test_reproduce_submit_api_error_exits_1_in_one_line(kube: FakeKube, tmp_path: Path) -> None:
    uri = stored_run(tmp_path / "runs")
    run_id = uri.rsplit("/", 1)[-1]
    kube.refuse.add(f"/apis/batch/v1/namespaces/team-a/jobs/{run_id}")
    proc = submit(uri, write_kubeconfig(tmp_path / "config", kube.url), "--store", "s3://other")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: Job team-a/{run_id}: 422 Unprocessable Entity: Job.batch "
        f'"{run_id}" is invalid: spec.template: Invalid value: field is immutable'
    ]


def test_reproduce_submit_without_kubeconfig_exits_2(tmp_path: Path) -> None:
    proc = submit(stored_run(tmp_path / "runs"), tmp_path / "missing", "--store", "s3://other")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: Kubernetes config") and "set KUBECONFIG" in line


# --- connecting ---------------------------------------------------------------------------


def test_context_flag_picks_that_contexts_server_token_and_namespace(
    kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = write_kubeconfig(
        tmp_path / "config", dead, "team-a", others={"lab": (kube.url, "ml", "lab-token")}
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    current = cluster.connect()
    assert (current.context, current.namespace, current.host) == ("fake", "team-a", dead)
    lab = cluster.connect("lab")
    assert (lab.context, lab.namespace, lab.host) == ("lab", "ml", kube.url)
    (job,) = [d for d in documents() if d["kind"] == "Job"]
    assert cluster.apply([job], cluster=lab)[0].namespace == "ml"
    (request,) = kube.requests
    assert request.authorization == "Bearer lab-token"
    assert request.path.startswith("/apis/batch/v1/namespaces/ml/jobs/")


def test_unknown_context_and_missing_current_context_say_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:1")
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(ConfigError) as caught:
        cluster.connect("nope")
    assert str(caught.value) == (
        f"Kubernetes config {config}: no context named nope; kubectl config get-contexts "
        "lists them (pass one to --context)"
    )
    data = yaml.safe_load(config.read_text())
    del data["current-context"]
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="no current context; pass --context NAME"):
        cluster.connect()
    assert cluster.connect("fake").namespace == "team-a", "--context needs no current-context"


# --- objects ------------------------------------------------------------------------------


def test_create_of_an_existing_object_is_a_409_in_one_line(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    (config_map,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    name = config_map["metadata"]["name"]
    assert connected.create(config_map, "ml")["metadata"]["uid"] == "uid-1"
    with pytest.raises(ke.RejectedError) as caught:
        connected.create(config_map, "ml")
    assert str(caught.value) == f"ConfigMap ml/{name}: already exists"
    assert caught.value.status == 409 and caught.value.exit_code == 1
    assert [(r.method, r.path) for r in kube.requests] == [
        ("POST", "/api/v1/namespaces/ml/configmaps")
    ] * 2


def labelled(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}


def test_list_filters_by_label_selector_across_pages(
    kube: FakeKube, connected: cluster.Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        connected.apply(labelled(f"a{i}", sweep="a", managed="kubetune"), "ml")
    connected.apply(labelled("b0", sweep="b", managed="kubetune"), "ml")
    connected.apply(labelled("elsewhere", sweep="a", managed="kubetune"), "other")
    monkeypatch.setattr(cluster, "PAGE", 2)
    kube.requests.clear()
    items, version = connected.list_objects(cluster.CONFIG_MAP, "ml", "managed=kubetune,sweep=a")
    assert [i["metadata"]["name"] for i in items] == [f"a{i}" for i in range(5)]
    assert version == "7"
    queries = [r.query for r in kube.requests]
    assert [q.get("continue") for q in queries] == [None, "2", "4"]
    assert {q["labelSelector"] for q in queries} == {"managed=kubetune,sweep=a"}
    assert {q["limit"] for q in queries} == {"2"}
    assert (
        connected.list_objects(cluster.CONFIG_MAP, "ml", "sweep!=a")[0][0]["metadata"]["name"]
        == "b0"
    )


def test_get_of_a_missing_object_is_none(connected: cluster.Cluster) -> None:
    assert connected.get(cluster.JOB, "ml", "nothing-here") is None


def test_watch_streams_added_modified_deleted_as_they_happen(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    connected.apply(labelled("before", sweep="a"), "ml")
    _items, version = connected.list_objects(cluster.CONFIG_MAP, "ml", "sweep=a")
    events = connected.watch(cluster.CONFIG_MAP, "ml", "sweep=a", version, timeout_s=5)
    # Each change reaches the client while the stream stays open.
    connected.apply(labelled("one", sweep="a"), "ml")
    first = next(events)
    assert (first.type, first.object["metadata"]["name"]) == ("ADDED", "one")
    connected.apply(labelled("ignored", sweep="b"), "ml")
    connected.apply({**labelled("one", sweep="a"), "data": {"k": "v"}}, "ml")
    second = next(events)
    assert (second.type, second.object["data"]) == ("MODIFIED", {"k": "v"})
    assert connected.delete(cluster.CONFIG_MAP, "ml", "one")
    third = next(events)
    assert (third.type, third.object["metadata"]["name"]) == ("DELETED", "one")
    events.close()
    watch = next(r for r in kube.requests if r.query.get("watch"))
    assert watch.query == {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "5",
        "labelSelector": "sweep=a",
        "resourceVersion": version,
    }


def test_watch_from_an_expired_version_gets_error_410(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    kube.expired_below = 100
    (event,) = list(connected.watch(cluster.JOB, "ml", "", "3", timeout_s=5))
    assert event.type == "ERROR" and event.object["code"] == 410


def test_logs_follow_streams_chunks_before_the_container_ends(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"}})
    kube.append_log("ml", "p", "step 1 loss 2.0\n")
    chunks = connected.logs("ml", "p", "trainer", follow=True)
    assert next(chunks) == b"step 1 loss 2.0\n"  # while the log is still open
    kube.append_log("ml", "p", "step 2 loss 1.5\n", done=True)
    assert b"".join(chunks) == b"step 2 loss 1.5\n"
    request = kube.requests[-1]
    assert request.path == "/api/v1/namespaces/ml/pods/p/log"
    assert request.query == {"container": "trainer", "follow": "true"}
    whole = b"".join(connected.logs("ml", "p", "trainer"))
    assert whole == b"step 1 loss 2.0\nstep 2 loss 1.5\n"
    assert kube.requests[-1].query == {"container": "trainer"}


def test_delete_sends_delete_options_and_a_missing_object_is_false(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    connected.apply(labelled("cm"), "ml")
    assert connected.delete(cluster.CONFIG_MAP, "ml", "cm", "Background") is True
    assert connected.delete(cluster.CONFIG_MAP, "ml", "cm", "Background") is False
    deletes = [r for r in kube.requests if r.method == "DELETE"]
    assert [yaml.safe_load(r.body) for r in deletes] == [
        {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    ] * 2
    assert kube.get("configmaps", "ml", "cm") is None


def test_throttled_requests_are_retried(kube: FakeKube, connected: cluster.Cluster) -> None:
    kube.throttle["/api/v1/namespaces/ml/configmaps/cm"] = 2
    assert connected.apply(labelled("cm"), "ml")["metadata"]["name"] == "cm"
    assert [r.method for r in kube.requests] == ["PATCH"] * 3
    kube.throttle["/api/v1/namespaces/ml/configmaps/cm"] = cluster.ATTEMPTS
    with pytest.raises(ke.RejectedError, match="429 Too Many Requests"):
        connected.apply(labelled("cm"), "ml")


# --- refusals, one line each --------------------------------------------------------------


def test_rbac_refusal_names_verb_resource_namespace_and_the_submitter_role(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    kube.denied.add(("list", "jobs.batch", "ml"))
    with pytest.raises(ke.ForbiddenError) as caught:
        connected.list_objects(cluster.JOB, "ml")
    assert str(caught.value) == (
        "Jobs in ml: forbidden: alice may not list jobs.batch in namespace ml; ask a cluster "
        "admin to bind the kubetune-submitter Role of charts/kubetune-job "
        "(helm template … --set rbac.create=true) to you in that namespace"
    )
    assert caught.value.exit_code == 1


def test_apply_of_a_new_object_needs_create_as_well_as_patch(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    kube.denied.add(("create", "networkpolicies.networking.k8s.io", "ml"))
    policy = documents()[0]
    with pytest.raises(ke.ForbiddenError, match="may not create networkpolicies.networking.k8s.io"):
        connected.apply(policy, "ml")


def test_quota_refusal_names_the_quota(kube: FakeKube, connected: cluster.Cluster) -> None:
    kube.job_quota["ml"] = 0
    (job,) = [d for d in documents() if d["kind"] == "Job"]
    name = job["metadata"]["name"]
    with pytest.raises(ke.QuotaExceededError) as caught:
        connected.apply(job, "ml")
    assert str(caught.value) == (
        f"Job ml/{name}: ResourceQuota compute-quota in namespace ml is used up (requested "
        "count/jobs.batch=1, used count/jobs.batch=0, limited count/jobs.batch=0); wait for "
        "runs to finish, kubetune cancel some, or ask for a larger quota"
    )


def test_missing_namespace_is_a_user_error(kube: FakeKube, connected: cluster.Cluster) -> None:
    with pytest.raises(ke.NamespaceMissingError) as caught:
        connected.apply(labelled("cm"), "nope")
    assert str(caught.value) == (
        "namespace nope does not exist: kubectl create namespace nope or pass -n"
    )
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("code", "body", "expected"),
    [
        (401, '{"kind":"Status","code":401,"message":"Unauthorized"}', ke.UnauthorizedError),
        (404, "404 page not found", ke.NotFoundError),
        (
            403,
            '{"kind":"Status","code":403,"message":"admission webhook \\"policy.example\\" '
            'denied the request: images must come from registry.example"}',
            ke.RejectedError,
        ),
        (500, "<html>oops</html>", ke.RejectedError),
    ],
)
def test_other_refusals_are_one_line_naming_the_object(
    code: int, body: str, expected: type[Exception]
) -> None:
    action = ke.Action("patch", "jobs.batch", "ml", "Job ml/x")
    error = ke.explain(ke.parse_status(code, "Reason", body), action)
    assert isinstance(error, expected)
    message = str(error)
    assert message.startswith("Job ml/x: ") and "\n" not in message
    if code == 403:
        assert "images must come from registry.example" in message
        assert "kubetune-submitter" not in message, "not an RBAC refusal"
    if code == 401:
        assert "--context" in message


def test_service_account_rbac_message_keeps_the_subject() -> None:
    body = (
        '{"kind":"Status","code":403,"message":"pods \\"p\\" is forbidden: User '
        '\\"system:serviceaccount:ci:runner\\" cannot get resource \\"pods/log\\" in API '
        'group \\"\\" in the namespace \\"ml\\""}'
    )
    error = ke.explain(
        ke.parse_status(403, "Forbidden", body), ke.Action("get", "pods/log", "ml", "log")
    )
    assert "system:serviceaccount:ci:runner may not get pods/log in namespace ml" in str(error)
