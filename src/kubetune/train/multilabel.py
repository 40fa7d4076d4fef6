"""Multi-label decisions and their scores, shared by every labelling task (fine-tuned
classification, zero-shot, classical) with ``data.multi_label``.

Each label is its own yes/no decision: a text gets every label whose score reaches that
label's threshold, possibly none. Scores are probabilities (sigmoid outputs, or a zero-shot
method's per-label score); gold labels are a multi-hot matrix (texts × labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kubetune.errors import ConfigError

#: Candidate thresholds when data.threshold is "tune": every 0.05 from 0.05 to 0.95.
TUNING_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def multi_hot(values: Sequence[Any], names: list[str]) -> np.ndarray:
    """Gold labels as a (texts × labels) 0/1 matrix. Each value is a list of label names or
    ids (a bare name or id counts as a list of one)."""
    to_id = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(values), len(names)), dtype=np.int64)
    for row, value in enumerate(values):
        for label in value if isinstance(value, list) else [value]:
            if isinstance(label, int) and not isinstance(label, bool):
                if not 0 <= label < len(names):
                    raise ConfigError(
                        f"data.label_column: label id {label} of row {row + 1} is not an id of "
                        f"data.labels (0 to {len(names) - 1}); fix the row or list the label"
                    )
                index = label
            elif str(label) in to_id:
                index = to_id[str(label)]
            else:
                raise ConfigError(
                    f"data.label_column: label {label!r} of row {row + 1} is not one of "
                    f"{', '.join(names)}; list it in data.labels or fix the row"
                )
            out[row, index] = 1
    return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, without overflow for large negative logits."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64))))


def thresholds_for(setting: float | str, n_labels: int) -> np.ndarray:
    """One threshold per label from data.threshold's number (``"tune"`` starts at 0.5)."""
    value = 0.5 if isinstance(setting, str) else float(setting)
    return np.full(n_labels, value, dtype=np.float64)


def tune_thresholds(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Each label's threshold that maximises its F1 on these examples (the eval split).

    Ties go to the threshold nearest 0.5, so a label whose F1 is flat over the grid (never
    present, or always separable) keeps the neutral threshold.
    """
    scores, gold = np.asarray(scores, dtype=np.float64), np.asarray(gold).astype(bool)
    # The grid nearest 0.5 first: argmax keeps the first of equal F1s.
    order = np.array(sorted(TUNING_GRID, key=lambda t: (abs(t - 0.5), t)))
    f1 = np.zeros((len(order), scores.shape[1]))
    for k, threshold in enumerate(order):
        decided = scores >= threshold
        tp = (decided & gold).sum(axis=0)
        wrong = (decided != gold).sum(axis=0)  # false positives + false negatives
        # F1 = 2tp / (2tp + fp + fn); 0 where nothing is predicted or present, as
        # scikit-learn's zero_division=0.
        f1[k] = np.divide(2 * tp, 2 * tp + wrong, out=np.zeros(len(tp)), where=tp > 0)
    return np.asarray(order[np.argmax(f1, axis=0)], dtype=np.float64)


def decide(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The 0/1 matrix of labels that apply: score ≥ its label's threshold."""
    return (scores >= thresholds[None, :]).astype(np.int64)


def metrics(gold: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Micro- and macro-F1, subset accuracy (every label of a text right), micro precision
    and recall, and per-label F1 as ``f1_<label>`` (flat keys, so trackers can plot them)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    gold, predicted = np.asarray(gold), np.asarray(predicted)
    per_label = f1_score(gold, predicted, average=None, zero_division=0)
    out: dict[str, Any] = {
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(gold, predicted)),
        "micro_precision": float(
            precision_score(gold, predicted, average="micro", zero_division=0)
        ),
        "micro_recall": float(recall_score(gold, predicted, average="micro", zero_division=0)),
    }
    out.update({f"f1_{name}": float(score) for name, score in zip(names, per_label, strict=True)})
    return out


def labels_over(
    scores: np.ndarray, thresholds: np.ndarray, names: list[str]
) -> list[list[dict[str, Any]]]:
    """Per text, every label over its threshold with its score, highest first (the
    ``prediction`` of a multi-label prediction row)."""
    rows: list[list[dict[str, Any]]] = []
    for row in scores:
        chosen = [i for i in np.argsort(-row, kind="stable") if row[i] >= thresholds[i]]
        rows.append([{"label": names[i], "score": round(float(row[i]), 6)} for i in chosen])
    return rows


def threshold_record(thresholds: np.ndarray, names: list[str], tuned: bool) -> dict[str, Any]:
    """What run.json and the artifacts say about the thresholds used."""
    return {
        "tuned": tuned,
        "thresholds": {name: float(t) for name, t in zip(names, thresholds, strict=True)},
    }
