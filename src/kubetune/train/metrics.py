"""Metrics computed offline with scikit-learn and seqeval (``evaluate.load`` needs the hub)."""

from __future__ import annotations

from typing import Any

import numpy as np
from seqeval.metrics import classification_report as seq_report
from seqeval.metrics import f1_score as seq_f1
from seqeval.metrics import precision_score as seq_precision
from seqeval.metrics import recall_score as seq_recall
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class F1 (flat keys, so trackers can plot them)."""
    ids = list(range(len(names)))
    per_class = f1_score(labels, predictions, labels=ids, average=None, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(
            f1_score(labels, predictions, labels=ids, average="macro", zero_division=0)
        ),
    }
    out.update({f"f1_{name}": float(score) for name, score in zip(names, per_class, strict=True)})
    return out


def confusion(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Confusion matrix with its axes named: rows are true labels, columns predictions."""
    matrix = confusion_matrix(labels, predictions, labels=list(range(len(names))))
    return {"labels": names, "matrix": matrix.tolist()}


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1, overall and per entity type (seqeval)."""
    out: dict[str, Any] = {
        "precision": float(seq_precision(gold, predicted, zero_division=0)),
        "recall": float(seq_recall(gold, predicted, zero_division=0)),
        "f1": float(seq_f1(gold, predicted, zero_division=0)),
    }
    report = seq_report(gold, predicted, output_dict=True, zero_division=0)
    for name, row in report.items():
        if name.endswith(" avg"):
            continue
        out[f"f1_{name}"] = float(row["f1-score"])
    return out
