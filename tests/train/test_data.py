"""Sources, seeded splits, labels and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kubetune import spec
from kubetune.errors import ConfigError

from tiny import tiny_spec

# Each test imports kubetune.train.data (and with it datasets, two seconds) itself: collecting
# this module then costs the fast suite's other workers nothing.
if TYPE_CHECKING:
    from kubetune.train.data import Splits


def test_missing_eval_gets_a_seeded_split(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

    data = tiny_spec(tiny, data={"eval": None, "test": None, "validation_split": 0.2})
    job = spec.validate(data)
    first = load_splits(job, tmp_path)
    second = load_splits(job, tmp_path)
    assert first.eval is not None and first.train is not None
    assert len(first.eval) == 20 and len(first.train) == 80
    assert second.eval is not None and first.eval["id"] == second.eval["id"]
    assert not set(first.eval["id"]) & set(first.train["id"])
    other = load_splits(spec.validate({**data, "train": {"seed": 8}}), tmp_path)
    assert other.eval is not None and other.eval["id"] != first.eval["id"]


def test_fingerprint_follows_content(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

    job = spec.validate(tiny_spec(tiny))
    assert load_splits(job, tmp_path).fingerprint == load_splits(job, tmp_path).fingerprint
    copy = tmp_path / "train.jsonl"
    rows = (tiny["cls"] / "train.jsonl").read_text().splitlines()
    copy.write_text("\n".join(rows[:-1]) + "\n")
    changed = spec.validate(tiny_spec(tiny, data={"train": str(copy)}))
    assert load_splits(changed, tmp_path).fingerprint != load_splits(job, tmp_path).fingerprint


def test_folders_and_csv_load(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

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
    from kubetune.train.data import load_splits

    job = spec.validate(tiny_spec(tiny, data={"text_column": "body"}))
    with pytest.raises(ConfigError, match=r"data.text_column: column 'body' is not in the train"):
        classification.build(job, load_splits(job, tmp_path), None, str(tiny["model"]))


def test_missing_file_is_a_config_error(tiny: dict[str, Path], tmp_path: Path) -> None:
    from kubetune.train.data import load_splits

    job = spec.validate(tiny_spec(tiny, data={"train": "./nope/train.jsonl"}))
    with pytest.raises(ConfigError, match="no such file"):
        load_splits(job, tmp_path)


def test_labels_inferred_sorted_or_taken_from_the_spec(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from kubetune.train.data import infer_labels, load_splits

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


def _splits(**rows: list[dict[str, Any]]) -> Splits:
    from datasets import Dataset

    from kubetune.train.data import Splits

    data = {name: Dataset.from_list(r) for name, r in rows.items()}
    sources = {name: f"data/{name}.jsonl" for name in rows}
    return Splits(data.get("train"), data.get("eval"), data.get("test"), "x", sources)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            {"train": [{"label": "a"}, {"label": None}]},
            "data.label_column: row 2 of the train data (data/train.jsonl) has no 'label'",
        ),
        (
            {"train": [{"label": 0}, {"label": 1}], "eval": [{"label": "sport"}]},
            "data.label_column: the labels mix ids and names (train: 0, 1; eval: 'sport')",
        ),
    ],
)
def test_label_mistakes_in_the_data_are_one_line(
    rows: dict[str, list[dict[str, Any]]], message: str
) -> None:
    from kubetune.train.data import infer_labels

    with pytest.raises(ConfigError) as caught:
        infer_labels(_splits(**rows), "label", None, sequence=False)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_listed_labels_may_be_missing_from_train_and_ner_rows_need_every_tag() -> None:
    from kubetune.train.data import infer_labels

    splits = _splits(train=[{"label": "a"}], eval=[{"label": "b"}])
    assert infer_labels(splits, "label", ["a", "b"], sequence=False) == ["a", "b"]
    tags = _splits(train=[{"tags": ["O", "B-x"]}, {"tags": ["O", None]}])
    with pytest.raises(ConfigError, match=r"^data.tags_column: row 2 of the train data"):
        infer_labels(tags, "tags", None, sequence=True, field="data.tags_column")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"text": "a", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n',
            "train.jsonl:2: not UTF-8 text (byte 0xe9 at column 14); save the file as UTF-8",
        ),
        (
            b'{"text": "a", "label": 0}\n{"text": "b", "label": "sport"}\n',
            "train.jsonl: a column holds values of different kinds (Could not convert 'sport'",
        ),
        (b'{"text": "a", "label": "x"}\n{"text": \n', "train.jsonl:2: not JSON"),
    ],
)
def test_unreadable_data_names_the_file_and_line(
    tiny: dict[str, Path], tmp_path: Path, content: bytes, message: str
) -> None:
    from kubetune.train.data import load_splits

    (tmp_path / "train.jsonl").write_bytes(content)
    job = spec.validate(tiny_spec(tiny, data={"train": str(tmp_path / "train.jsonl")}))
    with pytest.raises(ConfigError) as caught:
        load_splits(job, tmp_path / "cache")
    assert message in str(caught.value) and "\n" not in str(caught.value)
