"""kubetune.kube.client and kubetune.kube.errors against a fake Kubernetes API server over real
HTTP (tests/kubefake.py): connecting, server-side apply, create, list, watch, logs, delete,
and every refusal as one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import render as rendermod
from kubetune import spec as specmod
from kubetune import sweep
from kubetune.errors import ConfigError
from kubetune.kube import client as cluster
from kubetune.kube import errors as ke

from conftest import SAFE_LOADER, base_spec, free_port
from kubefake import TOKEN, FakeKube, write_kubeconfig


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
    return [yaml.load(doc, Loader=SAFE_LOADER) for _name, doc in rendered.documents]


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


# --- the fake is as strict as a real API server -------------------------------------------


def job_doc(**spec: Any) -> dict[str, Any]:
    (job,) = [d for d in documents() if d["kind"] == "Job"]
    job["spec"].update(spec)
    return job


def test_suspend_owned_by_kueue_is_a_conflict_unless_forced(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    """Server-side apply's field ownership: once Kueue's controller admits a Job it owns
    ``spec.suspend``; applying ``suspend: true`` over it conflicts (409), and with force (what
    `reproduce --submit` used to send) takes the field over, which stops the Job's pods."""
    job = job_doc(suspend=True)
    name = job["metadata"]["name"]
    connected.apply(job, "ml")
    assert ".spec.suspend" in kube.managers("jobs", "ml", name)["kubetune"]
    stored = kube.get("jobs", "ml", name)
    assert stored is not None
    kube.put({**stored, "spec": {**stored["spec"], "suspend": False}}, manager="kueue-admission")
    assert ".spec.suspend" in kube.managers("jobs", "ml", name)["kueue-admission"]
    assert ".spec.suspend" not in kube.managers("jobs", "ml", name)["kubetune"]
    text = json.dumps(job)
    with pytest.raises(ke.RejectedError) as caught:
        connected.apply_text(cluster.JOB, name, "ml", text, force=False)
    assert str(caught.value) == (
        f"Job ml/{name}: 409 Conflict: Apply failed with 1 conflict: conflict with "
        '"kueue-admission": .spec.suspend'
    )
    assert kube.get("jobs", "ml", name)["spec"]["suspend"] is False  # type: ignore[index]
    connected.apply_text(cluster.JOB, name, "ml", text, force=True)
    assert kube.get("jobs", "ml", name)["spec"]["suspend"] is True  # type: ignore[index]
    assert ".spec.suspend" in kube.managers("jobs", "ml", name)["kubetune"]


def test_a_field_a_manager_stops_applying_is_removed(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    doc = labelled("x", sweep="a", extra="yes")
    connected.apply(doc, "ml")
    del doc["metadata"]["labels"]["extra"]
    connected.apply(doc, "ml")
    assert kube.get("configmaps", "ml", "x")["metadata"]["labels"] == {"sweep": "a"}  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"parallelism": 1, "activeDeadlineSeconds": 60, "backoffLimit": 9}, None),
        ({"suspend": True, "ttlSecondsAfterFinished": 5}, None),
        ({"completions": 3, "parallelism": 3}, None),  # an elastic Indexed Job
        ({"completions": 3}, "spec.completions: Invalid value: 3: field is immutable"),
        ({"completionMode": "NonIndexed"}, 'spec.completionMode: Invalid value: "NonIndexed"'),
        ({"podFailurePolicy": None}, "spec.podFailurePolicy: Invalid value: null"),
    ],
)
def test_job_spec_fields_are_immutable_as_the_api_server_validates_them(
    kube: FakeKube, connected: cluster.Cluster, change: dict[str, Any], error: str | None
) -> None:
    job = job_doc()
    name = job["metadata"]["name"]
    connected.apply(job, "ml")
    changed = job_doc(**change)
    if error is None:
        connected.apply(changed, "ml")
        stored = kube.get("jobs", "ml", name)
        assert stored is not None
        assert {k: stored["spec"].get(k) for k in change} == change
        return
    with pytest.raises(ke.RejectedError) as caught:
        connected.apply(changed, "ml")
    assert f'422 Unprocessable Entity: Job.batch "{name}" is invalid: {error}' in str(caught.value)
    assert "field is immutable" in str(caught.value)


def test_a_pod_template_changes_only_in_scheduling_directives_of_a_job_never_started(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    job = job_doc(suspend=True)
    name = job["metadata"]["name"]
    connected.apply(job, "ml")
    pod = job["spec"]["template"]["spec"]
    pod["nodeSelector"] = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    connected.apply(job, "ml")  # suspended, never started: Kueue may set these (k8s ≥ 1.27)
    pod["containers"][0]["image"] = "registry.example/other@sha256:" + "cd" * 32
    with pytest.raises(
        ke.RejectedError, match="spec.template: Invalid value: .*: field is immutable"
    ):
        connected.apply(job, "ml")
    stored = kube.get("jobs", "ml", name)
    assert stored is not None
    kube.put({**stored, "status": {"startTime": "2026-01-02T03:05:00Z", "active": 1}})
    pod["containers"][0]["image"] = stored["spec"]["template"]["spec"]["containers"][0]["image"]
    pod["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
    with pytest.raises(ke.RejectedError, match="field is immutable"):
        connected.apply(job, "ml")  # once started, the whole template is fixed


def test_an_immutable_config_map_refuses_data_changes(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    doc = {**labelled("frozen"), "immutable": True, "data": {"a": "1"}}
    connected.apply(doc, "ml")
    connected.apply(doc, "ml")  # the same data: fine
    with pytest.raises(ke.RejectedError) as caught:
        connected.apply({**doc, "data": {"a": "2"}}, "ml")
    assert str(caught.value) == (
        'ConfigMap ml/frozen: 422 Unprocessable Entity: ConfigMap "frozen" is invalid: '
        "data: Forbidden: field is immutable when `immutable` is set"
    )
    with pytest.raises(ke.RejectedError, match=r"\[immutable: Forbidden"):
        connected.apply({**doc, "immutable": False, "data": {"a": "3"}}, "ml")


def owned_by(name: str, job: dict[str, Any]) -> dict[str, Any]:
    doc = labelled(name)
    doc["metadata"]["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job["metadata"]["uid"]}
    ]
    return doc


@pytest.mark.parametrize(
    ("propagation", "left"),
    [("Background", {"other"}), ("Foreground", {"other"}), (None, {"spec", "other"})],
)
def test_deleting_a_job_collects_what_it_owns_unless_orphaned(
    kube: FakeKube, connected: cluster.Cluster, propagation: str | None, left: set[str]
) -> None:
    job = connected.apply(job_doc(), "ml")
    connected.apply(owned_by("spec", job), "ml")
    connected.apply(labelled("other"), "ml")
    assert connected.delete(cluster.JOB, "ml", job["metadata"]["name"], propagation)
    assert {n for (p, _ns, n) in kube.objects if p == "configmaps"} == left
    if propagation is None:  # batch/v1 Jobs orphan their dependents unless told otherwise
        assert "ownerReferences" not in kube.get("configmaps", "ml", "spec")["metadata"]  # type: ignore[index]


def test_a_delete_with_another_uid_precondition_is_a_conflict(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    job = connected.apply(job_doc(), "ml")
    with pytest.raises(ke.RejectedError, match="409 Conflict: .*Precondition failed"):
        connected.delete(cluster.JOB, "ml", job["metadata"]["name"], uid="uid-other")
    assert connected.delete(cluster.JOB, "ml", job["metadata"]["name"], uid=job["metadata"]["uid"])


def test_kueue_discovery_lists_the_served_versions(
    kube: FakeKube, connected: cluster.Cluster
) -> None:
    group = connected.api_group("kueue.x-k8s.io")
    assert group is not None
    assert [v["version"] for v in group["versions"]] == ["v1beta2", "v1beta1"]
    assert group["preferredVersion"]["version"] == "v1beta2"
    kube.kueue_versions = ["v1beta1"]
    assert connected.get(cluster.local_queue("v1beta2"), "ml", "q") is None
    assert kube.requests[-1].path == "/apis/kueue.x-k8s.io/v1beta2/namespaces/ml/localqueues/q"
    kube.kueue = False
    assert connected.api_group("kueue.x-k8s.io") is None


def test_a_managers_updates_are_not_its_applies(kube: FakeKube, connected: cluster.Cluster) -> None:
    """As in managedFields, what kubetune set by a merge patch (an Update) is not removed when
    its next apply leaves it out; and a merge patch never creates an object."""
    doc = labelled("x", sweep="a")
    connected.apply(doc, "ml")
    refs = [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]
    connected.merge_patch(cluster.CONFIG_MAP, "x", "ml", {"metadata": {"ownerReferences": refs}})
    connected.apply(doc, "ml")
    stored = kube.get("configmaps", "ml", "x")
    assert stored is not None and stored["metadata"]["ownerReferences"] == refs
    assert {(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]} == {
        ("kubetune", "Apply"),
        ("kubetune", "Update"),
    }
    with pytest.raises(ke.NotFoundError):
        connected.merge_patch(cluster.CONFIG_MAP, "gone", "ml", {"metadata": {}})
    assert kube.get("configmaps", "ml", "gone") is None


def test_a_kubeconfig_that_is_not_yaml_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nclusters: [unclosed\n", encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    with pytest.raises(ConfigError) as caught:
        cluster.connect()
    message = str(caught.value)
    assert message.startswith(f"Kubernetes config {broken}: not valid YAML (line 3:")
    assert "\n" not in message
