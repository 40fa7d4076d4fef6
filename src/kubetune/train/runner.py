"""One run, top to bottom: seed ▸ data ▸ tokenize ▸ model (+LoRA) ▸ HF Trainer ▸ eval ▸ save.

Everything a run produces lands in the store under ``<sweep>/<run-id>/``; see
:mod:`kubetune.store`. A finished run is not retrained; an interrupted one resumes from its
newest complete checkpoint in the store.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kubetune import spec as specmod
from kubetune import sweep
from kubetune.errors import ConfigError
from kubetune.store import DEFAULT_STORE, RunLocation, open_store
from kubetune.train import record, tracking
from kubetune.train.callbacks import (
    CheckpointSync,
    DerivedMetrics,
    GracefulStop,
    Progress,
    WandbLogger,
    emit,
)
from kubetune.train.data import load_splits
from kubetune.train.task import FINAL_METRICS

Outcome = Literal["completed", "already-completed", "interrupted"]

#: Task → the module that builds it (each has ``build(spec, splits, tokenizer, model_path)``).
FAMILIES = {
    "classification": "classification",
    "ner": "ner",
    "seq2seq": "seq2seq",
    "causal-lm": "causal_lm",
}


def resolve_model_path(name: str) -> str:
    """``pkg:<package>/<path>`` → a folder inside an installed package; else unchanged."""
    if name.startswith("pkg:"):
        from importlib import resources

        package, _, rest = name[4:].partition("/")
        try:
            root = resources.files(package)
        except ModuleNotFoundError:
            raise ConfigError(f"model.name: {name} needs the package {package} installed") from None
        path = Path(str(root.joinpath(rest)))
        if not path.is_dir():
            raise ConfigError(f"model.name: {name}: no folder {rest!r} in package {package}")
        return str(path)
    return name


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): autocast then halves
    the time of a training step; elsewhere bf16 on CPU is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def precision_args(precision: str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("train.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


def training_args(
    spec: specmod.JobSpec,
    output_dir: Path,
    metric: str,
    *,
    generate: bool = False,
    greater_is_better: bool = True,
) -> Any:
    """TrainingArguments from the spec; Seq2SeqTrainingArguments when evaluation generates."""
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    t = spec.train
    kind = Seq2SeqTrainingArguments if generate else TrainingArguments
    extra: dict[str, Any] = {"predict_with_generate": True} if generate else {}
    best = t.early_stopping_patience is not None
    warmup: int | float = int(t.warmup_steps) if t.warmup_steps >= 1 else t.warmup_steps
    return kind(
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


def run(spec_path: str) -> Outcome:
    """Run the spec at ``spec_path`` (a resolved spec, or a spec of one run)."""
    spec = specmod.load(spec_path)
    runs = sweep.expand(spec, spec_path)
    wanted = os.environ.get("KUBETUNE_RUN_ID")
    if wanted:
        runs = [r for r in runs if r.run_id == wanted] or runs
    if len(runs) != 1:
        raise ConfigError(
            f"{spec_path}: the trainer runs one run; this spec has {len(runs)} "
            "(set KUBETUNE_RUN_ID)"
        )
    resolved = runs[0]
    spec, run_id, group = (
        resolved.spec,
        resolved.run_id,
        os.environ.get("KUBETUNE_SWEEP") or resolved.sweep,
    )

    uri = os.environ.get("KUBETUNE_STORE") or (spec.storage.uri if spec.storage else DEFAULT_STORE)
    location = RunLocation(open_store(uri), group, run_id)
    if location.store.exists(location.key("run.json")):
        previous = location.store.read_json(location.key("run.json"))
        if previous.get("status") == "completed":
            emit("done", already=True, url=location.url, metrics=previous.get("metrics", {}))
            print(
                f"kubetune: {run_id} already finished at {location.url}; nothing to do", flush=True
            )
            return "already-completed"

    from accelerate import PartialState

    state = PartialState()
    return _train(spec, resolved, location, main=state.is_main_process)


def _train(
    spec: specmod.JobSpec, resolved: sweep.ResolvedRun, location: RunLocation, *, main: bool
) -> Outcome:
    import transformers

    started = record.now()
    transformers.set_seed(spec.train.seed, deterministic=spec.train.deterministic)
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    work = (
        Path(os.environ.get("KUBETUNE_WORKDIR") or Path(tempfile.gettempdir()) / "kubetune")
        / resolved.run_id
    )
    work.mkdir(parents=True, exist_ok=True)
    splits = load_splits(spec, work / "data")
    model_path = resolve_model_path(spec.model.name)
    if main:
        location.store.write_text(location.key("spec.yaml"), specmod.dump(spec))

    if spec.task == "zero-shot":
        from kubetune.train import zeroshot

        scored = zeroshot.score(spec, splits, model_path)
        finished = Finished(
            results=scored.results,
            artifacts=scored.artifacts,
            labels=scored.labels,
            parameters={"trainable": 0, "total": scored.parameters},
            extra={"zero_shot": scored.details},
        )
        if main:
            wandb_run = _start_tracking(spec, resolved, location, work)
            _finish(spec, resolved, location, work, splits, model_path, started, finished)
            _close(location, work, wandb_run, finished.results)
        return "completed"
    return _fine_tune(spec, resolved, location, work, splits, model_path, started, main=main)


@dataclass
class Finished:
    """What a finished run hands to :func:`_finish`."""

    results: dict[str, Any]
    artifacts: dict[str, Any]
    labels: list[str]
    parameters: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)
    resumed_step: int | None = None
    save_model: Callable[[Path], None] | None = None


def _fine_tune(
    spec: specmod.JobSpec,
    resolved: sweep.ResolvedRun,
    location: RunLocation,
    work: Path,
    splits: Any,
    model_path: str,
    started: str,
    *,
    main: bool,
) -> Outcome:
    from transformers import AutoTokenizer, EarlyStoppingCallback

    from kubetune.train.trainer import OrderedEvalSeq2SeqTrainer, OrderedEvalTrainer

    family = importlib.import_module(f"kubetune.train.{FAMILIES[spec.task]}")
    tokenizer = AutoTokenizer.from_pretrained(
        model_path, revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
    )
    task = family.build(spec, splits, tokenizer, model_path)
    model = task.model
    trainable, total = _count_parameters(model)
    extra: dict[str, Any] = {}
    if spec.lora is not None:
        model = _with_lora(model, spec, task.peft_task)
        trainable, total = _count_parameters(model)
        extra["lora"] = {"target_modules": sorted(model.peft_config["default"].target_modules)}
    emit("model", trainable=trainable, total=total, labels=len(task.labels))

    metric = spec.train.metric_for_best_model or task.default_metric
    args = training_args(
        spec,
        work / "checkpoints",
        metric,
        generate=task.generate,
        greater_is_better=task.greater_is_better,
    )
    stop = GracefulStop()
    callbacks: list[Any] = [Progress(metric), stop]
    if task.derived_metrics is not None:
        callbacks.insert(0, DerivedMetrics(task.derived_metrics))
    wandb_run = None
    if main:
        callbacks.append(CheckpointSync(location, spec.train.save_total_limit))
        wandb_run = _start_tracking(spec, resolved, location, work)
        if wandb_run is not None:
            callbacks.append(WandbLogger(wandb_run))
    if spec.train.early_stopping_patience:
        callbacks.append(
            EarlyStoppingCallback(
                spec.train.early_stopping_patience, spec.train.early_stopping_threshold
            )
        )

    trainer_class = OrderedEvalSeq2SeqTrainer if task.generate else OrderedEvalTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        data_collator=task.collator,
        train_dataset=task.tokenized.get("train"),
        eval_dataset=task.tokenized.get("eval"),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics,
        preprocess_logits_for_metrics=task.preprocess_logits,
        callbacks=callbacks,
    )
    resume = _resume_point(location, work / "checkpoints")
    resumed_step = resume[1] if resume else None
    if resume is not None:
        emit("resume", step=resumed_step)
    train_output = trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    if stop.requested:
        if main:
            location.store.write_json(
                location.key("run.json"),
                {
                    "status": "interrupted",
                    "run_id": resolved.run_id,
                    "started": started,
                    "stopped": record.now(),
                    "step": trainer.state.global_step,
                },
            )
        emit("interrupted", step=trainer.state.global_step, url=location.url)
        return "interrupted"

    results: dict[str, Any] = {
        "train": {k: v for k, v in train_output.metrics.items() if isinstance(v, (int, float))}
    }
    artifacts: dict[str, Any] = {}
    for split in ("eval", "test"):
        raw = splits.present().get(split)
        if raw is None:
            continue
        output = trainer.predict(task.tokenized[split], metric_key_prefix=split)
        predicted = (
            output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        )
        rows, more = task.predictions(raw, np.asarray(predicted), trainer.model)
        split_metrics = {k.removeprefix(f"{split}_"): v for k, v in (output.metrics or {}).items()}
        if task.derived_metrics is not None:
            split_metrics.update(task.derived_metrics(split_metrics))
        split_metrics.update(more.pop(FINAL_METRICS, {}))
        results[split] = split_metrics
        artifacts[split] = (rows, more)

    if main:
        finished = Finished(
            results=results,
            artifacts=artifacts,
            labels=task.labels,
            parameters={"trainable": trainable, "total": total},
            extra=extra,
            resumed_step=resumed_step,
            save_model=lambda final: _save_model(trainer.model, spec, tokenizer, location, final),
        )
        _finish(spec, resolved, location, work, splits, model_path, started, finished)
        _close(location, work, wandb_run, results)
    return "completed"


def _start_tracking(
    spec: specmod.JobSpec, resolved: sweep.ResolvedRun, location: RunLocation, work: Path
) -> Any:
    """The W&B run of this run id (None when tracking is disabled)."""
    wandb_dir = Path(os.environ.get("WANDB_DIR") or work / "wandb")
    return tracking.start(spec, resolved.run_id, location.sweep, wandb_dir)


def _close(location: RunLocation, work: Path, wandb_run: Any, results: dict[str, Any]) -> None:
    """After run.json: final metrics as W&B summary (``<split>/<metric>``), the done event,
    and the scratch folder removed."""
    summary = {
        f"{split}/{k}": v
        for split, m in results.items()
        for k, v in m.items()
        if isinstance(v, (int, float))
    }
    tracking.finish(wandb_run, summary)
    emit("done", already=False, url=location.url, metrics=results)
    shutil.rmtree(work, ignore_errors=True)


def _finish(
    spec: specmod.JobSpec,
    resolved: sweep.ResolvedRun,
    location: RunLocation,
    work: Path,
    splits: Any,
    model_path: str,
    started: str,
    finished: Finished,
) -> None:
    """final/ (when there is a model), metrics, predictions, then run.json: the run is done."""
    if finished.save_model is not None:
        finished.save_model(work / "final")
    _save_outputs(location, finished.results, finished.artifacts)
    run_record = {
        "status": "completed",
        "run_id": resolved.run_id,
        "sweep": location.sweep,
        "spec_hash": resolved.spec_hash,
        "params": resolved.params,
        "seed": spec.train.seed,
        "task": spec.task,
        "labels": finished.labels,
        "parameters": finished.parameters,
        "model": record.model_identity(spec.model.name, model_path, spec.model.revision),
        "data": {
            "fingerprint": splits.fingerprint,
            "sources": splits.sources,
            "rows": {k: len(v) for k, v in splits.present().items()},
        },
        "packages": record.package_versions(),
        "image": os.environ.get("KUBETUNE_IMAGE"),
        "git": record.git_state(Path.cwd()),
        "hardware": record.hardware(),
        "started": started,
        "finished": record.now(),
        "resumed_from_step": finished.resumed_step,
        "metrics": finished.results,
        **finished.extra,
    }
    location.store.write_json(location.key("run.json"), run_record)


def _count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


#: Modules a warm-started EncoderDecoderModel creates at random (peft names match suffixes).
WARM_START_NEW_MODULES = ("crossattention", "transform")


def default_lora_targets(model: Any) -> list[str] | str:
    """LoRA target modules when the spec names none: peft's choice for the architecture
    (query/value projections), both halves' for an EncoderDecoderModel, else every linear."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

    config = model.config
    if config.model_type in KNOWN:
        return list(KNOWN[config.model_type])
    if config.model_type == "encoder-decoder":
        halves = (config.encoder.model_type, config.decoder.model_type)
        if all(half in KNOWN for half in halves):
            return sorted({name for half in halves for name in KNOWN[half]})
    return "all-linear"


def _with_lora(model: Any, spec: specmod.JobSpec, task_type: str) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    assert spec.lora is not None
    lora = spec.lora
    modules_to_save = list(lora.modules_to_save or [])
    if spec.model.decoder is not None:
        # A warm-started decoder's cross-attention (and, for BERT, its LM head's transform) are
        # new random layers: frozen they would stay random, so they train in full and are saved
        # with the adapter.
        modules_to_save += [m for m in WARM_START_NEW_MODULES if m not in modules_to_save]
    config = LoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=lora.lora_alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=lora.lora_dropout,
        target_modules=lora.target_modules or default_lora_targets(model),
        bias=lora.bias,
        modules_to_save=modules_to_save or None,
        use_rslora=lora.use_rslora,
    )
    if spec.model.load_in_4bit:
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=spec.train.gradient_checkpointing
        )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"lora.target_modules: {exc}") from None


def _resume_point(location: RunLocation, local: Path) -> tuple[Path, int] | None:
    """Download the newest complete checkpoint from the store: (its folder, its step)."""
    steps = location.checkpoints()
    if not steps:
        return None
    target = local / f"checkpoint-{steps[-1]}"
    if not (target / "trainer_state.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        location.fetch_checkpoint(steps[-1], target)
    return target, steps[-1]


def _save_model(
    model: Any, spec: specmod.JobSpec, tokenizer: Any, location: RunLocation, final: Path
) -> None:
    """final/: the trained model and tokenizer. With LoRA the adapter goes to adapter/, and
    final/ holds the merged plain model (lora.merge) or the adapter alone."""
    if spec.lora is not None:
        adapter = final.parent / "adapter"
        model.save_pretrained(str(adapter))
        location.store.upload_dir(adapter, location.key("adapter"))
        if spec.lora.merge:
            model = model.merge_and_unload()
        else:
            # The adapter alone; its config.json keeps the task head's shape and labels, which
            # the base checkpoint does not know.
            model.get_base_model().config.save_pretrained(str(final))
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    location.store.delete_prefix(location.key("final"))
    location.store.upload_dir(final, location.key("final"))


def _save_outputs(
    location: RunLocation, results: dict[str, Any], artifacts: dict[str, Any]
) -> None:
    """metrics.json, predictions per split and each split's extra artifacts."""
    location.store.write_json(location.key("metrics.json"), results)
    for split, (rows, extra) in artifacts.items():
        name = "predictions.jsonl" if split == "eval" else f"{split}_predictions.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        location.store.write_text(location.key(name), text)
        for stem, data in extra.items():
            suffix = "" if split == "eval" else f"_{split}"
            location.store.write_json(location.key(f"{stem}{suffix}.json"), data)
