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
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kubetune import preflight, sweep
from kubetune import spec as specmod
from kubetune.errors import ConfigError, KubetuneError
from kubetune.faults import failpoint
from kubetune.kube import names
from kubetune.launch import emit
from kubetune.store import (
    DEFAULT_STORE,
    RunLocation,
    StoreError,
    checkpoints,
    endpoint_here,
    open_store,
)
from kubetune.store.record import HISTORY, METRICS, RECORD, RunRecord, load_record
from kubetune.train import record, tracking
from kubetune.train.callbacks import (
    CARRY_FILE,
    CheckpointSync,
    DerivedMetrics,
    GracefulStop,
    Progress,
    ResumeExactly,
    SaveOncePerStep,
    WandbLogger,
)
from kubetune.train.data import load_splits
from kubetune.train.inputs import Fetcher, recorded_inputs
from kubetune.train.task import FINAL_METRICS

Outcome = Literal["completed", "already-completed", "interrupted"]

#: Task → the module that builds it (each has ``build(spec, splits, tokenizer, model_path)``).
FAMILIES = {
    "classification": "classification",
    "ner": "ner",
    "seq2seq": "seq2seq",
    "causal-lm": "causal_lm",
}


def resolve_model_path(name: str, fetch: Fetcher | None = None, field: str = "model.name") -> str:
    """``pkg:<package>/<path>`` → a folder inside an installed package; an ``s3://`` folder →
    its local copy (fetched by ``fetch``, staged ones checked); else unchanged."""
    if name.startswith("s3://"):
        if fetch is None:
            raise ConfigError(f"{field}: {name}: an s3:// model folder needs the run's store")
        return str(fetch.folder(field, name))
    if name.startswith("pkg:"):
        return str(preflight.package_folder(name, field))
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


def own_rows(predicted: Any, rows: int) -> Any:
    """The predictions of a split's own ``rows``, in order.

    With more than one process, each process's last batch is filled up with rows from the
    start of the split, and what ``Trainer.predict`` gathers can keep those extra rows at the
    end (seen with generation under torchrun: 8 predictions for 4 rows on 2 processes).
    """
    return np.asarray(predicted)[:rows]


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
        matching = [r for r in runs if r.run_id == wanted]
        if not matching:
            raise ConfigError(
                f"KUBETUNE_RUN_ID={wanted} is not a run of {spec_path} (its runs: "
                f"{', '.join(r.run_id for r in runs[:3])}{', …' if len(runs) > 3 else ''})"
            )
        runs = matching
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
    storage = spec.storage or specmod.StorageSpec(uri=uri)
    store = open_store(
        uri,
        endpoint=endpoint_here(storage.endpoint),
        region=storage.region,
        concurrency=storage.upload_concurrency,
    )
    location = RunLocation(store, group, run_id)
    previous: RunRecord | None = None
    if location.store.exists(location.key(RECORD)):
        previous = load_record(location)
        if previous.status == "completed":
            _refuse_changed_data(resolved, location, previous)
            emit("done", already=True, url=location.url, metrics=previous.metrics)
            print(
                f"kubetune: {run_id} already finished at {location.url}; nothing to do", flush=True
            )
            return "already-completed"

    from accelerate import PartialState

    state = PartialState()
    # torchrun sets RANK without accelerate knowing it; either way rank 0 alone writes.
    main = state.is_main_process and os.environ.get("RANK", "0") == "0"
    run_record = record.RecordWriter(location, previous, main=main)
    try:
        outcome = _train(spec, resolved, location, run_record, storage)
        wait_for_rank0(state)
        return outcome
    except checkpoints.WriterConflictError:
        raise  # the run belongs to the other trainer: its record is not ours to touch
    except Exception as exc:
        # `runs list` shows why; best effort, since the store itself may be what failed.
        line = str(exc) if isinstance(exc, KubetuneError) else f"{type(exc).__name__}: {exc}"
        with suppress(StoreError):
            run_record.write("failed", error=line.splitlines()[0] if line else type(exc).__name__)
        raise


def _refuse_changed_data(
    resolved: sweep.ResolvedRun, location: RunLocation, previous: RunRecord
) -> None:
    """A finished run whose local data changed since is not "already finished": say so."""
    prints = preflight.local_prints(resolved.spec)
    changed = preflight.data_changes(previous, prints) if prints else []
    if changed:
        raise ConfigError(preflight.changed_data_message(resolved, location.url, changed))


#: How long the other ranks wait for rank 0 to store the final model or the stop's checkpoint.
#: Rank 0's own transfers give up sooner (checkpoints.Retry); a rank 0 that dies ends the
#: wait at once (its connections close).
UPLOAD_WAIT = timedelta(hours=2)


def wait_for_rank0(state: Any) -> None:
    """Ranks other than 0 return only once rank 0 has stored what this attempt produced (the
    final model and the completed run.json, or the stop's checkpoint and run.json).

    A pod whose ranks exit 0 is never re-run by its Job: had it left while rank 0 was still
    uploading, a later failure of rank 0 would wait forever for peers. If rank 0 fails
    instead, the barrier fails on every rank and the gang restarts.

    The default process group's timeout (TrainingArguments.ddp_timeout, 30 min) may be
    shorter than a large model's upload, so the barrier runs in its own gloo group.
    """
    if state.num_processes <= 1:
        return
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=UPLOAD_WAIT)
    dist.barrier(group=group)
    dist.destroy_process_group(group)


def _train(
    spec: specmod.JobSpec,
    resolved: sweep.ResolvedRun,
    location: RunLocation,
    run_record: record.RecordWriter,
    storage: specmod.StorageSpec,
) -> Outcome:
    import transformers

    main = run_record.main
    transformers.set_seed(spec.train.seed, deterministic=spec.train.deterministic)
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    work = (
        Path(os.environ.get(names.WORKDIR_ENV) or Path(tempfile.gettempdir()) / "kubetune")
        / resolved.run_id
    )
    work.mkdir(parents=True, exist_ok=True)
    fetch = Fetcher(location.store, storage, work / "inputs")
    splits = load_splits(spec, work / "data", fetch)
    model_path = resolve_model_path(spec.model.name, fetch)
    if spec.model.decoder is not None and spec.model.decoder.startswith("s3://"):
        # The task family reads model.decoder as a path: give it the fetched, checked copy.
        decoder = resolve_model_path(spec.model.decoder, fetch, "model.decoder")
        spec_here = spec.model_copy(
            update={"model": spec.model.model_copy(update={"decoder": decoder})}
        )
    else:
        spec_here = spec
    # The pre-flight checks of `kubetune run`, on the folders this attempt loads: a Job with
    # a mistake fails at once (exit 2) instead of in a tensor-size error after loading.
    preflight.check_model(_with_model(spec_here, model_path), probe_hub=False)
    if main:
        location.store.write_text(location.key("spec.yaml"), specmod.dump(spec))
    run_record.write("running", **_pinned(spec, resolved, location, splits, model_path))

    if spec.task == "zero-shot":
        from kubetune.train import zeroshot

        scored = zeroshot.score(spec_here, splits, model_path)
        finished = Finished(
            results=scored.results,
            artifacts=scored.artifacts,
            labels=scored.labels,
            parameters={"trainable": 0, "total": scored.parameters},
            extra={"zero_shot": scored.details},
        )
        if main:
            wandb_run = _start_tracking(spec, resolved, location, work)
            _finish(location, work, run_record, finished, pool=None)
            _close(location, work, wandb_run, finished.results)
        return "completed"
    return _fine_tune(
        spec, spec_here, resolved, location, work, splits, model_path, run_record, storage
    )


def _pinned(
    spec: specmod.JobSpec,
    resolved: sweep.ResolvedRun,
    location: RunLocation,
    splits: Any,
    model_path: str,
) -> dict[str, Any]:
    """What run.json pins from the start: identity, inputs, code, environment."""
    return {
        "run_id": resolved.run_id,
        "sweep": location.sweep,
        "spec_hash": resolved.spec_hash,
        "params": record.sweep_params(resolved.params),
        "seed": spec.train.seed,
        "task": spec.task,
        "model": record.model_identity(spec.model.name, model_path, spec.model.revision),
        # What each staged input was on the submitter's machine: source, uri, sha256.
        "inputs": recorded_inputs(),
        "data": {
            "fingerprint": splits.fingerprint,
            "fingerprints": splits.fingerprints,
            "sources": splits.sources,
            "rows": {k: len(v) for k, v in splits.present().items()},
        },
        "packages": record.package_versions(),
        "image": os.environ.get("KUBETUNE_IMAGE"),
        "render": {
            # The chart's pod template revision (kubetune-job/<n>), not its version: the
            # version must stay off the pod template, which a Job never lets change.
            "pod_template": os.environ.get("KUBETUNE_POD_TEMPLATE"),
            "namespace": os.environ.get("KUBETUNE_RENDER_NAMESPACE"),
        },
        "git": record.git_state(Path.cwd()),
        "hardware": record.hardware(),
    }


def _with_model(spec: specmod.JobSpec, path: str) -> specmod.JobSpec:
    return spec.model_copy(update={"model": spec.model.model_copy(update={"name": path})})


@dataclass
class Finished:
    """What a finished run hands to :func:`_finish`."""

    results: dict[str, Any]
    artifacts: dict[str, Any]
    labels: list[str]
    parameters: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)
    resumed_step: int | None = None
    save_model: Callable[[Path, ThreadPoolExecutor], None] | None = None
    history: list[dict[str, Any]] | None = None
    step: int = 0
    #: train.keep_optimizer_state: False removes it from the stored checkpoints at the end.
    keep_optimizer_state: bool = True


def _fine_tune(
    spec: specmod.JobSpec,
    spec_here: specmod.JobSpec,
    resolved: sweep.ResolvedRun,
    location: RunLocation,
    work: Path,
    splits: Any,
    model_path: str,
    run_record: record.RecordWriter,
    storage: specmod.StorageSpec,
) -> Outcome:
    from accelerate import PartialState
    from transformers import AutoTokenizer, EarlyStoppingCallback

    from kubetune.train.trainer import OrderedEvalSeq2SeqTrainer, OrderedEvalTrainer

    main = run_record.main
    family = importlib.import_module(f"kubetune.train.{FAMILIES[spec.task]}")
    tokenizer = AutoTokenizer.from_pretrained(
        model_path, revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
    )
    task = family.build(spec_here, splits, tokenizer, model_path)
    model = task.model
    trainable, total = _count_parameters(model)
    extra: dict[str, Any] = {}
    if spec.lora is not None:
        model = _with_lora(model, spec, task.peft_task)
        trainable, total = _count_parameters(model)
        extra["lora"] = {"target_modules": sorted(model.peft_config["default"].target_modules)}
    if main:
        emit("model", trainable=trainable, total=total, labels=len(task.labels))

    metric = spec.train.metric_for_best_model or task.default_metric
    args = training_args(
        spec,
        work / "checkpoints",
        metric,
        generate=task.generate,
        greater_is_better=task.greater_is_better,
    )
    with _transfers(storage.upload_concurrency) as pool:
        resume = _resume_point(location, work / "checkpoints", pool, run_record, PartialState())
    resumed_step = resume[1] if resume else None
    exact = ResumeExactly(checkpoints.read_json_file(resume[0] / CARRY_FILE) if resume else {})

    stop = GracefulStop()
    callbacks: list[Any] = [Progress(metric), stop, exact]
    if task.derived_metrics is not None:
        callbacks.insert(0, DerivedMetrics(task.derived_metrics))
    wandb_run = None
    uploader: checkpoints.Uploader | None = None
    sync: CheckpointSync | None = None
    trainer: Any = None
    if main:
        uploader = checkpoints.Uploader(
            location,
            work / "staging",
            keep=spec.train.save_total_limit,
            concurrency=storage.upload_concurrency,
        )
        sync = CheckpointSync(uploader)
        callbacks.append(sync)
        wandb_run = _start_tracking(spec, resolved, location, work)
        if wandb_run is not None:
            callbacks.append(WandbLogger(wandb_run))
    if spec.train.early_stopping_patience:
        callbacks.append(
            EarlyStoppingCallback(
                spec.train.early_stopping_patience, spec.train.early_stopping_threshold
            )
        )
    callbacks.append(SaveOncePerStep())  # after every callback that can ask for a save

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
    exact.trainer = trainer
    if resume is not None and main:
        emit("resume", step=resumed_step)
    try:
        train_output = trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
        if stop.requested:
            return _stop(spec, location, run_record, sync, stop, trainer.state.global_step)
        if sync is not None:
            sync.uploader.drain()
            sync.publish()
            sync.uploader.check()
    finally:
        if uploader is not None and not stop.requested:
            uploader.close()

    results: dict[str, Any] = {
        "train": {k: v for k, v in train_output.metrics.items() if isinstance(v, (int, float))}
    }
    if resumed_step is not None and "train_loss" in results["train"]:
        # The Trainer divides by this attempt's steps; the sum it divides is the whole run's.
        results["train"]["train_loss"] = trainer._total_loss_scalar / max(
            trainer.state.global_step, 1
        )
        for row in reversed(trainer.state.log_history):
            if "train_loss" in row:
                row["train_loss"] = results["train"]["train_loss"]
                break
    artifacts: dict[str, Any] = {}
    for split in ("eval", "test"):
        raw = splits.present().get(split)
        if raw is None:
            continue
        output = trainer.predict(task.tokenized[split], metric_key_prefix=split)
        predicted = (
            output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        )
        rows, more = task.predictions(raw, own_rows(predicted, len(raw)), trainer.model)
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
            save_model=lambda final, pool: _save_model(
                trainer.model, spec, tokenizer, location, final, pool
            ),
            history=list(trainer.state.log_history),
            step=trainer.state.global_step,
            keep_optimizer_state=spec.train.keep_optimizer_state,
        )
        with _transfers(storage.upload_concurrency) as pool:
            _finish(location, work, run_record, finished, pool=pool)
        _close(location, work, wandb_run, results)
    return "completed"


@contextmanager
def _transfers(concurrency: int) -> Iterator[ThreadPoolExecutor]:
    """Threads for parallel transfers of whole folders (final/, a checkpoint to resume)."""
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="kubetune-transfer")
    try:
        yield pool
    finally:
        pool.shutdown()


def _stop(
    spec: specmod.JobSpec,
    location: RunLocation,
    run_record: record.RecordWriter,
    sync: CheckpointSync | None,
    stop: GracefulStop,
    step: int,
) -> Outcome:
    """After SIGTERM/SIGINT: finish storing the checkpoint just saved, within the grace period
    the pod has before SIGKILL (``KUBETUNE_STOP_GRACE_SECONDS``, set by the chart), then
    record the interruption. The exit code (130) tells Kubernetes to retry the pod."""
    if not run_record.main:
        # Rank 0 stores the checkpoint and records the stop; wait_for_rank0 keeps this rank
        # until it has. No store I/O here: a store that blinks now would fail this rank, and
        # torchrun would restart the gang while rank 0 is still uploading.
        return "interrupted"
    grace = float(
        os.environ.get("KUBETUNE_STOP_GRACE_SECONDS")
        or spec.resources.termination_grace_seconds - 10
    )
    uploader = sync.uploader if sync is not None else None
    if sync is not None and uploader is not None:
        left = max(0.0, (stop.at or time.monotonic()) + grace - time.monotonic())
        if not uploader.drain(timeout=left):
            print(
                f"kubetune: the checkpoint at step {step} was not stored within the {grace:.0f} s "
                "grace period; the next attempt resumes from the one before it",
                file=sys.stderr,
                flush=True,
            )
        elif uploader.error is not None:
            print(f"kubetune: {uploader.error}", file=sys.stderr, flush=True)
        sync.publish()
    stored = location.checkpoints()
    run_record.write(
        "interrupted", stopped=record.now(), step=step, stored_step=stored[-1] if stored else None
    )
    emit("interrupted", step=step, url=location.url)
    return "interrupted"


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
    location: RunLocation,
    work: Path,
    run_record: record.RecordWriter,
    finished: Finished,
    pool: ThreadPoolExecutor | None,
) -> None:
    """final/ (when there is a model), metrics, history, predictions, then run.json: the run
    is done. Then what only a resume needs goes, since a completed run is never resumed
    (:func:`run` returns at once): tombstones of pruned checkpoints, and unless the
    spec keeps it, the checkpoints' optimizer state, whose size run.json records."""
    if finished.save_model is not None and pool is not None:
        finished.save_model(work / "final", pool)
    _save_outputs(location, finished.results, finished.artifacts)
    if finished.history is not None:
        location.store.write_json(location.key(HISTORY), finished.history)
    failpoint("final", finished.step)
    run_record.write(
        "completed",
        labels=finished.labels,
        parameters=finished.parameters,
        finished=record.now(),
        resumed_from_step=finished.resumed_step,
        metrics=finished.results,
        **finished.extra,
    )
    checkpoints.drop_tombstones(location)
    if not finished.keep_optimizer_state:
        _remove_optimizer_state(location, run_record)


def _remove_optimizer_state(location: RunLocation, run_record: record.RecordWriter) -> None:
    """Trim the completed run's checkpoints and record the bytes freed. The run is complete
    whatever happens here: a store that fails now leaves the state in place, with a warning."""
    try:
        trimmed = checkpoints.trim_resume_state(location)
        if trimmed.steps:
            run_record.write("completed", **{checkpoints.STATE_REMOVED: trimmed.record()})
    except StoreError as exc:
        print(
            f"kubetune: the run is complete, but its checkpoints keep their optimizer state: {exc}",
            file=sys.stderr,
            flush=True,
        )


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
        raise ConfigError(f"lora.target_modules: {exc}") from exc


def _resume_point(
    location: RunLocation,
    local: Path,
    pool: ThreadPoolExecutor,
    run_record: record.RecordWriter,
    state: Any,
) -> tuple[Path, int] | None:
    """The newest checkpoint in the store that matches its manifest, downloaded to ``local``:
    (its folder, its step), or None to start afresh.

    Scratch space left by an earlier attempt is never trusted. One process per machine
    downloads while the others wait; only the main process deletes rejected checkpoints.
    """
    rejected: list[dict[str, Any]] = []

    def reject(step: int, reason: str) -> None:
        rejected.append({"step": step, "reason": reason})
        emit("checkpoint_rejected", step=step, reason=reason)
        print(
            f"kubetune: checkpoint step-{step:06d} rejected: {reason}; trying the one before it",
            file=sys.stderr,
            flush=True,
        )

    found: tuple[Path, int] | None = None
    local_main = state.is_local_main_process and os.environ.get("LOCAL_RANK", "0") == "0"
    if local_main:
        shutil.rmtree(local, ignore_errors=True)
        found = checkpoints.latest_valid(
            location, local, pool, reject if run_record.main else lambda _s, _r: None
        )
    state.wait_for_everyone()
    if not local_main:
        steps = sorted(int(p.name.split("-")[1]) for p in local.glob("checkpoint-*"))
        found = (local / f"checkpoint-{steps[-1]}", steps[-1]) if steps else None
    if rejected:
        run_record.data.setdefault("rejected_checkpoints", []).extend(rejected)
    return found


def _save_model(
    model: Any,
    spec: specmod.JobSpec,
    tokenizer: Any,
    location: RunLocation,
    final: Path,
    pool: ThreadPoolExecutor,
) -> None:
    """final/: the trained model and tokenizer. With LoRA the adapter goes to adapter/, and
    final/ holds the merged plain model (lora.merge) or the adapter alone."""
    if spec.lora is not None:
        adapter = final.parent / "adapter"
        model.save_pretrained(str(adapter))
        checkpoints.upload_tree(location.store, adapter, location.key("adapter"), pool)
        if spec.lora.merge:
            model = model.merge_and_unload()
        else:
            # The adapter alone; its config.json keeps the task head's shape and labels, which
            # the base checkpoint does not know.
            model.get_base_model().config.save_pretrained(str(final))
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    location.store.delete_prefix(location.key("final"))
    checkpoints.upload_tree(location.store, final, location.key("final"), pool)


def _save_outputs(
    location: RunLocation, results: dict[str, Any], artifacts: dict[str, Any]
) -> None:
    """metrics.json, predictions per split and each split's extra artifacts."""
    location.store.write_json(location.key(METRICS), results)
    for split, (rows, extra) in artifacts.items():
        name = "predictions.jsonl" if split == "eval" else f"{split}_predictions.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        location.store.write_text(location.key(name), text)
        for stem, data in extra.items():
            suffix = "" if split == "eval" else f"_{split}"
            location.store.write_json(location.key(f"{stem}{suffix}.json"), data)
