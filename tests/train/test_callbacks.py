"""The Trainer callbacks' decisions, on the Trainer's own state and control objects."""

from __future__ import annotations


def test_a_step_that_was_saved_is_not_saved_again_at_its_epochs_end(tmp_path: object) -> None:
    """A stop on the last step of an epoch saves at the step's end; saving by epoch would save
    the same step again at the epoch's end, rewriting the first save's files in place."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from kubetune.train.callbacks import SaveOncePerStep

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    once = SaveOncePerStep()
    state = TrainerState(global_step=10)
    control = TrainerControl(should_save=True)
    once.on_step_end(args, state, control)
    assert control.should_save, "the first save of a step goes ahead"
    once.on_save(args, state, control)
    control.should_save = True  # the epoch's end asks again
    once.on_epoch_end(args, state, control)
    assert not control.should_save
    state.global_step = 11
    control.should_save = True
    once.on_step_end(args, state, control)
    assert control.should_save, "the next step saves as usual"
