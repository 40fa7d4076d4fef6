"""One run, read top to bottom like a recipe.

:func:`run` finds the run a spec names and its place in the store; a finished run is not
retrained. Then, over one :class:`~kubetune.train.context.RunContext`:

1. :func:`prepare`: seed, the run's inputs fetched and checked, data splits loaded, the
   pre-flight checks on the folders this attempt loads, spec.yaml and run.json ("running").
2. The task's recipe. Fine-tuning (:class:`FineTune`):

   - ``setup``: tokenizer, the task family's model and data (``build``), LoRA, the
     TrainingArguments, the newest valid checkpoint in the store to resume from, the callbacks
     (progress, graceful stop, exact resume, checkpoint sync, W&B), the Trainer (a family
     with its own library's Trainer, like embedding's sentence-transformers, builds it and
     adds LoRA, evaluates and saves its own way: :class:`~kubetune.train.task.OwnTrainer`);
   - ``train``: ``Trainer.train``, the checkpoints uploaded as it goes; a SIGTERM stops it
     after a stored checkpoint (``stop``), and the run resumes from it when started again;
   - ``evaluate``: predictions and metrics for the eval and test splits;
   - ``save``: final/, metrics, predictions, history, run.json ("completed")
     (:mod:`~kubetune.train.outputs`).

   A baseline (:func:`baseline`: zero/few-shot, or a classical method: TF-IDF + logistic
   regression, a CRF, the lead sentences) scores the splits and saves the same way.

Everything a run produces lands in the store under ``<sweep>/<run-id>/``; see
:mod:`kubetune.store`. Task families build on shared modules (``pretrained``, ``precision``,
``lora``, ``task``), never on this one; the Trainer's private parts are reached only through
:mod:`~kubetune.train.trainer_internals`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kubetune import events, inference, preflight, sweep
from kubetune import spec as specmod
from kubetune.errors import ConfigError, KubetuneError
from kubetune.events import emit
from kubetune.kube import names
from kubetune.search import rungs
from kubetune.store import (
    DEFAULT_STORE,
    RunLocation,
    StoreError,
    checkpoints,
    endpoint_here,
    open_store,
)
from kubetune.store.record import HISTORY, RECORD, RunRecord, load_record
from kubetune.train import outputs, record, tracking
from kubetune.train.callbacks import (
    CARRY_FILE,
    CheckpointSync,
    DerivedMetrics,
    GracefulStop,
    Progress,
    ResumeExactly,
    Rungs,
    SaveOncePerStep,
    WandbLogger,
)
from kubetune.train.context import RunContext
from kubetune.train.data import Splits, load_splits
from kubetune.train.inputs import Fetcher, recorded_inputs
from kubetune.train.lora import count_parameters, with_lora
from kubetune.train.pretrained import resolve_model_path
from kubetune.train.task import FINAL_METRICS, Task

Outcome = Literal["completed", "already-completed", "interrupted", "pruned"]


def run(spec_path: str) -> Outcome:
    """Run the spec at ``spec_path`` (a resolved spec, or a spec of one run)."""
    resolved = _the_run(spec_path)
    spec = resolved.spec
    uri = os.environ.get(names.STORE_ENV) or (spec.storage.uri if spec.storage else DEFAULT_STORE)
    storage = spec.storage or specmod.StorageSpec(uri=uri)
    store = open_store(
        uri,
        endpoint=endpoint_here(storage.endpoint),
        region=storage.region,
        concurrency=storage.upload_concurrency,
    )
    location = RunLocation(
        store, os.environ.get(names.SWEEP_ENV) or resolved.sweep, resolved.run_id
    )
    previous: RunRecord | None = None
    if location.store.exists(location.key(RECORD)):
        previous = load_record(location)
        if previous.status == "completed":
            _refuse_changed_data(resolved, location, previous)
            emit(events.Done(already=True, url=location.url, metrics=previous.metrics))
            print(
                f"kubetune: {resolved.run_id} already finished at {location.url}; nothing to do",
                flush=True,
            )
            return "already-completed"
        if previous.status == "pruned":
            at = previous.pruned_at or {}
            emit(
                events.Pruned(
                    previous.step or 0, int(at.get("rung") or 0), location.url, at.get("value")
                )
            )
            print(
                f"kubetune: {resolved.run_id} was pruned by its sweep at {location.url}; "
                "nothing to do",
                flush=True,
            )
            return "pruned"

    from accelerate import PartialState

    state = PartialState()
    # torchrun sets RANK without accelerate knowing it; either way rank 0 alone writes.
    main = state.is_main_process and os.environ.get("RANK", "0") == "0"
    gpus = spec.resources.gpus * spec.resources.nodes if _has_gpu() else 0
    run_record = record.RecordWriter(location, previous, main=main, gpus=gpus)
    try:
        ctx = prepare(resolved, location, storage, run_record, state)
        recipe = baseline if ctx.spec.task in specmod.BASELINE_TASKS else fine_tune
        outcome = recipe(ctx)
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


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _the_run(spec_path: str) -> sweep.ResolvedRun:
    """The one run the trainer runs: the spec's only one, or ``$KUBETUNE_RUN_ID`` of it."""
    spec = specmod.load(spec_path)
    runs = sweep.expand(spec, spec_path)
    wanted = os.environ.get(names.RUN_ID_ENV)
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
    return runs[0]


def _refuse_changed_data(
    resolved: sweep.ResolvedRun, location: RunLocation, previous: RunRecord
) -> None:
    """A finished run whose local data changed since is not "already finished": say so."""
    prints = preflight.local_prints(resolved.spec)
    changed = preflight.data_changes(previous, prints) if prints else []
    if changed:
        raise ConfigError(preflight.changed_data_message(resolved, location.url, changed))


# --- 1. prepare: seed, inputs, data, pre-flight, run.json ---------------------------------


def prepare(
    resolved: sweep.ResolvedRun,
    location: RunLocation,
    storage: specmod.StorageSpec,
    run_record: record.RecordWriter,
    state: Any,
) -> RunContext:
    """Seed, fetch and check the run's inputs, load its splits, check the model folders, and
    record the start: the context every later step reads."""
    import transformers

    spec = resolved.spec
    transformers.set_seed(spec.train.seed, deterministic=spec.train.deterministic)
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    work = (
        Path(os.environ.get(names.WORKDIR_ENV) or Path(tempfile.gettempdir()) / "kubetune")
        / resolved.run_id
    )
    work.mkdir(parents=True, exist_ok=True)
    fetch = Fetcher(location.store, storage, work / "inputs")
    splits = load_splits(spec, work / "data", fetch)
    # classical reads no model: nothing to fetch or check.
    model_path = "" if spec.task == "classical" else resolve_model_path(spec.model.name, fetch)
    local_spec = spec
    if spec.model.decoder is not None and spec.model.decoder.startswith("s3://"):
        # The task family reads model.decoder as a path: give it the fetched, checked copy.
        decoder = resolve_model_path(spec.model.decoder, fetch, "model.decoder")
        local_spec = spec.model_copy(
            update={"model": spec.model.model_copy(update={"decoder": decoder})}
        )
    # The pre-flight checks of `kubetune run`, on the folders this attempt loads: a Job with
    # a mistake fails at once (exit 2) instead of in a tensor-size error after loading.
    preflight.check_model(  # a no-op for a task without a model
        local_spec.model_copy(
            update={"model": local_spec.model.model_copy(update={"name": model_path})}
        ),
        probe_hub=False,
    )
    ctx = RunContext(
        spec=spec,
        local_spec=local_spec,
        resolved=resolved,
        location=location,
        storage=storage,
        record=run_record,
        state=state,
        work=work,
        splits=splits,
        model_path=model_path,
    )
    if ctx.main:
        location.store.write_text(location.key("spec.yaml"), specmod.dump(spec))
    run_record.write("running", **_pinned(ctx))
    return ctx


def _pinned(ctx: RunContext) -> dict[str, Any]:
    """What run.json pins from the start: identity, inputs, code, environment."""
    spec, resolved, splits = ctx.spec, ctx.resolved, ctx.splits
    return {
        "run_id": resolved.run_id,
        "sweep": ctx.location.sweep,
        "spec_hash": resolved.spec_hash,
        "params": record.sweep_params(resolved.params),
        "seed": spec.train.seed,
        "task": spec.task,
        "model": (
            record.model_identity(spec.model.name, ctx.model_path, spec.model.revision)
            if ctx.model_path
            else None
        ),
        # What each staged input was on the submitter's machine: source, uri, sha256.
        "inputs": recorded_inputs(),
        "data": {
            "fingerprint": splits.fingerprint,
            "fingerprints": splits.fingerprints,
            "sources": splits.sources,
            "rows": {k: len(v) for k, v in splits.present().items()}
            | ({"corpus": len(splits.corpus)} if splits.corpus is not None else {}),
        },
        "packages": record.package_versions(),
        "image": os.environ.get(names.IMAGE_ENV),
        "render": {
            # The chart's pod template revision (kubetune-job/<n>), not its version: the
            # version must stay off the pod template, which a Job never lets change.
            "pod_template": os.environ.get(names.POD_TEMPLATE_ENV),
            "namespace": os.environ.get(names.RENDER_NAMESPACE_ENV),
        },
        "git": record.git_state(Path.cwd()),
        "hardware": record.hardware(),
    }


# --- 2. the recipes -------------------------------------------------------------------------


def baseline(ctx: RunContext) -> Outcome:
    """A baseline (zero/few-shot, or a classical method: TF-IDF + logistic regression, a
    CRF, the lead sentences): score the splits with no transformer trained, then save as a
    fine-tuned run."""
    save_model: Callable[[Path, ThreadPoolExecutor], None] | None = None
    if ctx.spec.task == "classical":
        from kubetune.train import classical

        scored, save = classical.fit_and_score(ctx.local_spec, ctx.splits, ctx.work / "classical")
        save_model = partial(classical.store_final, save, ctx.location)
    else:
        from kubetune.train import zeroshot

        scored = zeroshot.score(ctx.local_spec, ctx.splits, ctx.model_path)
    if ctx.main:
        finished = outputs.Finished(
            results=scored.results,
            artifacts=scored.artifacts,
            labels=scored.labels,
            parameters={"trainable": 0, "total": scored.parameters},
            extra={ctx.spec.task.replace("-", "_"): scored.details},
            save_model=save_model,
        )
        wandb_run = outputs.start_tracking(ctx)
        with ctx.transfers() as pool:  # final/ of a classical run; a zero-shot one has none
            outputs.finish(ctx, finished, pool=pool)
        outputs.close(ctx, wandb_run, finished.results)
    return "completed"


def fine_tune(ctx: RunContext) -> Outcome:
    """The fine-tuning recipe: setup ▸ train ▸ evaluate ▸ save (or stop, on a signal)."""
    recipe = FineTune(ctx)
    recipe.setup()
    if not recipe.train():
        return recipe.stop()
    if recipe.rungs is not None and recipe.rungs.pruned is not None:
        return recipe.prune(recipe.rungs.pruned)
    recipe.save(recipe.evaluate())
    return "completed"


def build_task(ctx: RunContext, tokenizer: Any) -> Task:
    """The task family's model, tokenized splits, collator and metrics (each family module
    has ``build(spec, splits, tokenizer, model_path)``). A family is imported only when it
    runs: each brings its own dependencies."""
    build: Callable[[specmod.JobSpec, Splits, Any, str], Task]
    if ctx.spec.task == "classification":
        from kubetune.train import classification

        build = classification.build
    elif ctx.spec.task == "ner":
        from kubetune.train import ner

        build = ner.build
    elif ctx.spec.task == "question-answering":
        from kubetune.train import question_answering

        build = question_answering.build
    elif ctx.spec.task == "seq2seq":
        from kubetune.train import seq2seq

        build = seq2seq.build
    elif ctx.spec.task == "causal-lm":
        from kubetune.train import causal_lm

        build = causal_lm.build
    elif ctx.spec.task == "embedding":
        from kubetune.train import embedding

        build = embedding.build
    else:
        raise ConfigError(f"task: {ctx.spec.task} is not a fine-tuning task")
    return build(ctx.local_spec, ctx.splits, tokenizer, ctx.model_path)


class FineTune:
    """Fine-tuning over one run context: :meth:`setup`, :meth:`train`, :meth:`evaluate`,
    :meth:`save`; :meth:`stop` instead of the last two after a signal."""

    tokenizer: Any
    task: Task
    #: The model to train: the family's, wrapped with LoRA when the spec asks.
    model: Any
    parameters: dict[str, int]
    #: run.json fields of this recipe's own (LoRA's target modules).
    extra: dict[str, Any]
    resumed_step: int | None
    stopper: GracefulStop
    #: A trial of a sweep with a pruner: reports its evaluations, learns when to stop.
    rungs: Rungs | None
    sync: CheckpointSync | None
    wandb_run: Any
    trainer: Any
    #: The checkpoint folder training resumes from (None: from the start).
    resume_from: str | None
    #: What training reports: ``train_loss`` (the whole run's), ``train_runtime``, …
    train_metrics: dict[str, Any]

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    # --- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Tokenizer, model and data, the TrainingArguments, the checkpoint to resume from,
        the callbacks, the Trainer."""
        from kubetune.train.trainer import (
            OrderedEvalSeq2SeqTrainer,
            OrderedEvalTrainer,
            training_args,
        )

        ctx, spec = self.ctx, self.ctx.spec
        self._load_model()
        own = self.task.own
        metric = spec.train.metric_for_best_model or self.task.default_metric
        args = training_args(
            spec,
            ctx.work / "checkpoints",
            metric,
            generate=self.task.generate,
            greater_is_better=self.task.greater_is_better,
            kind=own.arguments_class if own is not None else None,
            extra=own.arguments if own is not None else None,
        )
        resume = self._resume_point()
        self.resumed_step = resume[1] if resume else None
        carried = checkpoints.read_json_file(resume[0] / CARRY_FILE) if resume else {}
        exact = ResumeExactly(carried)
        callbacks = self._callbacks(metric, exact)
        if own is not None:
            self.trainer = own.trainer(self.model, args, callbacks)
        else:
            trainer_class = OrderedEvalSeq2SeqTrainer if self.task.generate else OrderedEvalTrainer
            self.trainer = trainer_class(
                model=self.model,
                args=args,
                data_collator=self.task.collator,
                train_dataset=self.task.tokenized.get("train"),
                eval_dataset=self.task.tokenized.get("eval"),
                processing_class=self.tokenizer,
                compute_metrics=self.task.compute_metrics,
                preprocess_logits_for_metrics=self.task.preprocess_logits,
                callbacks=callbacks,
            )
        exact.trainer = self.trainer
        self.resume_from = str(resume[0]) if resume else None

    def _load_model(self) -> None:
        """The tokenizer, the family's task (model, tokenized splits, metrics), LoRA."""
        from transformers import AutoTokenizer

        ctx, spec = self.ctx, self.ctx.spec
        self.tokenizer = AutoTokenizer.from_pretrained(
            ctx.model_path,
            revision=spec.model.revision,
            trust_remote_code=spec.model.trust_remote_code,
        )
        self.task = build_task(ctx, self.tokenizer)
        self.model = self.task.model
        self.extra = {}
        if spec.lora is not None and self.task.own is not None:
            self.extra["lora"] = {"target_modules": sorted(self.task.own.add_lora(self.model))}
        elif spec.lora is not None:
            self.model = with_lora(self.model, spec, self.task.peft_task)
            targets = self.model.peft_config["default"].target_modules
            self.extra["lora"] = {"target_modules": sorted(targets)}
        trainable, total = count_parameters(self.model)
        self.parameters = {"trainable": trainable, "total": total}
        if ctx.main:
            emit(events.Model(trainable, total, len(self.task.labels)))

    def _resume_point(self) -> tuple[Path, int] | None:
        """The newest checkpoint in the store that matches its manifest, downloaded: (its
        folder, its step), or None to start afresh.

        Scratch space left by an earlier attempt is never trusted. One process per machine
        downloads while the others wait; only the main process deletes rejected checkpoints.
        """
        from kubetune.train.trainer_internals import checkpoint_dir, checkpoint_steps

        ctx = self.ctx
        local = ctx.work / "checkpoints"
        rejected: list[dict[str, Any]] = []

        def reject(step: int, reason: str) -> None:
            rejected.append({"step": step, "reason": reason})
            emit(events.CheckpointRejected(step, reason))
            print(
                f"kubetune: checkpoint step-{step:06d} rejected: {reason}; "
                "trying the one before it",
                file=sys.stderr,
                flush=True,
            )

        found: tuple[Path, int] | None = None
        local_main = ctx.state.is_local_main_process and os.environ.get("LOCAL_RANK", "0") == "0"
        if local_main:
            shutil.rmtree(local, ignore_errors=True)
            with ctx.transfers() as pool:
                found = checkpoints.latest_valid(
                    ctx.location, local, pool, reject if ctx.main else lambda _s, _r: None
                )
        ctx.state.wait_for_everyone()
        if not local_main:
            steps = checkpoint_steps(local)
            found = (checkpoint_dir(local, steps[-1]), steps[-1]) if steps else None
        if rejected:
            ctx.record.data.setdefault("rejected_checkpoints", []).extend(rejected)
        return found

    def _callbacks(self, metric: str, exact: ResumeExactly) -> list[Any]:
        """Progress events, graceful stop, exact resume; on the main process the checkpoint
        sync to the store and W&B; early stopping; at most one save per step, last."""
        from transformers import EarlyStoppingCallback

        ctx, train = self.ctx, self.ctx.spec.train
        self.stopper = GracefulStop()
        callbacks: list[Any] = [Progress(metric), self.stopper, exact]
        self.rungs = None
        rung_settings = os.environ.get(names.RUNGS_ENV)
        if rung_settings:
            self.rungs = Rungs(ctx.location, rungs.Settings.parse(rung_settings), main=ctx.main)
            callbacks.append(self.rungs)
        if self.task.derived_metrics is not None:
            callbacks.insert(0, DerivedMetrics(self.task.derived_metrics))
        self.sync = None
        self.wandb_run = None
        if ctx.main:
            uploader = checkpoints.Uploader(
                ctx.location,
                ctx.work / "staging",
                keep=train.save_total_limit,
                concurrency=ctx.storage.upload_concurrency,
            )
            self.sync = CheckpointSync(uploader)
            callbacks.append(self.sync)
            self.wandb_run = outputs.start_tracking(ctx)
            if self.wandb_run is not None:
                callbacks.append(WandbLogger(self.wandb_run))
        if train.early_stopping_patience:
            callbacks.append(
                EarlyStoppingCallback(train.early_stopping_patience, train.early_stopping_threshold)
            )
        callbacks.append(SaveOncePerStep())  # after every callback that can ask for a save
        return callbacks

    # --- train ------------------------------------------------------------------------------

    def train(self) -> bool:
        """Train to the end (True), or until a signal stopped training after a checkpoint
        (False). Every checkpoint is stored before training goes on past the next one."""
        from kubetune.train.trainer_internals import whole_run_train_loss

        uploader = self.sync.uploader if self.sync is not None else None
        if self.resumed_step is not None and self.ctx.main:
            emit(events.Resume(self.resumed_step))
        try:
            output = self.trainer.train(resume_from_checkpoint=self.resume_from)
            if self.stopper.requested:
                return False
            if self.sync is not None:
                self.sync.uploader.drain()
                self.sync.publish()
                self.sync.uploader.check()
        finally:
            if uploader is not None and not self.stopper.requested:
                uploader.close()

        self.train_metrics = {
            k: v for k, v in output.metrics.items() if isinstance(v, (int, float))
        }
        if self.resumed_step is not None and "train_loss" in self.train_metrics:
            # The Trainer divides by this attempt's steps; the sum it divides is the whole run's.
            self.train_metrics["train_loss"] = whole_run_train_loss(self.trainer)
            for row in reversed(self.trainer.state.log_history):
                if "train_loss" in row:
                    row["train_loss"] = self.train_metrics["train_loss"]
                    break
        return True

    def stop(self) -> Outcome:
        """After SIGTERM/SIGINT: finish storing the checkpoint just saved, within the grace
        period the pod has before SIGKILL (``KUBETUNE_STOP_GRACE_SECONDS``, set by the chart),
        then record the interruption. The exit code (130) tells Kubernetes to retry the pod."""
        ctx = self.ctx
        step = self.trainer.state.global_step
        if not ctx.main:
            # Rank 0 stores the checkpoint and records the stop; wait_for_rank0 keeps this rank
            # until it has. No store I/O here: a store that blinks now would fail this rank,
            # and torchrun would restart the gang while rank 0 is still uploading.
            return "interrupted"
        grace = float(
            os.environ.get(names.STOP_GRACE_ENV)
            or ctx.spec.resources.termination_grace_seconds - 10
        )
        if self.sync is not None:
            uploader = self.sync.uploader
            left = max(0.0, (self.stopper.at or time.monotonic()) + grace - time.monotonic())
            if not uploader.drain(timeout=left):
                print(
                    f"kubetune: the checkpoint at step {step} was not stored within the "
                    f"{grace:.0f} s grace period; the next attempt resumes from the one before it",
                    file=sys.stderr,
                    flush=True,
                )
            elif uploader.error is not None:
                print(f"kubetune: {uploader.error}", file=sys.stderr, flush=True)
            self.sync.publish()
        self._record_stop("interrupted", step)
        emit(events.Interrupted(step, ctx.location.url))
        return "interrupted"

    def _record_stop(
        self, status: Literal["interrupted", "pruned"], step: int, **fields: Any
    ) -> None:
        """run.json of a run that stopped before its end: when, at which step, and the newest
        checkpoint in the store (what the next attempt, or a look at it, starts from)."""
        stored = self.ctx.location.checkpoints()
        self.ctx.record.write(
            status,
            stopped=record.now(),
            step=step,
            stored_step=stored[-1] if stored else None,
            **fields,
        )

    def prune(self, at: dict[str, Any]) -> Outcome:
        """The sweep's pruner stopped this trial at a rung: its checkpoint is stored (the
        save at that evaluation), the record says ``pruned`` with the evaluations so far,
        and the process exits 0, so the Job succeeds and no retry is spent."""
        ctx = self.ctx
        step = self.trainer.state.global_step
        if not ctx.main:
            return "pruned"
        history = list(self.trainer.state.log_history)
        last_eval: dict[str, Any] = next(
            (row for row in reversed(history) if "eval_loss" in row), {}
        )
        metrics = {
            k.removeprefix("eval_"): v
            for k, v in last_eval.items()
            if k.startswith("eval_") and isinstance(v, int | float)
        }
        ctx.location.store.write_json(ctx.location.key(HISTORY), history)
        self._record_stop(
            "pruned", step, pruned_at=at, metrics={"eval": metrics} if metrics else {}
        )
        tracking.finish(self.wandb_run, {f"eval/{k}": v for k, v in metrics.items()})
        shutil.rmtree(ctx.work, ignore_errors=True)
        emit(events.Pruned(step, int(at["rung"]), ctx.location.url, at.get("value")))
        return "pruned"

    # --- evaluate ---------------------------------------------------------------------------

    def evaluate(self) -> Evaluated:
        """Metrics and prediction rows of the eval and test splits (every process predicts;
        the main one saves)."""
        evaluated = Evaluated(results={"train": self.train_metrics})
        for split in ("eval", "test"):
            raw = self.ctx.splits.present().get(split)
            if raw is None:
                continue
            if self.task.own is not None:
                metrics, rows, more = self.task.own.evaluate(self.trainer, split)
                evaluated.results[split] = metrics
                evaluated.artifacts[split] = (rows, more)
                continue
            assert self.task.predictions is not None
            output = self.trainer.predict(self.task.tokenized[split], metric_key_prefix=split)
            predicted = (
                output.predictions[0]
                if isinstance(output.predictions, tuple)
                else output.predictions
            )
            # One row per feature: an example of a family that reads long inputs in
            # windows (question answering, long documents) has several.
            features = len(self.task.tokenized[split])
            rows, more = self.task.predictions(
                raw, own_rows(predicted, features), self.trainer.model
            )
            metrics = {k.removeprefix(f"{split}_"): v for k, v in (output.metrics or {}).items()}
            if self.task.derived_metrics is not None:
                metrics.update(self.task.derived_metrics(metrics))
            metrics.update(more.pop(FINAL_METRICS, {}))
            evaluated.results[split] = metrics
            evaluated.artifacts[split] = (rows, more)
        return evaluated

    # --- save -------------------------------------------------------------------------------

    def save(self, evaluated: Evaluated) -> None:
        """final/, metrics, predictions, history, then run.json ("completed"); main only."""
        ctx = self.ctx
        if not ctx.main:
            return
        trainer, spec = self.trainer, ctx.spec
        decided = self.task.inference() if self.task.inference is not None else {}
        settings = inference.for_spec(spec, **decided)
        finished = outputs.Finished(
            results=evaluated.results,
            artifacts=evaluated.artifacts,
            labels=self.task.labels,
            parameters=self.parameters,
            extra=self.extra,
            resumed_step=self.resumed_step,
            save_model=lambda final, pool: outputs.save_model(
                trainer.model,
                spec,
                self.tokenizer,
                ctx.location,
                final,
                pool,
                write=self.task.own.save if self.task.own is not None else None,
                settings=settings,
            ),
            history=list(trainer.state.log_history),
            step=trainer.state.global_step,
            keep_optimizer_state=spec.train.keep_optimizer_state,
        )
        with ctx.transfers() as pool:
            outputs.finish(ctx, finished, pool=pool)
        outputs.close(ctx, self.wandb_run, evaluated.results)


@dataclass
class Evaluated:
    """Metrics by split (``train`` too), and each evaluated split's prediction rows and
    extra artifacts."""

    results: dict[str, Any]
    artifacts: dict[str, Any] = field(default_factory=dict)


def own_rows(predicted: Any, rows: int) -> Any:
    """The predictions of a split's own ``rows``, in order.

    With more than one process, each process's last batch is filled up with rows from the
    start of the split, and what ``Trainer.predict`` gathers can keep those extra rows at the
    end (seen with generation under torchrun: 8 predictions for 4 rows on 2 processes).
    """
    return np.asarray(predicted)[:rows]


# --- the end of an attempt ------------------------------------------------------------------

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
