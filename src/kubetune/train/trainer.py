"""The Hugging Face Trainer as kubetune runs it: TrainingArguments from the spec, and the
Trainers with kubetune's hooks (evaluation in dataset order; see
:mod:`kubetune.train.trainer_internals`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments

from kubetune.spec import JobSpec
from kubetune.train.precision import precision_args
from kubetune.train.trainer_internals import TrainerHooks


class OrderedEvalTrainer(TrainerHooks, Trainer):
    """The Trainer for tasks scored from logits."""


class OrderedEvalSeq2SeqTrainer(TrainerHooks, Seq2SeqTrainer):
    """The Trainer for tasks scored from generated text."""


def training_args(
    spec: JobSpec,
    output_dir: Path,
    metric: str,
    *,
    generate: bool = False,
    greater_is_better: bool = True,
    kind: Any = None,
    extra: dict[str, Any] | None = None,
) -> TrainingArguments:
    """TrainingArguments from the spec; Seq2SeqTrainingArguments when evaluation generates.
    ``kind``: another TrainingArguments subclass (a family's own Trainer's), with ``extra``
    arguments of its own."""
    t = spec.train
    if kind is None:
        kind = Seq2SeqTrainingArguments if generate else TrainingArguments
    extra = {**({"predict_with_generate": True} if generate else {}), **(extra or {})}
    best = t.early_stopping_patience is not None
    warmup: int | float = int(t.warmup_steps) if t.warmup_steps >= 1 else t.warmup_steps
    args: TrainingArguments = kind(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or 2 * t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        warmup_steps=warmup,
        lr_scheduler_type=t.lr_scheduler_type,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        label_smoothing_factor=t.label_smoothing_factor,
        activation_checkpointing=t.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps,
        load_best_model_at_end=best,
        metric_for_best_model=metric if best else None,
        greater_is_better=greater_is_better if best else None,
        seed=t.seed,
        data_seed=t.seed,
        full_determinism=t.deterministic,
        report_to="none",
        disable_tqdm=True,
        **precision_args(t.precision),
        **extra,
    )
    return args
