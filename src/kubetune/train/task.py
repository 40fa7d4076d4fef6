"""What a task family hands the runner: the same shape for every family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset

#: (raw split, model outputs from ``Trainer.predict``, the trained model)
#: → (prediction rows for predictions.jsonl, extra artifacts by file stem). An artifact named
#: :data:`FINAL_METRICS` is not written: its scores replace the split's metrics of that name.
FINAL_METRICS = "final_metrics"
Predictor = Callable[[Dataset, np.ndarray, Any], tuple[list[dict[str, Any]], dict[str, Any]]]


@dataclass
class Task:
    model: Any
    labels: list[str]
    tokenized: dict[str, Dataset]
    collator: Any
    compute_metrics: Callable[[Any], dict[str, Any]]
    predictions: Predictor
    default_metric: str
    peft_task: str
    #: Evaluate by generating text (Seq2SeqTrainer, ``predict_with_generate``).
    generate: bool = False
    #: Whether a larger ``default_metric`` is better (False for loss, perplexity).
    greater_is_better: bool = True
    #: Reduces each batch's logits before they are gathered (e.g. argmax over a vocabulary).
    preprocess_logits: Callable[[Any, Any], Any] | None = None
    #: Metrics derived from the Trainer's own (e.g. perplexity from loss), unprefixed.
    derived_metrics: Callable[[dict[str, Any]], dict[str, Any]] | None = None
