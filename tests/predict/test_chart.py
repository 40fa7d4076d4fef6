"""A batch job renders as one Indexed Job of `shards` completions, each pod told its shard by
its completion index, a failing shard retried alone (backoffLimitPerIndex), valid against
the Kubernetes schemas; its local corpus and model are staged like a run's inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubetune.errors import ConfigError
from kubetune.predict import chart, spec

from conftest import yaml_docs


def batch(**overrides: Any) -> spec.BatchSpec:
    data: dict[str, Any] = {
        "kind": "predict", "name": "labels", "model": "s3://runs/topic/topic-0123abcd",
        "corpus": {"uri": "s3://runs/corpus/"}, "shards": 4, "parallelism": 2,
        "storage": {"uri": "s3://runs/out", "secret": "kubetune-s3"},
        "resources": {"gpus": 0, "cpu": 2, "memory": "4Gi"},
    }  # fmt: skip
    data.update(overrides)
    return spec.validate(data)


def test_shards_are_the_completions_of_an_indexed_job() -> None:

    rendered = chart.render(batch(), "team")
    docs = yaml_docs(rendered.text())
    job = next(d for d in docs if d["kind"] == "Job")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 2)
    assert job["spec"]["backoffLimitPerIndex"] == 3 and "backoffLimit" not in job["spec"]
    assert "successPolicy" not in job["spec"]
    pod = job["spec"]["template"]["spec"]
    assert "subdomain" not in pod and not any(d["kind"] == "Service" for d in docs)
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "kubetune.predict", "/etc/kubetune/spec.yaml"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBETUNE_SHARD"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert env["KUBETUNE_STORE"]["value"] == "s3://runs/out"
    mounted = spec.validate(yaml.safe_load(config["data"]["spec.yaml"]))
    assert spec.batch_id(mounted) == job["metadata"]["name"] == spec.batch_id(batch())
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)


def test_one_shard_is_still_indexed_and_a_training_run_is_not() -> None:

    docs = yaml_docs(chart.render(batch(shards=1, parallelism=None)).text())
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 1


def test_local_inputs_must_be_staged_and_a_pod_needs_an_s3_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="corpus.uri: data/c.jsonl is on this machine"):
        chart.values(batch(corpus={"uri": "data/c.jsonl"}))
    with pytest.raises(ConfigError, match="storage.uri: a batch Job writes its shards"):
        chart.values(batch(storage={"uri": f"file://{tmp_path}"}))
    with pytest.raises(ConfigError, match="model: file://"):
        chart.values(batch(model=f"file://{tmp_path}/topic/topic-0123abcd"))


def test_staging_names_the_uploaded_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.jsonl").write_text('{"id": 1, "text": "a"}\n')
    staged, inputs = chart.stage(
        batch(corpus={"uri": "c.jsonl"}, storage={"uri": f"s3://runs/{tmp_path.name}"})
    )
    assert staged.corpus.uri == inputs["corpus.uri"]["uri"]
    assert staged.corpus.uri.startswith(f"s3://runs/{tmp_path.name}/inputs/sha256/")
    chart.check_renderable(staged)
