"""Sources, seeded splits, labels and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune import spec
from kubetune.errors import ConfigError
from kubetune.train.data import infer_labels, load_splits

from tiny import tiny_spec


def test_missing_eval_gets_a_seeded_split(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_spec(tiny, data={"eval": None, "test": None, "validation_split": 0.2})
    job = spec.validate(data)
    first = load_splits(job, tmp_path)
    second = load_splits(job, tmp_path)
    assert first.eval is not None and first.train is not None
    assert len(first.eval) == 20 and len(first.train) == 80
    assert first.eval["id"] == second.eval["id"]
    assert not set(first.eval["id"]) & set(first.train["id"])
    other = load_splits(spec.validate({**data, "train": {"seed": 8}}), tmp_path)
    assert other.eval is not None and other.eval["id"] != first.eval["id"]


def test_fingerprint_follows_content(tiny: dict[str, Path], tmp_path: Path) -> None:
    job = spec.validate(tiny_spec(tiny))
    assert load_splits(job, tmp_path).fingerprint == load_splits(job, tmp_path).fingerprint
    copy = tmp_path / "train.jsonl"
    rows = (tiny["cls"] / "train.jsonl").read_text().splitlines()
    copy.write_text("\n".join(rows[:-1]) + "\n")
    changed = spec.validate(tiny_spec(tiny, data={"train": str(copy)}))
    assert load_splits(changed, tmp_path).fingerprint != load_splits(job, tmp_path).fingerprint


def test_folders_and_csv_load(tiny: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    rows = [json.loads(line) for line in (tiny["cls"] / "train.jsonl").read_text().splitlines()]
    (folder / "a.csv").write_text(
        "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows[:30])
    )
    (folder / "b.csv").write_text(
        "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows[30:50])
    )
    job = spec.validate(tiny_spec(tiny, data={"train": str(folder)}))
    assert len(load_splits(job, tmp_path).train or []) == 50


def test_missing_column_names_the_field(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train import classification

    job = spec.validate(tiny_spec(tiny, data={"text_column": "body"}))
    with pytest.raises(ConfigError, match=r"data.text_column: column 'body' is not in the train"):
        classification.build(job, load_splits(job, tmp_path), None, str(tiny["model"]))


def test_missing_file_is_a_config_error(tiny: dict[str, Path], tmp_path: Path) -> None:
    job = spec.validate(tiny_spec(tiny, data={"train": "./nope/train.jsonl"}))
    with pytest.raises(ConfigError, match="no such file"):
        load_splits(job, tmp_path)


def test_labels_inferred_sorted_or_taken_from_the_spec(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    job = spec.validate(tiny_spec(tiny))
    splits = load_splits(job, tmp_path)
    assert infer_labels(splits, "label", None, sequence=False) == ["money", "sport", "tech"]
    given = ["tech", "sport", "money"]
    assert infer_labels(splits, "label", given, sequence=False) == given
    with pytest.raises(ConfigError, match="not listed"):
        infer_labels(splits, "label", ["tech", "sport"], sequence=False)
    ner_job = spec.validate(tiny_spec(tiny, "ner"))
    tags = infer_labels(load_splits(ner_job, tmp_path), "ner_tags", None, sequence=True)
    assert tags[0] == "O" and set(tags) == {"O", "B-loc", "B-person", "I-person"}
