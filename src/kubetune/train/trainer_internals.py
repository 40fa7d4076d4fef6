"""Every use kubetune makes of the Hugging Face Trainer's private parts, in one place.

transformers promises nothing about names that begin with an underscore, and exact resume
(a resumed run equal bit for bit to an unbroken one) rests on a few of them. Nothing else in
kubetune touches them: callbacks and the recipe call the functions here, and
``tests/train/test_trainer_internals.py`` checks each name against the installed transformers,
so an upgrade that renames or removes one fails a fast test, not a crash-safety run. The
``train`` extra caps transformers at the major version those tests ran on.

What kubetune relies on:

- **The running loss** (:data:`RUNNING_LOSS`): ``_tr_loss``, the on-device sum of losses not
  yet logged; ``_total_loss_scalar``, the sum of the logged ones; ``_globalstep_last_logged``.
  ``_inner_training_loop`` sets them afresh on every ``train()`` call and a checkpoint does not
  hold them, so :class:`~kubetune.train.callbacks.ResumeExactly` carries them across a restart
  (:func:`running_loss`, :func:`restore_running_loss`) and the recipe reports the whole run's
  mean loss (:func:`whole_run_train_loss`).
- **Two overridden methods** (:data:`OVERRIDDEN`, :class:`TrainerHooks`): the evaluation
  sampler, kept sequential; and the optimizer's save, where a failpoint stands between the
  weights and the optimizer state.
- **A checkpoint folder's names**: ``checkpoint-<step>`` (:func:`checkpoint_dir`) and the files
  only resuming reads, which :data:`kubetune.store.checkpoints.RESUME_ONLY` names without
  importing transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.faults import failpoint

#: The Trainer's checkpoint folders are ``checkpoint-<step>`` (transformers'
#: ``PREFIX_CHECKPOINT_DIR``, which the test of this module compares). Spelled here so that
#: importing the adapter imports neither torch nor transformers.
PREFIX_CHECKPOINT_DIR = "checkpoint"

#: The Trainer's private attributes of the running loss (see the module's docstring).
RUNNING_LOSS = ("_tr_loss", "_total_loss_scalar", "_globalstep_last_logged")
#: The Trainer's private methods that :class:`TrainerHooks` overrides, with their parameters.
OVERRIDDEN = {
    "_get_eval_sampler": ("self", "eval_dataset"),
    "_save_optimizer_and_scheduler": ("self", "output_dir"),
}


@dataclass(frozen=True)
class RunningLoss:
    """The Trainer's running loss at a step, as ``kubetune.json`` in a checkpoint carries it."""

    #: Sum of the losses logged so far (``_total_loss_scalar``).
    total: float
    #: Sum of the losses since the last log (``_tr_loss``, a tensor on the device).
    unlogged: float
    #: The step of the last log (``_globalstep_last_logged``).
    last_logged: int

    def to_json(self) -> dict[str, Any]:
        return {
            "total_loss": self.total,
            "unlogged_loss": self.unlogged,
            "last_logged": self.last_logged,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunningLoss:
        return cls(
            total=float(data["total_loss"]),
            unlogged=float(data["unlogged_loss"]),
            last_logged=int(data["last_logged"]),
        )


def running_loss(trainer: Any) -> RunningLoss:
    """The running loss of a Trainer that is training (read at a save)."""
    return RunningLoss(
        total=float(trainer._total_loss_scalar),
        unlogged=float(trainer._tr_loss.item()),
        last_logged=int(trainer._globalstep_last_logged),
    )


def restore_running_loss(trainer: Any, loss: RunningLoss) -> None:
    """Put a checkpoint's running loss back, at ``on_train_begin`` of the resumed run (after
    the Trainer has zeroed it). ``_tr_loss`` is added to in place: the training loop holds the
    same tensor."""
    trainer._total_loss_scalar = loss.total
    trainer._tr_loss += loss.unlogged
    trainer._globalstep_last_logged = loss.last_logged


def whole_run_train_loss(trainer: Any) -> float:
    """The mean training loss over the whole run. After a resume the Trainer's own
    ``train_loss`` divides the whole run's sum (restored above) by this attempt's steps."""
    return float(trainer._total_loss_scalar) / max(int(trainer.state.global_step), 1)


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """The folder where the Trainer saves the checkpoint of ``step``."""
    return Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


def checkpoint_steps(output_dir: Path) -> list[int]:
    """The steps of the checkpoint folders in ``output_dir``, oldest first."""
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    return sorted(
        int(p.name.removeprefix(prefix))
        for p in output_dir.glob(f"{prefix}*")
        if p.name.removeprefix(prefix).isdigit()
    )


class TrainerHooks:
    """kubetune's overrides of the Trainer's private methods (mixed in before the Trainer).

    - Evaluation batches follow the dataset's order. transformers 5 groups evaluation batches
      by length whenever training does, and then ``predict`` returns rows shuffled.
      predictions.jsonl pairs every row with its prediction, so evaluation stays sequential:
      grouping pays off in training, not in a single pass.
    - A failpoint between a checkpoint's weights and its optimizer state, where a kill leaves
      half a checkpoint (the crash-safety tests stop there).
    """

    args: Any
    state: Any

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        if eval_dataset is None or self.args.world_size > 1:
            return None  # accelerate shards in order and gathers back in order
        from torch.utils.data import SequentialSampler

        return SequentialSampler(eval_dataset)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        failpoint("save", self.state.global_step)
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]
