"""Sub-word label alignment and entity spans: no label reaches padding or special tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune import spec

NAMES = ["O", "B-loc", "I-loc", "B-person", "I-person"]


def test_first_sub_token_carries_the_tag() -> None:
    from kubetune.train import ner

    # words: [Paris, Johnson] where Johnson splits in two; plus [CLS]/[SEP]
    word_ids = [None, 0, 1, 1, None]
    tags = [1, 3]
    assert ner.align_labels(word_ids, tags, NAMES, label_all=False) == [-100, 1, 3, -100, -100]


def test_label_all_tokens_turns_b_into_i_after_the_first() -> None:
    from kubetune.train import ner

    word_ids = [None, 0, 0, 0, 1, None]
    tags = [3, 0]
    assert ner.align_labels(word_ids, tags, NAMES, label_all=True) == [-100, 3, 4, 4, 0, -100]


@pytest.mark.parametrize("label_all", [False, True])
def test_no_label_reaches_padding_or_special_tokens(tiny: dict[str, Path], label_all: bool) -> None:
    from transformers import AutoTokenizer, DataCollatorForTokenClassification

    from kubetune.train import ner
    from kubetune.train.data import load_splits

    from tiny import tiny_spec

    job = spec.validate(tiny_spec(tiny, "ner", data={"label_all_tokens": label_all}))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny["model"]))
    task = ner.build(job, load_splits(job, tiny["root"] / "cache"), tokenizer, str(tiny["model"]))
    rows = [task.tokenized["train"][i] for i in range(12)]
    batch = DataCollatorForTokenClassification(tokenizer)(
        [{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows]
    )
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert (labels[mask == 0] == -100).all(), "padding got a label"
    for token_id in special:
        assert (labels[ids == token_id] == -100).all(), f"special token {token_id} got a label"
    labelled = (labels != -100).sum().item()
    words = sum(len(r["labels"]) for r in rows)  # upper bound
    assert 0 < labelled <= words
    first_only = sum(sum(1 for x in r["labels"] if x != -100) for r in rows)
    raw = load_splits(job, tiny["root"] / "cache").train
    assert raw is not None
    n_words = sum(len(raw[i]["tokens"]) for i in range(12))
    if label_all:
        assert first_only >= n_words
    else:
        assert first_only == n_words
