"""Trainer callbacks: progress events, checkpoint sync to the store, graceful stop, W&B."""

from __future__ import annotations

import json
import math
import queue
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kubetune import events
from kubetune.events import emit
from kubetune.faults import failpoint
from kubetune.search import rungs
from kubetune.store import RunLocation
from kubetune.store.checkpoints import Stored, Uploader
from kubetune.train.trainer_internals import (
    RunningLoss,
    checkpoint_dir,
    restore_running_loss,
    running_loss,
)

#: Written into each checkpoint by :class:`CheckpointSync`.
CARRY_FILE = "kubetune.json"


def peak_memory() -> dict[str, int]:
    """Peak memory so far, in bytes: this process's resident set (Linux reports kilobytes)
    and, on a GPU, what torch has allocated on it. Read at each step's end, so the last
    step's figures are training's peak, before evaluation and saving add their own."""
    import torch

    peaks = {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        peaks["peak_gpu"] = int(torch.cuda.max_memory_allocated())
    return peaks


class Progress(TrainerCallback):
    """Step, loss, latest eval metric and the numbers an ETA needs."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.started = time.monotonic()
        self.loss: float | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.is_world_process_zero:
            self.started = time.monotonic()
            emit(events.TrainBegin(state.global_step, state.max_steps, **peak_memory()))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if state.is_world_process_zero and logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.is_world_process_zero:
            emit(
                events.Step(
                    step=state.global_step,
                    max_steps=state.max_steps,
                    loss=self.loss,
                    elapsed=round(time.monotonic() - self.started, 3),
                    **peak_memory(),
                )
            )

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if state.is_world_process_zero and metrics:
            value = metrics.get(f"eval_{self.metric}")
            emit(events.Eval(state.global_step, self.metric, value))


class DerivedMetrics(TrainerCallback):
    """Add metrics computed from the Trainer's own (perplexity from loss) to each evaluation,
    before best-model tracking and early stopping read them."""

    def __init__(self, derive: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.derive = derive

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if metrics is not None:
            plain = {k.removeprefix("eval_"): v for k, v in metrics.items()}
            metrics.update({f"eval_{k}": v for k, v in self.derive(plain).items()})


class ResumeExactly(TrainerCallback):
    """What the Trainer's own checkpoints miss for a resumed run to equal an unbroken one.

    - **The running loss.** The Trainer keeps the sum of logged losses and the part not yet
      logged in private attributes that a checkpoint does not hold; a resumed run would log
      a wrong first window and report the mean of its own steps as ``train_loss``. Each
      checkpoint gets them in ``kubetune.json``, and training puts them back on resume
      (through :mod:`kubetune.train.trainer_internals`, like every use of those attributes).
    - **The evaluation at an epoch's end.** A step-based save on the last step of an epoch
      runs *before* the epoch's evaluation, so a run resumed from it never makes that
      evaluation: its metrics are missing from the history (and from best-model tracking),
      and the random numbers the evaluation draws are not drawn, so dropout differs from
      then on. Such a save is moved after the evaluation.
    """

    def __init__(self, carried: dict[str, Any] | None = None) -> None:
        self.trainer: Any = None
        self.carried = carried or {}
        self._deferred = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.carried and self.trainer is not None:
            restore_running_loss(self.trainer, RunningLoss.from_json(self.carried))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        epoch_ends = state.epoch is not None and float(state.epoch).is_integer()
        if control.should_save and epoch_ends and args.eval_strategy == "epoch":
            control.should_save = False
            self._deferred = True

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._deferred:
            control.should_save = True
            self._deferred = False

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if args.world_size > 1:
            # Each rank writes its own RNG state into the checkpoint: the upload (which runs
            # after this callback, on the main process) waits until all have. Every rank has
            # this callback, so every rank meets here.
            from accelerate import PartialState

            PartialState().wait_for_everyone()
        local = checkpoint_dir(str(args.output_dir), state.global_step)
        if state.is_world_process_zero and local.is_dir() and self.trainer is not None:
            carry = {"step": state.global_step, **running_loss(self.trainer).to_json()}
            (local / CARRY_FILE).write_text(json.dumps(carry), encoding="utf-8")


class CheckpointSync(TrainerCallback):
    """Hand every checkpoint the Trainer saves to the background uploader
    (:class:`kubetune.store.checkpoints.Uploader`), and stop training if an upload failed for good.
    """

    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader
        self._stored: queue.SimpleQueue[Stored] = queue.SimpleQueue()
        uploader.on_stored = self._stored.put

    def publish(self) -> None:
        """Emit a ``checkpoint`` event for each checkpoint stored since the last call."""
        while not self._stored.empty():
            done = self._stored.get()
            emit(
                events.Checkpoint(
                    step=done.step,
                    url=self.uploader.location.url,
                    bytes=done.bytes,
                    seconds=done.seconds,
                    pruned=list(done.pruned),
                )
            )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.is_world_process_zero:
            failpoint("step", state.global_step)
            self.publish()
            self.uploader.check()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        local = checkpoint_dir(str(args.output_dir), state.global_step)
        if not local.is_dir():
            return
        best = state.best_model_checkpoint
        protect = {int(best.rsplit("-", 1)[-1])} if best else set()
        step = state.global_step
        # Training goes on after this save only if it is not stopping: then the checkpoint
        # before must be stored first (the durability promise of kubetune.store.checkpoints). A
        # stopping trainer drains the uploads itself, within the grace period on a stop.
        self.uploader.submit(
            local,
            step,
            protect,
            wait=not control.should_training_stop,
            on_wait=lambda unstored: emit(events.CheckpointWait(step, unstored)),
        )


class SaveOncePerStep(TrainerCallback):
    """At most one checkpoint per step; registered after every callback that asks to save.

    Two reasons to save can meet at one step: a stop on the last step of an epoch, with
    checkpoints saved by epoch, saves at the step's end and again at the epoch's end. The
    second save rewrites the first one's files in place while they upload (the upload's
    snapshot hard-links them), so the stored checkpoint no longer matches its manifest and
    the next start cannot resume from it. The first save already holds everything.
    """

    def __init__(self) -> None:
        self.saved: int | None = None

    def _once(self, state: TrainerState, control: TrainerControl) -> None:
        if control.should_save and state.global_step == self.saved:
            control.should_save = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._once(state, control)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._once(state, control)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.saved = state.global_step


class GracefulStop(TrainerCallback):
    """On SIGINT/SIGTERM: finish the step, save a checkpoint, stop. A second signal aborts.

    Kubernetes sends SIGTERM before killing a preempted pod, and Ctrl-C sends SIGINT; either
    way the run leaves a checkpoint in the store and resumes from it when started again.
    """

    def __init__(self) -> None:
        self.requested = False
        #: This process got a signal (a second one aborts); ``requested`` may also come from
        #: another rank's signal.
        self.signalled = False
        #: time.monotonic() of the first signal: the grace period counts from it.
        self.at: float | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signalled:
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signalled = True
        self.requested = True
        self.at = self.at if self.at is not None else time.monotonic()
        print(
            f"kubetune: got {signal.Signals(signum).name}; saving a checkpoint, then stopping",
            file=sys.stderr,
            flush=True,
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        failpoint("signal", state.global_step)
        stop = self._agree(args.device) if args.world_size > 1 else self.requested
        if stop:
            control.should_save = True
            control.should_training_stop = True

    def _agree(self, device: Any) -> bool:
        """Every rank stops after the same step, at the first signal any rank got.

        A signal reaches some ranks only (a drained node's pod; a supervisor that signals
        its own processes): a rank that stopped alone would wait in the checkpoint's
        barrier while the others wait in the next step's all-reduce. One all-reduce of a
        scalar per step (the wall-clock time of the earliest signal) keeps them together,
        and the grace period counts from that signal on every rank.

        The decision is the exchanged value alone, never this rank's flag: Python runs a
        handler when the blocking all-reduce returns, so a signal that arrived during it is
        seen here after the exchange; it counts at the next step, on every rank alike.
        """
        import torch
        import torch.distributed as dist

        at = self.at
        mine = math.inf if at is None else time.time() - (time.monotonic() - at)
        earliest = torch.tensor([mine], dtype=torch.float64, device=device)
        dist.all_reduce(earliest, op=dist.ReduceOp.MIN)
        first = float(earliest.item())
        if not math.isfinite(first):
            return False
        self.requested = True
        agreed = time.monotonic() - max(0.0, time.time() - first)
        self.at = agreed if self.at is None else min(self.at, agreed)
        return True


class WandbLogger(TrainerCallback):
    """Send the Trainer's logs to a W&B run opened by :mod:`kubetune.train.tracking`."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if state.is_world_process_zero and logs:
            numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            self.run.log(
                {**numbers, "train/global_step": state.global_step}, step=state.global_step
            )


class Rungs(TrainerCallback):
    """A trial of a sweep with a pruner (:mod:`kubetune.search.rungs`): each evaluation is
    written to the store as the next rung, and the trial waits for the driver's decision.
    On "stop" it saves a checkpoint and ends training; :attr:`pruned` says where.

    Only the main process talks to the store; with more than one process the decision is
    shared by an all-reduce, so every rank stops after the same step.
    """

    def __init__(self, location: RunLocation, settings: rungs.Settings, *, main: bool) -> None:
        self.location = location
        self.settings = settings
        self.main = main
        #: Where the pruner stopped this trial: {rung, step, value}; None while it goes on.
        self.pruned: dict[str, Any] | None = None

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        stop = False
        if state.max_steps and state.global_step >= state.max_steps:
            # The last evaluation: stopping here would save nothing and lose the finished
            # model. The trial completes, and the driver tells the study its final value.
            return
        if self.main and metrics:
            # The Trainer logs an evaluation before it calls back, so the history counts it;
            # a resumed run's history holds the evaluations of earlier attempts too.
            number = sum(1 for row in state.log_history if "eval_loss" in row) or 1
            value = metrics.get(f"eval_{self.settings.metric.removeprefix('eval_')}")
            value = float(value) if isinstance(value, int | float) else None
            rungs.write_rung(self.location, rungs.Rung(number, state.global_step, value))
            decided = rungs.await_decision(self.location, number, self.settings.wait)
            if decided is None:
                print(
                    f"kubetune: no decision from the sweep driver on rung {number} within "
                    f"{self.settings.wait:.0f} s; training on",
                    file=sys.stderr,
                    flush=True,
                )
            stop = bool(decided)
            if stop:
                self.pruned = {"rung": number, "step": state.global_step, "value": value}
        if args.world_size > 1:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([1.0 if stop else 0.0], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
            if stop and self.pruned is None:
                self.pruned = {"rung": 0, "step": state.global_step, "value": None}
        if stop:
            control.should_save = True
            control.should_training_stop = True
