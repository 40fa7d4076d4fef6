"""Server-side apply against a fake Kubernetes API server over real HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import cluster, sweep
from kubetune import render as rendermod
from kubetune import spec as specmod
from kubetune.errors import ConfigError
from kubetune.store import FileStore, RunLocation

from conftest import ROOT, base_spec, free_port

TOKEN = "t0ken-for-the-fake-api"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str
    body: str


@dataclass
class FakeKube:
    """An API server that stores what it is sent and answers as server-side apply does;
    a path listed in ``refuse`` gets a 422 Status instead."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.text()
        self.requests.append(
            Request(
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Content-Type", ""),
                request.headers.get("Authorization", ""),
                body,
            )
        )
        if request.path in self.refuse:
            name = request.path.rsplit("/", 1)[-1]
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 422,
                "reason": "Invalid",
                "message": f'Job.batch "{name}" is invalid: spec.template: Invalid value:\n'
                "field is immutable",
            }
            return web.json_response(status, status=422)
        stored = json.loads(body)
        stored["metadata"]["uid"] = f"uid-{len(self.requests)}"
        return web.json_response(stored, status=200)


@pytest.fixture(scope="module")
def fake_kube() -> Iterator[FakeKube]:
    from aiohttp import web

    fake = FakeKube()
    port = free_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture
def kube(fake_kube: FakeKube) -> FakeKube:
    fake_kube.requests.clear()
    fake_kube.refuse.clear()
    return fake_kube


def write_kubeconfig(path: Path, server: str, namespace: str | None = "team-a") -> Path:
    context: dict[str, Any] = {"cluster": "fake", "user": "me"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": context}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


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
