"""Every example in jobs/ validates, renders, and teaches (opens with its command); each either
runs on a cluster once its local inputs are staged, or says plainly that it is local-only."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import kubernetes_validate
import pytest

from kubetune import render, spec, stage, sweep
from kubetune.kube.names import STORE_ENDPOINT_ENV as ENDPOINT_ENV
from kubetune.predict import chart as batchchart
from kubetune.predict import spec as batchspec

from conftest import EXAMPLES_GROUP, ROOT, yaml_docs

pytestmark = pytest.mark.xdist_group(EXAMPLES_GROUP)

#: Job specs; batch specs (a top-level kind: predict or index) are tested on their own below.
JOBS = [p for p in sorted((ROOT / "jobs").glob("*.yaml")) if not batchspec.is_batch(p)]
BATCH_JOBS = [p for p in sorted((ROOT / "jobs").glob("*.yaml")) if batchspec.is_batch(p)]
#: How an example says it never runs on a cluster.
LOCAL_ONLY = re.compile(r"^# Local only:", re.MULTILINE)
#: The cluster command of an example's header.
ON_A_CLUSTER = re.compile(r"^# On a cluster: +(.*)$", re.MULTILINE)


def test_there_are_examples_for_each_kind_of_job() -> None:
    specs = [spec.load(p) for p in JOBS]
    assert {"classification", "ner"} <= {s.task for s in specs}
    assert any(s.sweep and s.lora for s in specs), "a learning-rate × LoRA-rank grid"
    assert any(s.resources.nodes > 1 for s in specs), "a multi-node job"
    assert any(s.resources.queue for s in specs), "a Kueue-queued job"
    assert any(s.sweep and s.sweep.method == "tpe" and s.sweep.pruner for s in specs), (
        "a search that prunes"
    )
    stores = {s.storage.uri for s in specs if s.storage}
    assert stores == {"s3://kubetune-runs/examples"}, "one store: the model is staged once"


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with every example dataset prepared where the examples point."""
    from kubetune import prepare

    cwd = tmp_path_factory.mktemp("laptop")
    for name in ("bbc-news", "bbc-retrieval", "wnut16", "aclsum", "squad"):
        prepare.prepare(name, cwd / "data" / name)
    shutil.copytree(ROOT / "examples", cwd / "examples")  # data committed with the repo
    return cwd


@pytest.fixture(scope="module")
def stager() -> stage.Stager:
    """One stager for the module: the packaged model goes to moto once for every example."""
    return stage.Stager()


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_example_runs_on_a_cluster_as_its_header_says(
    path: Path,
    laptop: Path,
    s3_env: str,
    stager: stage.Stager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    text = path.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# ") and "kubetune " in lines[0], "open with the command"
    assert any("yaml-language-server: $schema=../schema/jobspec.schema.json" in x for x in lines)
    job = spec.load(path)
    runs = sweep.expand(job)
    if job.sweep is not None and job.sweep.driven:
        runs = [sweep.base_run(job)]  # the trials share its inputs; the driver is rendered
    if LOCAL_ONLY.search(text):
        assert not ON_A_CLUSTER.search(text), "a local-only example has no cluster command"
        return
    (command,) = ON_A_CLUSTER.findall(text)
    monkeypatch.chdir(laptop)
    # The examples' stores, served by moto, reached from here as a port-forwarded MinIO is.
    monkeypatch.setenv(ENDPOINT_ENV, s3_env)
    client = boto3.client("s3")
    for bucket in {r.spec.storage.uri[5:].split("/")[0] for r in runs if r.spec.storage}:
        client.create_bucket(Bucket=bucket)
    local = [f for r in runs for f in stage.find_local(r.spec)]
    if local:
        assert "kubetune submit" in command or "--stage" in text, "say how the inputs get there"
    else:
        stage.refuse_local(runs)
    staged = stage.stage_runs(runs, stager=stager).runs
    assert len(staged) == len(runs)
    for run, local_run in zip(staged, runs, strict=True):
        assert stage.find_local(run.spec) == [], "nothing of this machine reaches the pod"
        # Each run's own inputs (a classical arm reads no model).
        assert set(run.inputs) == {f.field for f in stage.find_local(local_run.spec)}
    if job.sweep is not None and job.sweep.driven:
        assert "kubetune submit" in command, "a driven sweep starts its driver with submit"
        inputs = staged[0].inputs
        driver = render.render_driver(stage.with_staged(job, inputs), "examples", inputs=inputs)
        docs = yaml_docs(render.stream([driver]))
        kinds = sorted(d["kind"] for d in docs)
        assert kinds == ["ConfigMap", "Job", "NetworkPolicy", "Role", "RoleBinding",
                         "ServiceAccount"], kinds  # fmt: skip
        (mounted,) = [d for d in docs if d["kind"] == "ConfigMap"]
        assert "sweep:" in next(iter(mounted["data"].values()))
    else:
        docs = yaml_docs(render.stream(render.render(staged, namespace="examples")))
        assert sum(d["kind"] == "Job" for d in docs) == len(runs)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_there_is_a_batch_example_of_each_kind() -> None:
    assert {batchspec.load(p).kind for p in BATCH_JOBS} == {"predict", "index"}


@pytest.mark.parametrize("path", BATCH_JOBS, ids=[p.name for p in BATCH_JOBS])
def test_batch_example_stages_and_renders_as_its_header_says(
    path: Path, laptop: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch example's local corpus and model are staged; its Job validates."""
    import boto3

    text = path.read_text()
    assert text.splitlines()[0].startswith("# Run here:") and "kubetune " in text.splitlines()[0]
    (command,) = ON_A_CLUSTER.findall(text)
    assert "kubetune submit" in command
    batch = batchspec.load(path)
    assert batch.storage is not None and batch.storage.uri == "s3://kubetune-runs/examples"
    monkeypatch.chdir(laptop)
    monkeypatch.setenv(ENDPOINT_ENV, s3_env)
    client = boto3.client("s3")
    if "kubetune-runs" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket="kubetune-runs")
    staged, inputs = batchchart.stage(batch)
    assert batchchart.local_inputs(staged) == [] and "corpus.uri" in inputs
    docs = yaml_docs(render.stream([batchchart.render(staged, "examples")]))
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["spec"]["completions"] == batch.shards
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
