"""Multi-label decisions and their scores against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kubetune.errors import ConfigError
from kubetune.train import multilabel

NAMES = ["bug", "feature", "praise"]


def test_multi_hot_takes_names_ids_bare_labels_and_empty_lists() -> None:
    gold = multilabel.multi_hot([["bug", "praise"], [1], "feature", [], [0, 2]], NAMES)
    assert gold.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["bug", "speed"], "label 'speed' of row 2 is not one of bug, feature, praise"),
        ([3], "label id 3 of row 2 is not an id of data.labels (0 to 2)"),
        ([-1], "label id -1 of row 2"),
    ],
)
def test_multi_hot_names_the_row_of_an_unknown_label(value: list[object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^data\.label_column: ") as caught:
        multilabel.multi_hot([["bug"], value], NAMES)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_sigmoid_is_the_logistic_function_and_does_not_overflow() -> None:
    out = multilabel.sigmoid(np.array([0.0, np.log(3.0), -np.log(3.0), -1000.0, 1000.0]))
    assert out.tolist() == pytest.approx([0.5, 0.75, 0.25, 0.0, 1.0])


def test_a_global_threshold_applies_to_every_label() -> None:
    assert multilabel.thresholds_for(0.3, 3).tolist() == [0.3, 0.3, 0.3]
    assert multilabel.thresholds_for("tune", 2).tolist() == [0.5, 0.5], "tuning starts at 0.5"


def test_decide_takes_scores_at_or_over_each_labels_threshold() -> None:
    scores = np.array([[0.5, 0.2, 0.9], [0.49, 0.31, 0.1]])
    decided = multilabel.decide(scores, np.array([0.5, 0.3, 0.95]))
    assert decided.tolist() == [[1, 0, 0], [0, 1, 0]]


def test_tuned_thresholds_are_each_labels_best_f1_on_the_grid() -> None:
    # label 0: positives score 0.30 and 0.40, negatives 0.20 and 0.35.
    #   t=0.25..0.30 → tp 2, fp 1 → F1 0.8; t=0.40 → tp 1, fp 0, fn 1 → F1 2/3;
    #   t=0.20 → tp 2, fp 2 → F1 2/3. Best 0.8 at 0.25 and 0.30: 0.30 is nearest 0.5.
    # label 1: positive 0.9, negatives 0.6 and 0.1, the fourth text 0.7 is a negative too.
    #   Any t in (0.7, 0.9] gives F1 1: 0.75 … 0.90; nearest 0.5 is 0.75.
    # label 2: never present → F1 0 everywhere → stays 0.5.
    scores = np.array(
        [
            [0.30, 0.90, 0.8],
            [0.40, 0.60, 0.2],
            [0.20, 0.10, 0.6],
            [0.35, 0.70, 0.1],
        ]
    )
    gold = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert multilabel.tune_thresholds(scores, gold).tolist() == pytest.approx([0.30, 0.75, 0.5])


def test_tuned_thresholds_prefer_the_one_nearest_half_when_f1_is_flat() -> None:
    # Separable anywhere between 0.1 and 0.9: every grid point from 0.15 to 0.9 scores 1.
    scores = np.array([[0.95], [0.05]])
    assert multilabel.tune_thresholds(scores, np.array([[1], [0]])).tolist() == [0.5]


def test_tuned_thresholds_match_scikit_learns_f1() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, size=(40, 2))
    scores = np.clip(gold * 0.3 + rng.random((40, 2)) * 0.7, 0, 1)
    tuned = multilabel.tune_thresholds(scores, gold)
    for label in range(2):
        best = max(
            f1_score(gold[:, label], scores[:, label] >= t, zero_division=0)
            for t in multilabel.TUNING_GRID
        )
        chosen = f1_score(gold[:, label], scores[:, label] >= tuned[label], zero_division=0)
        assert chosen == pytest.approx(best)


def test_metrics_by_hand() -> None:
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    predicted = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]])
    # Per label: bug tp 2 → F1 1; feature tp 1, fn 1 → 2/3; praise tp 0, fp 1, fn 1 → 0.
    # Micro: tp 3, fp 1, fn 2 → precision 3/4, recall 3/5, F1 6/9 = 2/3.
    # Subset accuracy: texts 2 and 4 are exactly right → 1/2.
    out = multilabel.metrics(gold, predicted, NAMES)
    assert out == pytest.approx(
        {
            "micro_f1": 2 / 3,
            "macro_f1": (1 + 2 / 3 + 0) / 3,
            "subset_accuracy": 0.5,
            "micro_precision": 0.75,
            "micro_recall": 0.6,
            "f1_bug": 1.0,
            "f1_feature": 2 / 3,
            "f1_praise": 0.0,
        }
    )


def test_labels_over_lists_each_label_over_its_threshold_highest_first() -> None:
    scores = np.array([[0.6, 0.9, 0.1], [0.1, 0.2, 0.2], [0.7, 0.7, 0.7]])
    rows = multilabel.labels_over(scores, np.array([0.5, 0.5, 0.2]), NAMES)
    assert rows == [
        [{"label": "feature", "score": 0.9}, {"label": "bug", "score": 0.6}],
        [{"label": "praise", "score": 0.2}],  # at its threshold
        [
            {"label": "bug", "score": 0.7},
            {"label": "feature", "score": 0.7},
            {"label": "praise", "score": 0.7},
        ],
    ]


def test_threshold_record_names_each_labels_threshold() -> None:
    record = multilabel.threshold_record(np.array([0.3, 0.75, 0.5]), NAMES, tuned=True)
    assert record == {"tuned": True, "thresholds": {"bug": 0.3, "feature": 0.75, "praise": 0.5}}
