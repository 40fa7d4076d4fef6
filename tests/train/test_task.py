"""What every task family shares: the padding of batches on a GPU."""

from __future__ import annotations

import pytest


def test_batches_are_padded_to_a_multiple_only_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kubetune.train import task

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert task.pad_multiple() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert task.pad_multiple() == task.GPU_PAD_MULTIPLE == 8


def test_causal_lm_collator_rounds_the_length_up_and_fills_as_padding() -> None:
    from kubetune.train.causal_lm import Collator

    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [5, 6, 7]},
        {"input_ids": [8] * 9, "attention_mask": [1] * 9, "labels": [8] * 9},
    ]
    plain = Collator(pad_token_id=0)(features)
    padded = Collator(pad_token_id=0, multiple=8)(features)
    assert plain["input_ids"].shape == (2, 9)
    assert padded["input_ids"].shape == (2, 16)
    assert padded["input_ids"][0].tolist() == [5, 6, 7] + [0] * 13
    assert padded["attention_mask"][1].tolist() == [1] * 9 + [0] * 7
    assert padded["labels"][1].tolist() == [8] * 9 + [-100] * 7
