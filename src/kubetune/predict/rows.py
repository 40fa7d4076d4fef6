"""What a labelling model answers for one text, the same whatever model gave the scores (a
fine-tuned transformer, or the classical TF-IDF pipeline): ``kubetune predict``'s rows and
``kubetune serve``'s results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def label_row(labels: Sequence[str], probs: Sequence[float]) -> dict[str, Any]:
    """One label per text: the likeliest, its probability, and every label's."""
    best = max(range(len(labels)), key=lambda i: probs[i])
    return {
        "label": labels[best],
        "score": round(float(probs[best]), 6),
        "scores": {name: round(float(p), 6) for name, p in zip(labels, probs, strict=True)},
    }


def labels_row(
    labels: Sequence[str], probs: Sequence[float], thresholds: Sequence[float]
) -> dict[str, Any]:
    """Multi-label: every label whose score reaches its threshold, highest first, and every
    label's score."""
    scores = {name: round(float(p), 6) for name, p in zip(labels, probs, strict=True)}
    chosen = [
        name
        for name, p, t in sorted(
            zip(labels, probs, thresholds, strict=True), key=lambda x: -float(x[1])
        )
        if float(p) >= t
    ]
    return {"labels": chosen, "scores": scores}
