"""The customer-feedback example data (examples/feedback): what its README promises holds.

The three sets are one set of hand-written messages seen three ways, so the checks read the
files as a user would (no generator code), and then ask the generator to reproduce them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import ROOT

FOLDER = ROOT / "examples" / "feedback"
SPLITS = ("train", "validation", "test")
TASKS = ("triage", "entities", "reply")
LABELS = ("bug", "feature", "praise", "urgent")
TYPES = ("PRODUCT", "VERSION", "PLATFORM")
COLUMNS: dict[str, dict[str, type]] = {
    "triage": {"id": str, "text": str, "labels": list},
    "entities": {"id": str, "tokens": list, "ner_tags": list},
    "reply": {"id": str, "document": str, "summary": str},
}


def read(task: str, split: str) -> list[dict[str, Any]]:
    path = FOLDER / task / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def sets() -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {(task, split): read(task, split) for task in TASKS for split in SPLITS}


@pytest.fixture(scope="module")
def make_data() -> ModuleType:
    """examples/feedback/make_data.py, imported from its path (it is no package)."""
    spec = importlib.util.spec_from_file_location("feedback_make_data", FOLDER / "make_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def test_every_row_has_its_task_columns_and_nothing_else(
    sets: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    for (task, split), rows in sets.items():
        assert rows, f"{task}/{split} is empty"
        for row in rows:
            assert set(row) == set(COLUMNS[task]), (task, split, row)
            for column, kind in COLUMNS[task].items():
                assert isinstance(row[column], kind), (task, split, row["id"], column)
                # Only a label list may be empty: a message with none of the four labels.
                assert row[column] or column == "labels", (task, split, row["id"], column)


def test_the_three_tasks_hold_the_same_messages_in_the_same_splits(
    sets: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    for split in SPLITS:
        ids = [[row["id"] for row in sets[task, split]] for task in TASKS]
        assert ids[0] == ids[1] == ids[2], split
        texts = {row["id"]: row["text"] for row in sets["triage", split]}
        for row in sets["reply", split]:
            assert row["document"] == texts[row["id"]]
        for row in sets["entities", split]:
            # The tokens are the text's, in order, with only whitespace between them.
            assert "".join(row["tokens"]) == "".join(texts[row["id"]].split()), row["id"]


def test_no_message_is_in_two_splits(sets: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    def key(text: str) -> str:
        return " ".join(text.lower().split())

    seen: dict[str, str] = {}
    ids: dict[str, str] = {}
    for split in SPLITS:
        for row in sets["triage", split]:
            assert ids.setdefault(row["id"], split) == split, f"{row['id']} in two splits"
            text = key(row["text"])
            assert text not in seen, f"{row['id']} ({split}) repeats a {seen.get(text)} message"
            seen[text] = split


def test_labels_are_the_documented_four_and_urgent_marks_a_bug(
    sets: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    combos: Counter[tuple[str, ...]] = Counter()
    for split in SPLITS:
        for row in sets["triage", split]:
            labels = row["labels"]
            assert labels == [label for label in LABELS if label in labels], row  # ordered, once
            assert "urgent" not in labels or "bug" in labels, row
            combos[tuple(labels)] += 1
    # As the README says: some messages carry no label, some praise and ask at once.
    assert combos[()] > 0 and combos["feature", "praise"] > 0 and combos["bug", "praise"] > 0
    assert not any("urgent" in combo and len(combo) > 2 for combo in combos)


def test_entity_tags_are_valid_bio_over_the_three_types(
    sets: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    allowed = {"O"} | {f"{edge}-{kind}" for edge in "BI" for kind in TYPES}
    found: Counter[str] = Counter()
    for split in SPLITS:
        for row in sets["entities", split]:
            tags = row["ner_tags"]
            assert len(tags) == len(row["tokens"]), row["id"]
            assert set(tags) <= allowed, (row["id"], set(tags) - allowed)
            for before, tag in zip(["O", *tags], tags, strict=False):
                if tag.startswith("I-"):
                    assert before[2:] == tag[2:], f"{row['id']}: {tag} after {before}"
            found.update(tag[2:] for tag in tags if tag.startswith("B-"))
    assert set(found) == set(TYPES) and min(found.values()) >= 50, found


def test_summaries_are_one_sentence(sets: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    for split in SPLITS:
        for row in sets["reply", split]:
            summary = row["summary"]
            assert not summary[0].islower() and summary.endswith("."), row
            assert not re.search(r"[.!?]\s+[A-Z]", summary), f"{row['id']}: two sentences"


def _readme_counts() -> dict[str, dict[str, int]]:
    """The README's counts table: split → column → number."""
    lines = (FOLDER / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| split |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    table: dict[str, dict[str, int]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[cells[0]] = {
            name: int(value) for name, value in zip(header[1:], cells[1:], strict=True)
        }
    return table


def test_the_readme_counts_are_the_files(
    sets: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    table = _readme_counts()
    assert set(table) == {*SPLITS, "total"}
    for split in SPLITS:
        rows = sets["triage", split]
        labels = Counter(label for row in rows for label in row["labels"])
        entities = Counter(
            tag[2:] for row in sets["entities", split] for tag in row["ner_tags"] if tag[0] == "B"
        )
        assert table[split] == {
            "messages": len(rows),
            **{label: labels[label] for label in LABELS},
            "no label": sum(not row["labels"] for row in rows),
            **{kind: entities[kind] for kind in TYPES},
        }, split
    for column in table["total"]:
        assert table["total"][column] == sum(table[split][column] for split in SPLITS), column


def test_the_readme_states_a_licence() -> None:
    text = (FOLDER / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^## Licence\s+.*CC0-1\.0", text, re.MULTILINE | re.DOTALL)


def test_the_generator_reproduces_the_committed_files(make_data: ModuleType) -> None:
    files = make_data.render(make_data.split(make_data.load()))
    committed = {
        path.relative_to(FOLDER).as_posix(): path.read_text(encoding="utf-8")
        for task in TASKS
        for path in (FOLDER / task).glob("*.jsonl")
    }
    assert set(files) == set(committed)
    stale = [path for path, text in files.items() if committed[path] != text]
    assert not stale, f"run python examples/feedback/make_data.py; stale: {stale}"


def test_the_generator_check_mode_finds_a_stale_file(
    make_data: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert make_data.main(["--out", str(tmp_path)]) == 0
    assert make_data.main(["--out", str(tmp_path), "--check"]) == 0
    stale = tmp_path / "entities" / "test.jsonl"
    stale.write_text(stale.read_text(encoding="utf-8").replace("B-PRODUCT", "O", 1))
    assert make_data.main(["--out", str(tmp_path), "--check"]) == 1
    assert "entities/test.jsonl differs" in capsys.readouterr().out


def test_marks_become_bio_tags_on_token_edges(make_data: ModuleType) -> None:
    text, spans = make_data.parse_marks("[Beacon X2](P) fw [1.9.1](V) on [iOS 17](OS)'s app.")
    assert text == "Beacon X2 fw 1.9.1 on iOS 17's app."
    tokens = make_data.tokenize(text)
    assert [t for t, _, _ in tokens] == [
        "Beacon", "X2", "fw", "1.9.1", "on", "iOS", "17", "'s", "app", ".",
    ]  # fmt: skip
    assert make_data.bio_tags(tokens, spans, "here") == [
        "B-PRODUCT", "I-PRODUCT", "O", "B-VERSION", "O", "B-PLATFORM", "I-PLATFORM", "O", "O", "O",
    ]  # fmt: skip
    inside, cut = make_data.parse_marks("[iPad](OS)OS 17")
    with pytest.raises(ValueError, match="token edges"):
        make_data.bio_tags(make_data.tokenize(inside), cut, "here")


def test_an_unmarked_product_or_version_is_refused(make_data: ModuleType) -> None:
    found = make_data.unmarked_mentions(
        ["Kestral", "build", "4511", "on", "2.4", "GHz", "MAC", "address"],
        ["O", "O", "O", "O", "O", "O", "O", "O"],
    )
    assert found == [
        "'Kestral' is not marked as PRODUCT",
        "'4511' looks like a version but is not marked",
    ]
