"""The names kubetune shares with its chart are the names the chart renders."""

from __future__ import annotations

import re
from typing import Any

import yaml

from kubetune import render, sweep
from kubetune import spec as specmod
from kubetune.kube import names

from conftest import ROOT, base_spec

CHART = ROOT / "charts" / "kubetune-job"


def rendered(data: dict[str, Any]) -> list[dict[str, Any]]:
    runs = sweep.expand(specmod.validate(data))
    return [d for d in yaml.safe_load_all(render.stream(render.render(runs, "ml"))) if d]


def test_the_chart_sets_exactly_the_trainer_variables_named_here() -> None:
    templates = "".join(p.read_text(encoding="utf-8") for p in (CHART / "templates").iterdir())
    in_chart = set(re.findall(r"\bKUBETUNE_[A-Z_]+\b", templates))
    assert in_chart == set(names.CHART_ENV)
    assert names.CHART_DIR_ENV not in in_chart  # a laptop folder never reaches a pod


def test_a_rendered_multi_node_job_carries_the_labels_annotations_and_env_named_here() -> None:
    data = base_spec(resources={"nodes": 2, "gpus": 8, "queue": "team-nlp"})
    docs = rendered(data)
    job = next(d for d in docs if d["kind"] == "Job")
    run = sweep.expand(specmod.validate(data))[0]
    labels, annotations = job["metadata"]["labels"], job["metadata"]["annotations"]
    assert labels[names.MANAGED_BY_LABEL] == names.MANAGED_BY
    assert labels[names.RUN_ID_LABEL] == run.run_id
    assert labels[names.SWEEP_LABEL] == run.sweep
    assert labels[names.TASK_LABEL] == run.spec.task
    assert labels[names.QUEUE_LABEL] == "team-nlp"
    assert names.CHART_LABEL in labels
    assert annotations[names.SPEC_HASH_ANNOTATION] == run.spec_hash
    assert names.PARAMS_ANNOTATION in annotations
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"][names.RUN_ID_LABEL] == run.run_id
    assert names.CHART_LABEL not in pod["metadata"]["labels"]
    (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == names.CONTAINER]
    env = {e["name"] for e in trainer["env"]}
    # Set only for an S3 store, staged inputs, a sweep point, a pruned sweep's trial and a
    # batch job's shard (tests/predict/test_chart.py checks that pod).
    sometimes = {names.STORE_ENDPOINT_ENV, names.INPUTS_ENV, names.PARAMS_ENV, names.RUNGS_ENV,
                 names.SHARD_ENV}  # fmt: skip
    # The sweep driver's own (tests/search/test_cluster.py checks its pod).
    assert names.CHART_ENV - sometimes - names.DRIVE_ENV <= env
    assert not (names.DRIVE_ENV - {names.INPUTS_ENV}) & env
    for obj in docs:
        assert obj["metadata"]["labels"][names.MANAGED_BY_LABEL] == names.MANAGED_BY


def test_chart_yaml_names_its_pod_template_revision() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert str(chart["annotations"][names.POD_TEMPLATE_ANNOTATION]).strip()
