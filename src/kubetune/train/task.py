"""What a task family hands the runner: the same shape for every family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

#: (raw split, model outputs from ``Trainer.predict``, the trained model)
#: → (prediction rows for predictions.jsonl, extra artifacts by file stem). An artifact named
#: :data:`FINAL_METRICS` is not written: its scores replace the split's metrics of that name.
FINAL_METRICS = "final_metrics"
Predictor = Callable[[Dataset, np.ndarray, Any], tuple[list[dict[str, Any]], dict[str, Any]]]
#: On a GPU every batch is padded to a multiple of this many tokens. Batches grouped by length
#: bring a new sequence length at nearly every step, and in bf16 or fp16 torch runs attention
#: through cuDNN, which sets up a plan for each new shape. On an H200, all-MiniLM-L6-v2 at
#: batch 32 in a plain Trainer loop with kubetune's arguments: bf16 9.5 steps/s unpadded, 27
#: padded to 8 (fp32: 24 and 30); kubetune's trainer as the pod starts it went from 10.2 to
#: 15.9 (benchmarks/bench_gpu.py). On a CPU the padding would only cost time.
GPU_PAD_MULTIPLE = 8


def pad_multiple() -> int | None:
    """What the collators pad each batch's length to a multiple of, here (see above)."""
    import torch

    return GPU_PAD_MULTIPLE if torch.cuda.is_available() else None


@dataclass
class OwnTrainer:
    """A family that trains with its own library's Trainer (embedding: sentence-transformers'
    ``SentenceTransformerTrainer``, a ``transformers.Trainer``) instead of kubetune's: the
    steps of the recipe it does its own way. Everything else (checkpoints, resume, callbacks,
    W&B, the record) is the runner's, as for every family."""

    #: The TrainingArguments subclass its Trainer takes, and its own arguments beside those
    #: the spec sets (kubetune.train.trainer.training_args).
    arguments_class: Any
    arguments: dict[str, Any]
    #: (model, training arguments, callbacks) → the Trainer, kubetune's TrainerHooks mixed in.
    trainer: Callable[[Any, Any, list[Any]], Any]
    #: Adds LoRA adapters to the model in place as spec.lora says → their target modules.
    add_lora: Callable[[Any], list[str]]
    #: (trainer, split) → the split's metrics, prediction rows and extra artifacts (by file
    #: stem): in place of ``Trainer.predict`` and :data:`Predictor`.
    evaluate: Callable[[Any, str], tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]
    #: (trained model, final/, adapter/ under LoRA else None) → writes those folders.
    save: Callable[[Any, Path, Path | None], None]


@dataclass
class Task:
    model: Any
    labels: list[str]
    tokenized: dict[str, Dataset]
    default_metric: str
    peft_task: str
    #: How batches are made, scored and turned into prediction rows; a family with its own
    #: Trainer (:attr:`own`) leaves them to it.
    collator: Any = None
    compute_metrics: Callable[[Any], dict[str, Any]] | None = None
    predictions: Predictor | None = None
    #: Evaluate by generating text (Seq2SeqTrainer, ``predict_with_generate``).
    generate: bool = False
    #: Whether a larger ``default_metric`` is better (False for loss, perplexity).
    greater_is_better: bool = True
    #: Reduces each batch's logits before they are gathered (e.g. argmax over a vocabulary).
    preprocess_logits: Callable[[Any, Any], Any] | None = None
    #: Metrics derived from the Trainer's own (e.g. perplexity from loss), unprefixed.
    derived_metrics: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: The family trains with its own library's Trainer (see :class:`OwnTrainer`).
    own: OwnTrainer | None = None
    #: What final/kubetune.json records beside the spec's settings (kubetune.inference),
    #: asked after evaluation: what it decided, e.g. the thresholds tuned on eval.
    inference: Callable[[], dict[str, Any]] | None = None
