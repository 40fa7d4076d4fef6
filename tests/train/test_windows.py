"""Long documents in windows, on hand-made examples: the cut with its stride, the window →
document map, max_windows, and the windows' logits aggregated per document."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from kubetune.errors import ConfigError
from kubetune.train import windows

WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A fast tokenizer with one token per word ``w0`` … ``w39``, between [CLS] and [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]",
    )  # fmt: skip


def text(first: int, last: int) -> str:
    return " ".join(WORDS[first : last + 1])


def words(tokenizer: Any, ids: list[int]) -> list[str]:
    return list(tokenizer.convert_ids_to_tokens(ids))


def test_a_long_text_is_cut_into_windows_that_share_stride_tokens(tokenizer: Any) -> None:
    # 12 words, 8 tokens a window (6 words + [CLS] + [SEP]), 2 shared with the window before:
    # w0-w5, w4-w9, w8-w11.
    cut = windows.split(tokenizer, [text(0, 11)], max_length=8, stride=2)
    assert [words(tokenizer, ids) for ids in cut.inputs["input_ids"]] == [
        ["[CLS]", "w0", "w1", "w2", "w3", "w4", "w5", "[SEP]"],
        ["[CLS]", "w4", "w5", "w6", "w7", "w8", "w9", "[SEP]"],
        ["[CLS]", "w8", "w9", "w10", "w11", "[SEP]"],
    ]
    assert cut.document.tolist() == [0, 0, 0]
    assert [sum(mask) for mask in cut.inputs["attention_mask"]] == [8, 8, 6]
    assert not cut.cut.any()


def test_each_window_maps_to_its_document(tokenizer: Any) -> None:
    texts = [text(0, 3), text(0, 11), "", text(20, 30)]
    cut = windows.split(tokenizer, texts, max_length=8, stride=2)
    # 4 words fit; 12 words → 3 windows; an empty text is one window; 11 words → w20-w25,
    # w24-w29, w28-w30.
    assert cut.document.tolist() == [0, 1, 1, 1, 2, 3, 3, 3]
    assert words(tokenizer, cut.inputs["input_ids"][4]) == ["[CLS]", "[SEP]"]
    assert words(tokenizer, cut.inputs["input_ids"][7]) == ["[CLS]", "w28", "w29", "w30", "[SEP]"]
    assert windows.stats(cut.document, cut.cut) == {
        "documents": 4,
        "windows": 8,
        "windows_per_document": 2.0,
        "windows_per_document_max": 3,
        "cut_documents": 0,
    }


@pytest.mark.parametrize("length", [1, 5, 6, 7, 11, 12, 25, 40])
def test_every_token_is_read_and_neighbours_overlap_by_stride(tokenizer: Any, length: int) -> None:
    cut = windows.split(tokenizer, [text(0, length - 1)], max_length=9, stride=3)
    body = [words(tokenizer, ids)[1:-1] for ids in cut.inputs["input_ids"]]
    assert sorted(set().union(*body)) == sorted(WORDS[:length])
    for before, after in itertools.pairwise(body):
        assert before[-3:] == after[:3]
    assert all(len(ids) <= 9 for ids in cut.inputs["input_ids"])


def test_max_windows_keeps_the_start_of_a_document_and_counts_the_cut(tokenizer: Any) -> None:
    texts = [text(0, 39), text(0, 3), text(0, 7)]  # 10, 1 and 2 windows uncapped
    cut = windows.split(tokenizer, texts, max_length=6, stride=0, max_windows=2)
    assert cut.document.tolist() == [0, 0, 1, 2, 2]
    assert [words(tokenizer, ids)[1:-1] for ids in cut.inputs["input_ids"][:2]] == [
        ["w0", "w1", "w2", "w3"],
        ["w4", "w5", "w6", "w7"],
    ]
    assert cut.cut.tolist() == [False, True, False, False, False], "only the first is cut"
    assert windows.stats(cut.document, cut.cut)["cut_documents"] == 1
    assert {name: len(rows) for name, rows in cut.inputs.items()} == {
        "input_ids": 5,
        "attention_mask": 5,
    }


def test_a_slow_tokenizer_is_a_config_error() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(ConfigError, match=r"^data\.long_documents: needs a fast"):
        windows.split(Slow(), ["a b c"], max_length=8, stride=2)


LOGITS = np.array(
    [
        [1.0, 0.0, -2.0],  # document 0, window 1
        [3.0, -4.0, 0.0],  # document 0, window 2
        [2.0, 2.0, 2.0],  # document 1, its only window
        [-1.0, 5.0, 1.0],  # document 2, window 1
        [0.0, 1.0, 4.0],  # document 2, window 2
        [-2.0, 0.0, 1.0],  # document 2, window 3
    ]
)
DOCUMENT = np.array([0, 0, 1, 2, 2, 2])


def test_mean_of_the_windows_logits() -> None:
    out = windows.aggregate(LOGITS, DOCUMENT, 3, "mean")
    assert out.tolist() == [[2.0, -2.0, -1.0], [2.0, 2.0, 2.0], [-1.0, 2.0, 2.0]]


def test_max_of_the_windows_logits_per_label() -> None:
    out = windows.aggregate(LOGITS, DOCUMENT, 3, "max")
    assert out.tolist() == [[3.0, 0.0, 0.0], [2.0, 2.0, 2.0], [0.0, 5.0, 4.0]]


def test_first_window_alone_is_what_truncation_reads() -> None:
    out = windows.aggregate(LOGITS, DOCUMENT, 3, "first")
    assert out.tolist() == [[1.0, 0.0, -2.0], [2.0, 2.0, 2.0], [-1.0, 5.0, 1.0]]


def test_first_follows_the_documents_first_window_whatever_the_row_order() -> None:
    order = np.array([3, 0, 5, 2, 1, 4])
    out = windows.aggregate(LOGITS[order], DOCUMENT[order], 3, "first")
    # Rows 3, 0, 5, 2, 1, 4: document 2's first row is window 1 (row 3), document 0's row 0.
    assert out.tolist() == [[1.0, 0.0, -2.0], [2.0, 2.0, 2.0], [-1.0, 5.0, 1.0]]


def test_a_document_without_a_window_is_refused() -> None:
    with pytest.raises(ValueError, match="every one of 3 documents needs a window"):
        windows.aggregate(LOGITS[:2], DOCUMENT[:2], 3, "mean")
    with pytest.raises(ValueError, match="6 rows of logits for 5 windows"):
        windows.aggregate(LOGITS, DOCUMENT[:5], 3, "mean")
