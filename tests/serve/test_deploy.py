"""deploy/serve/bbc-news-index.yaml: valid against the Kubernetes schemas, and its container
runs from the manifest alone, as a kubelet would run it: its command with $(VAR) expanded
from its env, that env (Secret refs filled from test values), an empty working directory,
the index and encoder in an S3 store (moto). It becomes ready and answers over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest

from conftest import ML_GROUP, ROOT, free_port, yaml_docs

pytestmark = pytest.mark.xdist_group(ML_GROUP)

MANIFEST = ROOT / "deploy" / "serve" / "bbc-news-index.yaml"
SECRET = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
#: Bounds that only turn a hang into a failure; no assertion depends on them.
HANG = 600.0


def test_the_manifest_is_valid_and_probes_the_server() -> None:
    docs = yaml_docs(MANIFEST.read_text())
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def container_env(container: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = values.get(item["name"], item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = SECRET[ref["key"]]
    return env


@pytest.mark.slow
def test_its_container_serves_a_stored_index_from_the_manifest_alone(
    tiny: dict[str, Path], tmp_path: Path, s3_env: str
) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    from kubetune.predict import batch
    from kubetune.predict import spec as batchspec
    from kubetune.store import open_store

    # An index job's output in the store, its encoder staged there as submit would.
    encoder = tmp_path / "encoder"
    modules = [st.Transformer(str(tiny["model"]), max_seq_length=32), st.Pooling(32, "mean")]
    SentenceTransformer(modules=[*modules, st.Normalize()]).save(str(encoder))
    staged = open_store(f"s3://runs/{tmp_path.name}/encoder")
    for path in encoder.rglob("*"):
        if path.is_file():
            staged.write_bytes(str(path.relative_to(encoder)), path.read_bytes())
    corpus = tmp_path / "corpus.jsonl"
    texts = ["goal match team", "bank market price", "robot chip code", "tax trade stock"]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                              for i, t in enumerate(texts)))  # fmt: skip
    job = batchspec.validate(
        {"kind": "index", "name": "docs", "model": staged.uri, "corpus": {"uri": str(corpus)},
         "index": {"type": "flat"}}
    )  # fmt: skip
    store_uri = f"s3://runs/{tmp_path.name}/store"
    output = batch.run_here(job, store_uri).output

    (deployment, _service) = yaml_docs(MANIFEST.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = container_env(container, {"INDEX": output.url, "AWS_ENDPOINT_URL": s3_env})
    scratch = tmp_path / "scratch"
    for mount in container["volumeMounts"]:
        env = {
            k: v.replace(mount["mountPath"], str(scratch / mount["name"])) for k, v in env.items()
        }
    port = str(free_port())
    command = [part.replace("$(INDEX)", env["INDEX"]) for part in container["command"]]
    command = [port if part == "8000" else part for part in command]
    assert command[:3] == ["python", "-m", "kubetune.cli"]
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    image_env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        [sys.executable, *command[1:]], cwd=workdir, env={**image_env, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HANG) as client:
            deadline = time.monotonic() + HANG
            status = 0
            while status != 200 and time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = client.get("/readyz").status_code
                except httpx.TransportError:
                    status = 0
                if status != 200:
                    time.sleep(0.2)
            assert status == 200, proc.communicate()[1] if proc.poll() is not None else "not ready"
            found = client.post("/v1/search", json={"query": "bank market price", "k": 2})
            assert found.status_code == 200, found.text
            assert found.json()["hits"][0]["id"] == "d1"
            bad = client.post("/v1/search", json={"query": "x", "k": 0})
            assert bad.status_code == 422 and "k" in bad.json()["detail"]
    finally:
        proc.terminate()
        proc.communicate(timeout=HANG)
    assert not any(workdir.iterdir()), "the server wrote into its working directory"
