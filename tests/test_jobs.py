"""Every example in jobs/ validates, renders, and teaches (opens with its command)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubetune import render, spec, sweep

from conftest import ROOT

JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


def test_there_are_examples_for_each_kind_of_job() -> None:
    specs = [spec.load(p) for p in JOBS]
    assert {"classification", "ner"} <= {s.task for s in specs}
    assert any(s.sweep and s.lora for s in specs), "a learning-rate × LoRA-rank grid"
    assert any(s.resources.nodes > 1 for s in specs), "a multi-node job"
    assert any(s.resources.queue for s in specs), "a Kueue-queued job"


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_example_validates_and_renders(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and "kubetune " in lines[0], "open with the command"
    assert any("yaml-language-server: $schema=../schema/jobspec.schema.json" in x for x in lines)
    runs = sweep.expand(spec.load(path))
    text = render.stream(render.render(runs, namespace="examples"))
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert sum(d["kind"] == "Job" for d in docs) == len(runs)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
