"""What a task family hands the runner: the same shape for every family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset

#: (raw split, logits) → (prediction rows for predictions.jsonl, extra artifacts by file stem)
Predictor = Callable[[Dataset, np.ndarray], tuple[list[dict[str, Any]], dict[str, Any]]]


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
