"""Windows over long contexts and answers read back from them, on hand-made examples.

A word-level tokenizer (one token per word, so every position below is worked out by hand)
reads a 30-word context in windows of 16 tokens: 4 go to [CLS] where [SEP] … [SEP], 12 to
context, and consecutive windows share 4 context words, so window k reads context words
8k … 8k + 11. The answer "alpha beta gamma" is words 11–13: cut by the first window's edge,
whole in the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from kubetune.train import qa_windows
from kubetune.train.qa_windows import Window

WORDS = [f"w{i}" for i in range(30)]
WORDS[11:14] = ["alpha", "beta", "gamma"]
CONTEXT = " ".join(WORDS)
ANSWER = "alpha beta gamma"
START = CONTEXT.index(ANSWER)
SPAN = (START, START + len(ANSWER))


def word_tokenizer(padding_side: str = "right", token_types: bool = True) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate([*specials, "where", "who", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    names = ["input_ids", "attention_mask"]
    if token_types:
        names.insert(1, "token_type_ids")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        padding_side=padding_side,
        model_input_names=names,
    )


def encode(tokenizer: Any, answer: tuple[int, int] | None = SPAN) -> qa_windows.Encoded:
    return qa_windows.encode(
        tokenizer, ["where"], [CONTEXT], max_length=16, stride=4, answers=[answer]
    )


def context_words(tokenizer: Any, window: Window, ids: list[int]) -> list[str]:
    return [tokenizer.convert_ids_to_tokens(ids[i]) for i in window.context_tokens()]


def logits_at(n_windows: int, length: int, marks: dict[tuple[int, int, str], float]) -> np.ndarray:
    """Zero logits ``(windows, length, 2)`` but for ``marks``: (window, token, "start"|"end")."""
    out = np.zeros((n_windows, length, 2))
    for (w, token, kind), value in marks.items():
        out[w, token, 0 if kind == "start" else 1] = value
    return out


def test_long_context_is_read_in_overlapping_windows_with_the_question_in_each() -> None:
    tokenizer = word_tokenizer()
    enc = encode(tokenizer)
    windows, ids = enc.windows, enc.features["input_ids"]
    assert [w.example for w in windows] == [0, 0, 0, 0]
    assert [context_words(tokenizer, w, i)[0] for w, i in zip(windows, ids, strict=True)] == [
        "w0", "w8", "w16", "w24",
    ]  # fmt: skip
    for window, row in zip(windows, ids, strict=True):
        assert tokenizer.convert_ids_to_tokens(row[:3]) == ["[CLS]", "where", "[SEP]"]
        assert window.cls_index == 0
        # Offsets only on context tokens, each pointing at its own word in the context.
        assert window.offsets[:3] == (None, None, None) and window.offsets[-1] is None
        for i in window.context_tokens():
            start, end = window.offsets[i]  # type: ignore[misc]
            assert CONTEXT[start:end] == tokenizer.convert_ids_to_tokens(row[i])
    assert set(enc.features) == {
        "input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions",
    }  # fmt: skip


def test_an_answer_cut_by_a_window_edge_is_learnt_from_the_window_that_holds_it_whole() -> None:
    tokenizer = word_tokenizer()
    enc = encode(tokenizer)
    first, second = enc.windows[0], enc.windows[1]
    assert context_words(tokenizer, first, enc.features["input_ids"][0])[-1] == "alpha"
    starts, ends = enc.features["start_positions"], enc.features["end_positions"]
    # Window 0 holds only "alpha": it learns "not here" (its CLS token); window 1 reads
    # w8 … w19 from position 3, so alpha (word 11) is at 6 and gamma (word 13) at 8.
    assert (starts[0], ends[0]) == (first.cls_index, first.cls_index)
    assert (starts[1], ends[1]) == (6, 8)
    assert (starts[2], ends[2]) == (0, 0) and (starts[3], ends[3]) == (0, 0)
    span = enc.features["input_ids"][1][6:9]
    assert tokenizer.decode(span) == ANSWER
    assert qa_windows.answer_tokens(second, None) is None
    # An answer that starts or ends inside a token takes the tokens holding those characters.
    assert qa_windows.answer_tokens(second, (START + 2, START + 8)) == (6, 7)  # "pha be"
    assert qa_windows.answer_tokens(second, (START, START + 13)) == (6, 8)  # "alpha beta ga"


def test_the_best_span_over_all_windows_maps_back_to_the_contexts_characters() -> None:
    tokenizer = word_tokenizer()
    enc = encode(tokenizer)
    # Window 0 is sure of the half it sees ("alpha", at its last position 14: 5 + 5 = 10);
    # window 1 of the whole answer (6 + 6 = 12): the whole answer wins.
    logits = logits_at(
        4,
        16,
        {
            (0, 14, "start"): 5, (0, 14, "end"): 5,
            (1, 6, "start"): 6, (1, 8, "end"): 6,
        },
    )  # fmt: skip
    (answer,) = qa_windows.best_answers(
        enc.windows,
        logits[..., 0],
        logits[..., 1],
        [CONTEXT],
        max_answer_length=5,
        null_threshold=0.0,
    )
    assert (answer.text, answer.start, answer.end) == (ANSWER, START, START + len(ANSWER))
    assert CONTEXT[answer.start : answer.end] == ANSWER
    assert answer.score == 12.0 and answer.null_score == 0.0
    # Had window 0 been surer of its half, its half would be the answer.
    logits[0, 14] = [7, 7]
    (half,) = qa_windows.best_answers(
        enc.windows, logits[..., 0], logits[..., 1], [CONTEXT], max_answer_length=5,
        null_threshold=0.0,
    )  # fmt: skip
    assert (half.text, half.start) == ("alpha", START)


def test_a_left_padding_tokenizer_reads_the_context_first() -> None:
    tokenizer = word_tokenizer(padding_side="left")
    enc = encode(tokenizer)
    assert not qa_windows.question_first(tokenizer)
    row = enc.features["input_ids"][1]
    assert tokenizer.convert_ids_to_tokens(row[:2]) == ["[CLS]", "w8"]
    assert tokenizer.convert_ids_to_tokens(row[-2:]) == ["where", "[SEP]"]
    start, end = enc.features["start_positions"][1], enc.features["end_positions"][1]
    assert (start, end) == (4, 6)
    assert tokenizer.decode(row[start : end + 1]) == ANSWER
    logits = logits_at(len(enc.windows), 16, {(1, start, "start"): 3, (1, end, "end"): 3})
    (answer,) = qa_windows.best_answers(
        enc.windows, logits[..., 0], logits[..., 1], [CONTEXT], max_answer_length=5,
        null_threshold=0.0,
    )  # fmt: skip
    assert (answer.text, answer.start) == (ANSWER, START)


def test_a_model_without_token_type_ids_gets_none() -> None:
    enc = encode(word_tokenizer(token_types=False))
    assert "token_type_ids" not in enc.features
    assert set(enc.features) == {"input_ids", "attention_mask", "start_positions", "end_positions"}


def test_no_answer_trains_every_window_on_its_cls_token() -> None:
    enc = encode(word_tokenizer(), answer=None)
    assert enc.features["start_positions"] == [0, 0, 0, 0] == enc.features["end_positions"]
    room = qa_windows.room_for_context(word_tokenizer(), ["where", "who where"], 16)
    assert room == [12, 11]
    # A window must hold more context than it shares with the next one.
    crowded = qa_windows.crowded_question
    assert crowded(word_tokenizer(), ["where", "who where"], 16, stride=10) is None
    assert crowded(word_tokenizer(), ["where", "who where"], 16, stride=11) == (1, 11)
    assert crowded(word_tokenizer(), ["where " * 20], 16, stride=4) == (0, 0)


# --- choosing the answer, on hand-made windows -----------------------------------------------

#: [CLS] q [SEP] aa bb cc dd [SEP]: context "aa bb cc dd", tokens 3–6.
SHORT = "aa bb cc dd"
SHORT_WINDOW = Window(0, (None, None, None, (0, 2), (3, 5), (6, 8), (9, 11), None), 0)


def answer_of(
    starts: Sequence[float], ends: Sequence[float], *, threshold: float = 0.0, longest: int = 30,
    allow_null: bool = True,
) -> qa_windows.Answer:  # fmt: skip
    (answer,) = qa_windows.best_answers(
        [SHORT_WINDOW], np.array([starts]), np.array([ends]), [SHORT],
        max_answer_length=longest, null_threshold=threshold, allow_null=allow_null,
    )  # fmt: skip
    return answer


def test_no_answer_when_the_null_score_wins_by_more_than_the_threshold() -> None:
    # CLS: 4 + 4 = 8; best span "aa bb": 2 + 3 = 5; null wins by 3.
    starts = [4, 0, 0, 2, 0, 0, 0, 0]
    ends = [4, 0, 0, 0, 3, 0, 0, 0]
    nothing = answer_of(starts, ends, threshold=2.0)
    assert (nothing.text, nothing.start, nothing.end) == ("", None, None)
    assert nothing.score == nothing.null_score == 8.0
    assert answer_of(starts, ends, threshold=3.0).text == "aa bb", "by exactly 3 is not more"
    spoken = answer_of(starts, ends, threshold=3.5)
    assert (spoken.text, spoken.start, spoken.end, spoken.score) == ("aa bb", 0, 5, 5.0)
    assert answer_of(starts, ends, threshold=-10, allow_null=False).text == "aa bb"
    # A negative threshold answers nothing even when a span beats the null score a little.
    assert answer_of([0, 0, 0, 2, 0, 0, 0, 0], [0, 0, 0, 0, 3, 0, 0, 0], threshold=-6).text == ""


def test_the_null_score_is_the_lowest_over_an_examples_windows() -> None:
    other = Window(0, SHORT_WINDOW.offsets, 0)
    starts = np.array([[5.0, 0, 0, 1, 0, 0, 0, 0], [1.0, 0, 0, 1, 0, 0, 0, 0]])
    ends = np.array([[5.0, 0, 0, 1, 0, 0, 0, 0], [1.0, 0, 0, 1, 0, 0, 0, 0]])
    (answer,) = qa_windows.best_answers(
        [SHORT_WINDOW, other], starts, ends, [SHORT], max_answer_length=30, null_threshold=0.0
    )
    # Nulls 10 and 2: the lowest, 2, is what "aa" (1 + 1 = 2) must beat by more than 0.
    assert answer.null_score == 2.0 and answer.text == "aa"


def test_spans_respect_max_answer_length() -> None:
    starts = [0, 0, 0, 5, 0, 0, 0, 0]
    ends = [0, 0, 0, 0, 1, 0, 5, 0]
    assert answer_of(starts, ends).text == "aa bb cc dd"  # 5 + 5, four tokens
    # At most two tokens: "aa bb" (5 + 1) beats "aa" (5 + 0) and "cc dd" (0 + 5).
    short = answer_of(starts, ends, longest=2)
    assert (short.text, short.score) == ("aa bb", 6.0)
    assert answer_of(starts, ends, longest=1).text == "aa"


def test_spans_end_after_they_start_and_lie_inside_the_context() -> None:
    # The likeliest start (dd) comes after the likeliest end (aa): no backwards span.
    starts = [0, 0, 0, 0, 1, 0, 4, 0]
    ends = [0, 0, 0, 4, 0, 0, 1, 0]
    assert answer_of(starts, ends).text == "dd"  # 4 + 1 beats "bb cc dd" (1 + 1)
    # The question token and [SEP]s are not context, however high their logits.
    starts = [0, 9, 9, 1, 0, 0, 0, 9]
    ends = [0, 9, 9, 0, 1, 0, 0, 9]
    assert answer_of(starts, ends, allow_null=False).text == "aa bb"


def test_padded_logit_rows_are_cut_to_the_window_and_a_window_without_context() -> None:
    # The Trainer pads rows of different lengths with -100: only the window's own tokens count.
    starts = [0, 0, 0, 1, 0, 0, 0, 0, -100, -100]
    ends = [0, 0, 0, 1, 0, 0, 0, 0, -100, -100]
    assert answer_of(starts, ends, allow_null=False).text == "aa"
    empty = Window(0, (None, None, None), 0)
    (answer,) = qa_windows.best_answers(
        [empty], np.zeros((1, 3)), np.zeros((1, 3)), ["x"], max_answer_length=5,
        null_threshold=0.0, allow_null=False,
    )  # fmt: skip
    assert (answer.text, answer.start) == ("", None)
    with pytest.raises(ValueError, match="2 windows but 1 start"):
        qa_windows.best_answers(
            [empty, empty], np.zeros((1, 3)), np.zeros((2, 3)), ["x"],
            max_answer_length=5, null_threshold=0.0,
        )  # fmt: skip
