"""Extractive QA over contexts longer than a model reads: windows in, answers out.

**In.** Each question is tokenised with its context as a pair, the context truncated into
overlapping windows (``truncation="only_second"``, ``stride``, ``return_overflowing_tokens``:
transformers' standard recipe), so a long context yields several features that each hold the
whole question. The offsets mapping of each window is kept for its context tokens only; the
question's and the special tokens' are dropped, so no answer can be read from them. A
tokenizer that pads on the left reads the pair the other way round (context first,
``truncation="only_first"``), as transformers' own QA example does. Features carry the model's
own input names (no ``token_type_ids`` for a model without them).

For training, a window's target is the tokens its answer starts and ends on, or its CLS token
when the example has no answer or the answer is not whole inside the window: the model learns
that this window does not hold the answer, and a neighbouring window (which overlaps it by
``stride`` tokens) holds it whole.

**Out.** :func:`best_answers` reads each example's answer from all its windows: the span with
the largest start + end logit over every window, among spans inside the context, ending at or
after their start and at most ``max_answer_length`` tokens long (all such spans are searched,
as the question-answering pipeline does, not only the n best starts and ends). Its "no answer"
score is the CLS token's start + end logit, the lowest over the windows as in the SQuAD v2
reference code (the window that sees the answer most clearly decides); when it beats the best
span by more than ``null_threshold``, the example is answered with nothing. The answer is the
context's characters from the span's first token's start to its last token's end.

Pure: numpy and a fast tokenizer's output, no model.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A window's character span in the context of each token; None for a token that is not
#: context (question, special tokens).
Offsets = tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True)
class Window:
    """One feature: which example it reads, and where its context tokens lie."""

    #: The example's index in the list that was encoded.
    example: int
    offsets: Offsets
    #: The token whose start and end logits score "no answer" (the CLS token).
    cls_index: int

    def context_tokens(self) -> list[int]:
        return [i for i, span in enumerate(self.offsets) if span is not None]


@dataclass(frozen=True)
class Encoded:
    """The model's inputs for every window, and each window's :class:`Window`."""

    #: ``input_ids``, ``attention_mask`` and whatever else the model reads, one row per
    #: window; with ``start_positions``/``end_positions`` when answers were given.
    features: dict[str, list[Any]]
    windows: list[Window]


@dataclass(frozen=True)
class Answer:
    """An example's predicted answer: the context's text ``[start, end)``, or no answer."""

    text: str
    #: Character offsets into the context; None when the example is answered with nothing.
    start: int | None
    end: int | None
    #: The start + end logit of the answer (of the CLS token when there is none).
    score: float
    #: The lowest "no answer" score over the example's windows.
    null_score: float


def question_first(tokenizer: Any) -> bool:
    """Whether the question comes first in a pair (the context then is truncated): for every
    tokenizer but one that pads on the left."""
    return getattr(tokenizer, "padding_side", "right") != "left"


def room_for_context(tokenizer: Any, questions: Sequence[str], max_length: int) -> list[int]:
    """Tokens of context each question's windows can hold: what ``max_length`` leaves after
    the question and the special tokens of a pair."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = tokenizer([q.lstrip() for q in questions], add_special_tokens=False)["input_ids"]
    return [max_length - specials - len(ids) for ids in lengths]


def crowded_question(
    tokenizer: Any, questions: Sequence[str], max_length: int, stride: int
) -> tuple[int, int] | None:
    """(index, room) of the first question that leaves no more than ``stride`` tokens of
    context per window (the tokenizer cannot window its context), or None."""
    for index, room in enumerate(room_for_context(tokenizer, questions, max_length)):
        if room <= stride:
            return index, max(room, 0)
    return None


def encode(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_length: int,
    stride: int,
    answers: Sequence[tuple[int, int] | None] | None = None,
) -> Encoded:
    """Windows over each (question, context); ``answers[i]``: example i's answer as character
    offsets ``(start, end)`` into its context, or None when it has none. Every question must
    leave more than ``stride`` tokens of room (:func:`crowded_question`): fast tokenizers
    abort the process otherwise."""
    first = question_first(tokenizer)
    asked = [q.lstrip() for q in questions]  # leading blanks only cost window room
    pair = (asked, list(contexts)) if first else (list(contexts), asked)
    enc = tokenizer(
        *pair,
        truncation="only_second" if first else "only_first",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    context_sequence = 1 if first else 0
    cls_id = tokenizer.cls_token_id
    windows: list[Window] = []
    for i, ids in enumerate(enc["input_ids"]):
        sequence = enc.sequence_ids(i)
        offsets: Offsets = tuple(
            (int(span[0]), int(span[1])) if seq == context_sequence else None
            for span, seq in zip(enc["offset_mapping"][i], sequence, strict=True)
        )
        cls_index = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
        windows.append(Window(int(enc["overflow_to_sample_mapping"][i]), offsets, cls_index))
    features: dict[str, list[Any]] = {
        name: list(enc[name]) for name in tokenizer.model_input_names if name in enc
    }
    if answers is not None:
        spans = [
            answer_tokens(w, answers[w.example]) if answers[w.example] is not None else None
            for w in windows
        ]
        features["start_positions"] = [
            s[0] if s is not None else w.cls_index for s, w in zip(spans, windows, strict=True)
        ]
        features["end_positions"] = [
            s[1] if s is not None else w.cls_index for s, w in zip(spans, windows, strict=True)
        ]
    return Encoded(features, windows)


def answer_tokens(window: Window, answer: tuple[int, int] | None) -> tuple[int, int] | None:
    """The first and last token of ``answer`` (character offsets) in ``window``, or None when
    there is no answer or it is not whole inside the window's context."""
    if answer is None:
        return None
    start_char, end_char = answer
    context = window.context_tokens()
    if not context:
        return None
    spans = [window.offsets[i] for i in context]
    starts = [span[0] for span in spans if span is not None]
    ends = [span[1] for span in spans if span is not None]
    if starts[0] > start_char or ends[-1] < end_char:
        return None
    # Context offsets only grow along a window: the last token starting at or before the
    # answer's start, and the first token ending at or after its end.
    first = bisect.bisect_right(starts, start_char) - 1
    last = bisect.bisect_left(ends, end_char)
    return context[first], context[last]


def best_answers(
    windows: Sequence[Window],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    contexts: Sequence[str],
    *,
    max_answer_length: int,
    null_threshold: float,
    allow_null: bool = True,
) -> list[Answer]:
    """Each example's answer from its windows' logits (see the module docstring).

    ``start_logits[w]``/``end_logits[w]``: window w's logits, at least as long as its tokens
    (longer rows, padded by the Trainer, are cut to the window). ``contexts[i]``: example
    i's context. ``allow_null``: False never answers with nothing (data with no unanswerable
    question), as transformers' example does for SQuAD v1.
    """
    if len(windows) != len(start_logits) or len(windows) != len(end_logits):
        raise ValueError(
            f"{len(windows)} windows but {len(start_logits)} start and {len(end_logits)} end "
            "logit rows"
        )
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for w, window in enumerate(windows):
        n = len(window.offsets)
        starts = np.asarray(start_logits[w][:n], dtype=np.float64)
        ends = np.asarray(end_logits[w][:n], dtype=np.float64)
        no_answer = float(starts[window.cls_index] + ends[window.cls_index])
        null[window.example] = min(null.get(window.example, np.inf), no_answer)
        span = best_span(window.offsets, starts, ends, max_answer_length)
        if span is None:
            continue
        score, first, last = span
        if window.example not in best or score > best[window.example][0]:
            first_span, last_span = window.offsets[first], window.offsets[last]
            assert first_span is not None and last_span is not None
            best[window.example] = (score, first_span[0], last_span[1])
    answers: list[Answer] = []
    for example, context in enumerate(contexts):
        null_score = null.get(example, float("nan"))
        found = best.get(example)
        if found is None or (allow_null and null_score - found[0] > null_threshold):
            answers.append(Answer("", None, None, null_score, null_score))
        else:
            score, start, end = found
            answers.append(Answer(context[start:end], start, end, score, null_score))
    return answers


def best_span(
    offsets: Offsets, starts: np.ndarray, ends: np.ndarray, max_answer_length: int
) -> tuple[float, int, int] | None:
    """(start + end logit, first token, last token) of the window's best span inside its
    context, at most ``max_answer_length`` tokens long; None when the window has no context."""
    inside = np.array([span is not None for span in offsets], dtype=bool)
    n = len(offsets)
    top: tuple[float, int, int] | None = None
    # One diagonal of the start × end score matrix per answer length: spans of k + 1 tokens.
    for k in range(min(max_answer_length, n)):
        valid = inside[: n - k] & inside[k:]
        if not valid.any():
            continue
        scores = np.where(valid, starts[: n - k] + ends[k:], -np.inf)
        first = int(np.argmax(scores))
        if top is None or scores[first] > top[0]:
            top = (float(scores[first]), first, first + k)
    return top
