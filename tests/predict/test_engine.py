"""Batched inference: batches by a token budget, shortest first; results in input order and
equal to the model run on each text alone; entity spans with character offsets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import ML_GROUP

pytestmark = pytest.mark.xdist_group(ML_GROUP)


def test_batches_hold_a_token_budget_shortest_first() -> None:
    from kubetune.predict.engine import batches

    lengths = [30, 5, 12, 12, 40, 7]
    found = list(batches(lengths, tokens=40))
    assert sorted(i for b in found for i in b) == list(range(6))
    flat = [lengths[i] for b in found for i in b]
    assert flat == sorted(lengths)
    for batch in found:
        assert len(batch) * max(lengths[i] for i in batch) <= 40 or len(batch) == 1


@pytest.fixture(scope="module")
def classifier(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cls")
    labels = ["money", "sport", "tech"]
    model = BertForSequenceClassification.from_pretrained(
        tiny["model"], num_labels=3, id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )  # fmt: skip
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny["model"]).save_pretrained(folder)
    return folder


def test_results_come_back_in_order_and_match_one_text_at_a_time(classifier: Path) -> None:
    import torch

    from kubetune.predict import engine

    loaded = engine.load(str(classifier), max_length=48)
    texts = ["goal match team " * n for n in (9, 1, 4, 2, 7)] + ["bank price"]
    results = engine.predict(loaded, texts, tokens=64, bf16=False)
    assert len(results) == len(texts)
    for text, result in zip(texts, results, strict=True):
        encoded = loaded.tokenizer(text, truncation=True, max_length=48, return_tensors="pt")
        with torch.inference_mode():
            probs = loaded.model(**encoded).logits.softmax(-1)[0]
        assert result["label"] == loaded.labels[int(probs.argmax())]
        assert result["score"] == pytest.approx(float(probs.max()), abs=1e-4)
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_entities_are_spans_of_first_subtokens_with_character_offsets() -> None:
    import torch

    from kubetune.predict.engine import _entities

    labels = ["O", "B-person", "I-person", "B-loc"]
    text = "John Smithson visited Paris"
    # [CLS] John Smith ##son visited Paris [SEP]: words 0 1 1 2 3
    word_ids: list[Any] = [None, 0, 1, 1, 2, 3, None]
    offsets = [(0, 0), (0, 4), (5, 10), (10, 13), (14, 21), (22, 27), (0, 0)]
    tags = [0, 1, 2, 0, 0, 3, 0]  # the sub-token "##son" says O: its word's first decides
    probs = torch.full((7, 4), 0.1)
    for position, tag in enumerate(tags):
        probs[position, tag] = 0.7
    spans = _entities(labels, probs, word_ids, offsets, text)
    assert spans == [
        {"type": "person", "start": 0, "end": 13, "text": "John Smithson", "score": 0.7},
        {"type": "loc", "start": 22, "end": 27, "text": "Paris", "score": 0.7},
    ]


def test_int8_keeps_the_labels_of_a_clear_case(classifier: Path) -> None:
    from kubetune.predict import engine

    texts = ["goal match team win"] * 3 + ["bank market price"] * 3
    full = engine.predict(engine.load(str(classifier), max_length=48), texts, bf16=False)
    quick = engine.predict(engine.load(str(classifier), max_length=48, int8=True), texts)
    assert [r["label"] for r in quick] == [r["label"] for r in full]
    assert all(abs(q["score"] - f["score"]) < 0.05 for q, f in zip(quick, full, strict=True))


def _settings(folder: Path, **fields: Any) -> None:
    from kubetune import inference

    inference.write(folder, inference.Inference(task="classification", **fields))


@pytest.fixture()
def windowed(classifier: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "windowed"
    shutil.copytree(classifier, folder)
    return folder


@pytest.mark.parametrize("how", ["mean", "max", "first"])
def test_a_long_text_is_read_whole_in_windows_whose_logits_are_joined(
    windowed: Path, how: str
) -> None:
    import torch

    from kubetune.predict import engine

    _settings(windowed, long_documents={"stride": 4, "aggregate": how})
    loaded = engine.load(str(windowed), max_length=16)
    texts = ["bank price goal match team tech " * 6, "short one"]
    results = engine.predict(loaded, texts, tokens=64, bf16=False)
    # By hand: the tokenizer's own windows of the long text, each run alone.
    encoded = loaded.tokenizer(
        texts[0], truncation=True, max_length=16, stride=4, return_overflowing_tokens=True
    )
    assert len(encoded["input_ids"]) > 3, "the text must need several windows"
    with torch.inference_mode():
        rows = torch.cat(
            [loaded.model(input_ids=torch.tensor([w])).logits for w in encoded["input_ids"]]
        )
    joined = {"mean": rows.mean(0), "max": rows.max(0).values, "first": rows[0]}[how]
    expected = joined.softmax(-1)
    assert results[0]["scores"] == pytest.approx(
        dict(zip(loaded.labels, expected.tolist(), strict=True)), abs=1e-4
    )
    assert results[1]["label"] in loaded.labels


def test_max_windows_reads_only_a_texts_first_windows(windowed: Path) -> None:
    from kubetune.predict import engine

    text = "bank price goal match team tech " * 6
    _settings(windowed, long_documents={"stride": 4, "aggregate": "first"})
    first = engine.predict(engine.load(str(windowed), max_length=16), [text], bf16=False)
    _settings(windowed, long_documents={"stride": 4, "aggregate": "mean", "max_windows": 1})
    capped = engine.predict(engine.load(str(windowed), max_length=16), [text], bf16=False)
    assert capped[0]["scores"] == pytest.approx(first[0]["scores"], abs=1e-5)


def test_a_multi_label_classifier_gives_every_label_over_its_threshold(windowed: Path) -> None:
    import torch

    from kubetune.predict import engine

    text = "bank price goal"
    loaded = engine.load(str(windowed), max_length=16)
    encoded = loaded.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        probs = loaded.model(**encoded).logits.sigmoid()[0].tolist()
    # Thresholds that split the labels: the first two just under their scores, the last over.
    tuned = {"money": probs[0] - 1e-3, "sport": probs[1] - 1e-3, "tech": probs[2] + 1e-3}
    _settings(windowed, multi_label=True, threshold=0.5, thresholds=tuned)
    [result] = engine.predict(engine.load(str(windowed), max_length=16), [text], bf16=False)
    assert sorted(result["labels"]) == ["money", "sport"]
    assert result["labels"] == sorted(["money", "sport"], key=lambda n: -result["scores"][n])
    assert result["scores"] == pytest.approx(dict(zip(loaded.labels, probs, strict=True)), abs=1e-4)
