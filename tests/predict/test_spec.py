"""Batch specs: validated with one-line errors like job specs, a batch id that names the
output folder and changes with what changes the output, and nothing of the ML stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune.errors import SpecError
from kubetune.predict import spec


def data(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "predict", "name": "labels", "model": "s3://runs/topic/topic-0123abcd",
        "corpus": {"uri": "data/corpus.jsonl"},
    }  # fmt: skip
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "train"}, "kind: must be 'predict' or 'index' (got 'train')"),
        ({"shards": 0}, "shards: must be greater than or equal to 1 (got 0)"),
        ({"shards": 2, "parallelism": 3}, "parallelism: at most shards (2) run at once"),
        ({"index": {"type": "flat"}}, "index: only kind: index builds an index"),
        ({"int8": True, "resources": {"gpus": 1}}, "int8: int8 quantization runs on CPU only"),
        ({"kind": "index", "output": {"format": "parquet"}}, "output.format: kind: index writes"),
        (
            {"corpus": {"uri": "x.jsonl", "txt": "a"}},
            "corpus.txt: unknown key; allowed: uri, split",
        ),
        ({"name": "Bad_Name"}, "name: "),
        ({"model": None}, "model: "),
    ],
)
def test_mistakes_are_one_line_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec.validate(data(**overrides), "job.yaml")
    assert message in str(caught.value)


def test_batch_id_follows_what_changes_the_output_not_where_it_runs() -> None:
    base = spec.validate(data())
    assert spec.batch_id(base) == spec.batch_id(spec.validate(data()))
    assert spec.batch_id(base).startswith("labels-") and len(spec.batch_id(base)) == 15
    moved = spec.validate(data(resources={"cpu": 8, "gpus": 0}, parallelism=1))
    assert spec.batch_id(moved) == spec.batch_id(base)
    for changed in ({"shards": 4}, {"int8": True, "resources": {"gpus": 0}},
                    {"corpus": {"uri": "other.jsonl"}}):  # fmt: skip
        assert spec.batch_id(spec.validate(data(**changed))) != spec.batch_id(base)


def test_a_batch_spec_is_told_from_a_job_spec_by_its_kind(tmp_path: Path) -> None:
    batch = tmp_path / "batch.yaml"
    batch.write_text("kind: index\nname: docs\nmodel: pkg:x/y\ncorpus: {uri: c.jsonl}\n")
    job = tmp_path / "job.yaml"
    job.write_text("name: topic\ntask: classification\n")
    assert spec.is_batch(batch) and not spec.is_batch(job)
    assert not spec.is_batch(tmp_path / "missing.yaml")
    loaded = spec.load(batch)
    assert loaded.index is not None and loaded.index.type == "auto"
