"""The classical baseline (TF-IDF + logistic regression): scores on hand-made data whose
answers can be checked by hand, multi-label thresholds, final/ written and read back, the
user's mistakes, the sweep over task, and one run through the real trainer (marked slow).

scikit-learn fits these in milliseconds; each test imports the trainer's data module (and
so ``datasets``) in its body, so collecting this module costs the fast suite nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from kubetune import inference, spec, sweep
from kubetune.errors import ConfigError
from kubetune.train import classical, multilabel

from conftest import ROOT, base_spec
from tiny import run_trainer, write_splits

if TYPE_CHECKING:
    from kubetune.train.data import Splits

#: One word per topic, and words every topic uses: the topic word alone decides the label.
TOPIC_WORDS = {"money": "bank", "sport": "goal", "tech": "chip"}
SHARED = ["the", "match", "news", "today", "report", "big"]
#: Multi-label feedback: each label has its word; "urgent" is rare (every fifth text).
LABEL_WORDS = {"bug": "crash", "feature": "wish", "urgent": "asap"}
FILLER = ["the", "app", "screen", "today", "please", "team"]


def topic_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = sorted(TOPIC_WORDS)[i % 3]
        words = [TOPIC_WORDS[label], *rng.sample(SHARED, 3)]
        rng.shuffle(words)
        rows.append({"id": f"{seed}-{i}", "text": " ".join(words), "label": label})
    return rows


def feedback_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        labels = [name for name in ("bug", "feature") if rng.random() < 0.5]
        if i % 5 == 0:
            labels.append("urgent")
        words = [LABEL_WORDS[name] for name in labels] + [rng.choice(FILLER) for _ in range(4)]
        rng.shuffle(words)
        rows.append({"id": f"{seed}-{i}", "text": " ".join(words), "label": labels})
    return rows


def topic_job(folder: Path, **classical_settings: Any) -> dict[str, Any]:
    files = write_splits(
        folder,
        {"train": topic_rows(30, 1), "eval": topic_rows(9, 2), "test": topic_rows(12, 3)},
    )
    return {
        "name": "topics",
        "task": "classical",
        "data": files,
        "classical": {"ngram_max": 1, "min_df": 1, **classical_settings},
    }


def feedback_job(folder: Path, threshold: float | str) -> dict[str, Any]:
    files = write_splits(
        folder,
        {"train": feedback_rows(60, 1), "eval": feedback_rows(20, 2), "test": feedback_rows(20, 3)},
    )
    return {
        "name": "feedback",
        "task": "classical",
        "data": {**files, "multi_label": True, "threshold": threshold, "labels": [*LABEL_WORDS]},
        # Strong regularisation on few examples: the rare label's probabilities stay near 0.5.
        "classical": {"ngram_max": 1, "min_df": 1, "c": 1.0},
    }


def loaded(data: dict[str, Any], cache: Path) -> tuple[spec.JobSpec, Splits]:
    from kubetune.train.data import load_splits

    job = spec.validate(data)
    return job, load_splits(job, cache)


def load_classifier(folder: Path) -> classical.Classifier:
    """A TF-IDF final/ read back: :func:`classical.load_final` answers any method's."""
    back = classical.load_final(folder)
    assert isinstance(back, classical.Classifier)
    return back


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- one label per text ---------------------------------------------------------------------


def test_separable_words_score_perfectly_with_the_fine_tuned_keys(tmp_path: Path) -> None:
    job, splits = loaded(topic_job(tmp_path / "data"), tmp_path / "cache")
    scored = classical.score(job, splits)

    names = sorted(TOPIC_WORDS)
    assert scored.labels == names
    for split, rows_in in (("eval", topic_rows(9, 2)), ("test", topic_rows(12, 3))):
        found = scored.results[split]
        assert found.keys() == {"accuracy", "macro_f1", *(f"f1_{n}" for n in names),
                                "runtime", "samples_per_second"}  # fmt: skip
        assert found["accuracy"] == found["macro_f1"] == 1.0
        rows, extra = scored.artifacts[split]
        assert [r["id"] for r in rows] == [r["id"] for r in rows_in]
        assert [r["text"] for r in rows] == [r["text"] for r in rows_in]
        assert (
            [r["prediction"] for r in rows]
            == [r["label"] for r in rows]
            == [r["label"] for r in rows_in]
        )
        assert all(1 / 3 < r["score"] <= 1 for r in rows)  # the winner of three
        matrix = extra["confusion_matrix"]
        assert matrix["labels"] == names
        assert matrix["matrix"] == [[len(rows) // 3 if i == j else 0 for j in range(3)]
                                    for i in range(3)]  # fmt: skip
    # Every word of two letters or more is a feature: 3 topic words and 6 shared ones; the
    # multinomial regression has one coefficient per feature and label, and an intercept each.
    assert scored.details["features"] == 9
    assert scored.parameters == 3 * 9 + 3
    assert scored.details["train_rows"] == 30
    assert scored.details["converged"] is True
    assert scored.details["seconds"].keys() == {"fit", "eval", "test"}
    assert scored.details["settings"] == job.classical.model_dump(mode="json")
    assert scored.details["classifier"] == "multinomial logistic regression (newton-cg)"


def test_bigrams_and_min_df_shape_the_vocabulary(tmp_path: Path) -> None:
    job, splits = loaded(topic_job(tmp_path / "data", ngram_max=2, min_df=3), tmp_path / "c")
    model = classical.fit(job, splits)
    vocabulary = model.pipeline.named_steps["tfidf"].vocabulary_
    texts = [r["text"].split() for r in topic_rows(30, 1)]
    pairs = [" ".join(t[i : i + 2]) for t in texts for i in range(len(t) - 1)]
    kept = {
        term
        for term in {w for t in texts for w in t} | set(pairs)
        if sum(term in " ".join(t) for t in texts) >= 3  # in 3 or more training texts
    }
    assert set(vocabulary) == kept
    assert model.features == len(kept)


def test_a_listed_label_missing_from_training_is_never_predicted(tmp_path: Path) -> None:
    data = topic_job(tmp_path / "data")
    data["data"]["labels"] = ["money", "sport", "tech", "weather"]
    job, splits = loaded(data, tmp_path / "cache")
    scored = classical.score(job, splits)
    probabilities = classical.fit(job, splits).probabilities(["bank the match"])
    assert probabilities.shape == (1, 4) and probabilities[0, 3] == 0.0
    assert probabilities[0].sum() == pytest.approx(1.0)
    assert scored.results["test"]["accuracy"] == 1.0
    assert scored.results["test"]["f1_weather"] == 0.0


def test_the_seed_and_settings_reproduce_the_same_model(tmp_path: Path) -> None:
    job, splits = loaded(topic_job(tmp_path / "data", c=0.5), tmp_path / "cache")
    first, second = classical.fit(job, splits), classical.fit(job, splits)
    texts = [r["text"] for r in topic_rows(12, 3)]
    np.testing.assert_array_equal(first.probabilities(texts), second.probabilities(texts))
    stronger = classical.fit(spec.validate({**job.model_dump(), "classical": {"c": 50.0,
                             "ngram_max": 1, "min_df": 1}}), splits)  # fmt: skip
    # Less regularisation, more confident answers: C reaches the regression.
    assert (
        stronger.probabilities(texts).max(axis=1).mean()
        > first.probabilities(texts).max(axis=1).mean()
    )


# --- several labels per text ----------------------------------------------------------------


def test_multi_label_scores_each_label_against_its_threshold(tmp_path: Path) -> None:
    job, splits = loaded(feedback_job(tmp_path / "data", 0.5), tmp_path / "cache")
    model = classical.fit(job, splits)
    scored = classical.evaluate(job, splits, model)
    names = [*LABEL_WORDS]
    assert scored.details["thresholds"] == {"tuned": False,
                                            "thresholds": dict.fromkeys(names, 0.5)}  # fmt: skip
    assert (
        scored.details["classifier"] == "one-vs-rest logistic regression (newton-cg), one per label"
    )
    # One binary regression per label: a coefficient per feature and an intercept each.
    assert scored.parameters == 3 * (model.features + 1)
    gold_rows = feedback_rows(20, 3)
    texts = [r["text"] for r in gold_rows]
    probabilities = model.probabilities(texts)
    gold = multilabel.multi_hot([r["label"] for r in gold_rows], names)
    expected = multilabel.metrics(gold, (probabilities >= 0.5).astype(int), names)
    found = scored.results["test"]
    assert {k: found[k] for k in expected} == expected
    assert found.keys() == expected.keys() | {"runtime", "samples_per_second"}
    rows, extra = scored.artifacts["test"]
    assert extra == {"thresholds": scored.details["thresholds"]}
    for row, truth, scores in zip(rows, gold_rows, probabilities, strict=True):
        assert row["label"] == truth["label"]
        over = [(names[i], s) for i, s in enumerate(scores) if s >= 0.5]
        assert [p["label"] for p in row["prediction"]] == [
            n for n, _ in sorted(over, key=lambda pair: -pair[1])
        ]
        assert all(p["score"] >= 0.5 for p in row["prediction"])
    # The rare label's probabilities stay under 0.5 for some of its eval texts: missed.
    assert scored.results["eval"]["f1_urgent"] < 1.0


def test_tuned_thresholds_are_the_best_on_eval_and_applied_to_test(tmp_path: Path) -> None:
    job, splits = loaded(feedback_job(tmp_path / "data", "tune"), tmp_path / "cache")
    model = classical.fit(job, splits)
    names = [*LABEL_WORDS]
    eval_rows, test_rows = feedback_rows(20, 2), feedback_rows(20, 3)
    eval_scores = model.probabilities([r["text"] for r in eval_rows])
    tuned = multilabel.tune_thresholds(
        eval_scores, multilabel.multi_hot([r["label"] for r in eval_rows], names)
    )
    scored = classical.evaluate(job, splits, model)

    record = scored.details["thresholds"]
    assert record["tuned"] is True
    assert record["thresholds"] == {n: float(t) for n, t in zip(names, tuned, strict=True)}
    assert record["thresholds"]["urgent"] < 0.5  # lowered for the rare label
    assert scored.results["eval"]["f1_urgent"] == 1.0
    np.testing.assert_array_equal(model.thresholds, tuned)  # final/ applies what test used
    test_scores = model.probabilities([r["text"] for r in test_rows])
    gold = multilabel.multi_hot([r["label"] for r in test_rows], names)
    expected = multilabel.metrics(gold, multilabel.decide(test_scores, tuned), names)
    assert {k: scored.results["test"][k] for k in expected} == expected


def test_a_label_training_never_saw_is_never_given_and_still_loads(tmp_path: Path) -> None:
    data = feedback_job(tmp_path / "data", 0.5)
    data["data"]["labels"] = [*LABEL_WORDS, "praise"]
    job, splits = loaded(data, tmp_path / "cache")
    model = classical.fit(job, splits)
    # One regression per label seen both ways; "praise" gets scikit-learn's constant.
    assert len(model.regressions) == 3
    assert model.parameters == 3 * (model.features + 1)
    assert model.fit_details["constant_labels"] == ["praise"]
    texts = [r["text"] for r in feedback_rows(20, 3)]
    assert not model.probabilities(texts)[:, 3].any()
    classical.save_final(model, tmp_path / "final")
    back = load_classifier(tmp_path / "final")
    np.testing.assert_array_equal(back.probabilities(texts), model.probabilities(texts))


# --- final/ -----------------------------------------------------------------------------------


def test_final_loads_back_and_predicts_as_the_run_scored(tmp_path: Path) -> None:
    job, splits = loaded(feedback_job(tmp_path / "data", "tune"), tmp_path / "cache")
    model = classical.fit(job, splits)
    scored = classical.evaluate(job, splits, model)
    classical.save_final(model, tmp_path / "final")

    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == [
        "classical.json", "kubetune.json", "pipeline.skops"]  # fmt: skip
    back = load_classifier(tmp_path / "final")
    assert (back.labels, back.multi_label, back.text_column) == ([*LABEL_WORDS], True, "text")
    np.testing.assert_array_equal(back.thresholds, model.thresholds)
    texts = [r["text"] for r in feedback_rows(20, 3)]
    np.testing.assert_array_equal(back.probabilities(texts), model.probabilities(texts))
    rows, _ = scored.artifacts["test"]
    assert [p["prediction"] for p in back.predict(texts)] == [r["prediction"] for r in rows]
    settings = inference.read(tmp_path / "final")
    assert settings is not None and (settings.task, settings.multi_label) == ("classical", True)
    assert settings.thresholds == scored.details["thresholds"]["thresholds"]


def test_single_label_final_predicts_names_and_scores(tmp_path: Path) -> None:
    job, splits = loaded(topic_job(tmp_path / "data"), tmp_path / "cache")
    model = classical.fit(job, splits)
    classical.save_final(model, tmp_path / "final")
    back = load_classifier(tmp_path / "final")
    answers = back.predict(["goal the news", "chip today big"])
    assert [a["prediction"] for a in answers] == ["sport", "tech"]
    assert all(1 / 3 < a["score"] <= 1 for a in answers)
    assert back.thresholds is None
    assert json.loads((tmp_path / "final" / "classical.json").read_text())["fit"] == (
        model.fit_details
    )


def shout(texts: Any) -> Any:
    """A function of this test module: a pipeline holding it could run any code on load."""
    return [str(t).upper() for t in texts]


def test_final_refuses_a_pipeline_with_foreign_code(tmp_path: Path) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    job, splits = loaded(topic_job(tmp_path / "data"), tmp_path / "cache")
    model = classical.fit(job, splits)
    model.pipeline = Pipeline([("shout", FunctionTransformer(shout)), *model.pipeline.steps])
    classical.save_final(model, tmp_path / "final")
    with pytest.raises(ConfigError, match=r"pipeline\.skops: holds types outside .*shout"):
        classical.load_final(tmp_path / "final")


def test_a_folder_without_a_classical_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a classical model folder"):
        classical.load_final(tmp_path)


# --- the user's mistakes ----------------------------------------------------------------------


def _one_label(rows: list[dict[str, Any]], data: dict[str, Any]) -> None:
    for row in rows:
        row["label"] = "money"


def _no_text(rows: list[dict[str, Any]], data: dict[str, Any]) -> None:
    rows[1]["text"] = None


def _high_min_df(rows: list[dict[str, Any]], data: dict[str, Any]) -> None:
    data["classical"]["min_df"] = 40


def _other_column(rows: list[dict[str, Any]], data: dict[str, Any]) -> None:
    data["data"]["text_column"] = "body"


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (_high_min_df, r"^classical\.min_df: no terms are left from the 30 training texts"),
        (_one_label, r"^data\.train: every training text has the label 'money'"),
        (_no_text, r"^data\.text_column: row 2 of the train data has no 'text'"),
        (_other_column, r"^data\.text_column: column 'body' is not in the train data"),
    ],
)
def test_mistakes_name_the_field_to_change(mistake: Any, message: str, tmp_path: Path) -> None:
    data = topic_job(tmp_path / "data")
    rows = topic_rows(30, 1)
    mistake(rows, data)
    write_splits(tmp_path / "data", {"train": rows})
    job, splits = loaded(data, tmp_path / "cache")
    with pytest.raises(ConfigError, match=message):
        classical.score(job, splits)


# --- task as a sweep parameter --------------------------------------------------------------


def test_a_sweep_over_task_drops_what_classical_does_not_read() -> None:
    data = base_spec(
        data={"train": "t.jsonl", "test": "t.jsonl"},
        train={"learning_rate": 3e-5, "epochs": 2, "seed": 7},
        lora={"r": 8},
        classical={"c": 4.0},
        sweep={"parameters": {"task": {"values": ["classical", "classification"]}}},
    )
    baseline, tuned = sweep.expand(spec.validate(data))
    assert (baseline.spec.task, tuned.spec.task) == ("classical", "classification")
    assert baseline.spec.model.name == spec.NO_MODEL and baseline.spec.lora is None
    assert baseline.spec.train.learning_rate == spec.TrainSpec().learning_rate
    assert baseline.spec.train.epochs == spec.TrainSpec().epochs
    assert baseline.spec.train.seed == 7  # read by both: kept
    assert baseline.spec.classical.c == 4.0
    assert tuned.spec.model.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert tuned.spec.lora is not None and tuned.spec.lora.r == 8
    assert tuned.spec.train.learning_rate == 3e-5
    assert "classical" not in tuned.spec.model_fields_set
    assert baseline.run_id != tuned.run_id


def test_the_baseline_job_has_a_classical_arm_on_cpus() -> None:
    runs = sweep.expand(spec.load(ROOT / "jobs" / "bbc-news-baseline-vs-finetune.yaml"))
    arms = {r.spec.task: r for r in runs}
    assert len(runs) == 4 and set(arms) == {"zero-shot", "classification", "classical"}
    base = arms["classical"].spec
    assert base.model.name == spec.NO_MODEL and base.prompt is None
    assert base.resources.gpus == 0
    assert base.classical == spec.ClassicalSpec()  # the defaults, written out
    assert len({r.spec.data.test for r in runs}) == 1, "one test split for every arm"


# --- the real trainer -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One classical run through ``python -m kubetune.train``, as a pod runs it."""
    tmp = tmp_path_factory.mktemp("classical-run")
    data = topic_job(tmp / "data")
    return {"dir": run_trainer(data, tmp), "data": data}


@pytest.mark.slow
def test_a_run_writes_the_metrics_predictions_and_record_of_a_baseline(
    trained: dict[str, Any],
) -> None:
    out: Path = trained["dir"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"eval", "test"}
    for split, name in (("eval", "predictions.jsonl"), ("test", "test_predictions.jsonl")):
        assert metrics[split]["accuracy"] == 1.0
        rows = read_jsonl(out / name)
        gold = read_jsonl(Path(trained["data"]["data"][split]))
        assert [(r["id"], r["label"]) for r in rows] == [(g["id"], g["label"]) for g in gold]
        assert rows[0].keys() == {"id", "text", "label", "prediction", "score"}
    assert json.loads((out / "confusion_matrix_test.json").read_text())["labels"] == sorted(
        TOPIC_WORDS
    )
    record = json.loads((out / "run.json").read_text())
    assert (record["status"], record["task"]) == ("completed", "classical")
    assert record["model"] is None and record["metrics"] == metrics
    assert record["parameters"] == {"trainable": 0, "total": 3 * 9 + 3}
    assert record["classical"]["features"] == 9
    assert record["classical"]["seconds"].keys() == {"fit", "eval", "test"}
    assert record["compute"]["cpu_seconds"] > 0
    assert not (out / "checkpoints").exists() and not (out / "history.json").exists()


@pytest.mark.slow
def test_a_run_stores_its_pipeline_in_final(trained: dict[str, Any]) -> None:
    back = load_classifier(trained["dir"] / "final")
    assert [a["prediction"] for a in back.predict(["bank news", "goal today"])] == [
        "money",
        "sport",
    ]
