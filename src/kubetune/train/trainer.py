"""The Hugging Face Trainers, with evaluation kept in dataset order."""

from __future__ import annotations

from typing import Any

from torch.utils.data import SequentialSampler
from transformers import Seq2SeqTrainer, Trainer

from kubetune.faults import failpoint


class _OrderedEval:
    """Evaluation batches follow the dataset's order.

    transformers 5 groups evaluation batches by length whenever training does, and then
    ``predict`` returns rows shuffled. predictions.jsonl pairs every row with its prediction,
    so evaluation stays sequential: grouping pays off in training, not in a single pass.
    """

    args: Any
    state: Any

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        if eval_dataset is None or self.args.world_size > 1:
            return None  # accelerate shards in order and gathers back in order
        return SequentialSampler(eval_dataset)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        # The weights are on disk, the optimizer not yet: a kill here leaves half a checkpoint.
        failpoint("save", self.state.global_step)
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]


class OrderedEvalTrainer(_OrderedEval, Trainer):
    """The Trainer for tasks scored from logits."""


class OrderedEvalSeq2SeqTrainer(_OrderedEval, Seq2SeqTrainer):
    """The Trainer for tasks scored from generated text."""
