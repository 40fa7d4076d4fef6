"""Extractive question answering: the answer is a span of the context (SQuAD's form).

Rows hold a question, a context and the gold answers, ``{text: [...], answer_start: [...]}``
with character offsets into the context (empty lists: the context does not answer it). A
context longer than ``data.max_length`` is read in windows that overlap by
``data.doc_stride`` tokens (:mod:`kubetune.train.qa_windows`); training learns each window's
answer tokens from the first gold answer, or its CLS token where the window does not hold the
answer whole.

Evaluation is per example, never per window: the Trainer's ``compute_metrics`` and the final
metrics read each example's best span over all its windows, mapped back to characters of its
context, and score it with SQuAD's exact match and F1 (:mod:`kubetune.train.squad`, 0–100).
"No answer" competes only when the training data has unanswerable questions (as SQuAD v2):
trained on answerable ones alone (SQuAD v1), the CLS token only learns "not in this window",
and every example is answered.

``final/`` is a plain ``AutoModelForQuestionAnswering`` checkpoint with its tokenizer.
transformers 5 removed the ``question-answering`` pipeline; :func:`answer` does what it did
(windows, logits, best span) the way evaluation does, so a loaded model answers as its run
scored it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding, EvalPrediction

from kubetune.errors import ConfigError
from kubetune.headline import headline
from kubetune.spec import JobSpec
from kubetune.train import qa_windows, squad
from kubetune.train.data import Splits, require_columns
from kubetune.train.pretrained import from_pretrained
from kubetune.train.task import FINAL_METRICS, Task, pad_multiple

PEFT_TASK = "QUESTION_ANS"
#: The column a prediction row takes its context id from, when the data has it.
CONTEXT_ID = "context_id"


@dataclass
class Gold:
    """One example's gold answers, checked against its context."""

    texts: list[str]
    starts: list[int]

    @property
    def first(self) -> tuple[int, int] | None:
        """The first answer's character span: what training learns."""
        if not self.texts:
            return None
        return self.starts[0], self.starts[0] + len(self.texts[0])


@dataclass
class SplitWindows:
    """A split's examples, windows and window targets: how logits become answers."""

    raw: Dataset
    contexts: list[str]
    gold: list[Gold]
    windows: list[qa_windows.Window]
    #: Each window's (start, end) target: tells this split's windows from another split's.
    positions: np.ndarray


def gold_answers(value: Any, context: str, where: str) -> Gold:
    """A row's answers, each checked to be where its ``answer_start`` says; ``where`` names
    the row in a ConfigError."""
    field = "data.answers_column"
    if not isinstance(value, dict) or not {"text", "answer_start"} <= set(value):
        raise ConfigError(
            f"{field}: {where} holds {type(value).__name__}, not {{text: [...], "
            "answer_start: [...]}} (empty lists for a question the context does not answer)"
        )
    texts, starts = value["text"], value["answer_start"]
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise ConfigError(
            f"{field}: {where} needs answers.text and answers.answer_start as lists of the "
            "same length"
        )
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(text, str) or not text or isinstance(start, bool):
            raise ConfigError(
                f"{field}: {where} has answer {text!r}; give each answer as non-empty text "
                "(an unanswerable question has empty lists)"
            )
        if not isinstance(start, int) or context[start : start + len(text)] != text:
            found = context.find(text)
            fix = (
                f"set answer_start to {found}"
                if found >= 0
                else "the context does not contain it; fix the answer text or the context"
            )
            reads = context[start : start + len(text)] if isinstance(start, int) else ""
            raise ConfigError(
                f"{field}: {where}: answer {text!r} is not at answer_start {start!r} (the "
                f"context there reads {reads!r}); {fix}"
            )
    return Gold(list(texts), list(starts))


def read_split(
    spec: JobSpec, split: str, data: Dataset, source: str
) -> tuple[list[str], list[str], list[Gold]]:
    """(questions, contexts, gold answers) of a split, every row checked (ConfigError naming
    the row and what to fix)."""
    d = spec.data
    questions, contexts = list(data[d.question_column]), list(data[d.context_column])
    answers = list(data[d.answers_column])
    gold: list[Gold] = []
    for row, (question, context, value) in enumerate(
        zip(questions, contexts, answers, strict=True), 1
    ):
        where = f"row {row} of the {split} data ({source})"
        for field, column, text in (
            ("question_column", d.question_column, question),
            ("context_column", d.context_column, context),
        ):
            if not isinstance(text, str) or not text.strip():
                held = "empty text" if isinstance(text, str) else type(text).__name__
                raise ConfigError(
                    f"data.{field}: {where} has {held} in column {column!r}; give every row "
                    "its text"
                )
        gold.append(gold_answers(value, context, where))
    return questions, contexts, gold


def context_id(given: Any, context: str) -> str:
    """An example's context id: its ``context_id`` column's value, else a hash of its
    context (the same context, the same id)."""
    if given is not None:
        return str(given)
    return hashlib.sha256(context.encode("utf-8")).hexdigest()[:16]


def build(spec: JobSpec, splits: Splits, tokenizer: Any, model_path: str) -> Task:
    """Window the splits, load a question-answering head, and score answers per example."""
    d = spec.data
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "model.name: question answering maps answers to characters with a fast tokenizer's "
            "offsets; this model has none (use a checkpoint with a tokenizer.json)"
        )
    require_columns(
        splits,
        {
            "question_column": d.question_column,
            "context_column": d.context_column,
            "answers_column": d.answers_column,
        },
    )
    windowed: dict[str, SplitWindows] = {}
    tokenized: dict[str, Dataset] = {}
    unanswerable = False
    for split, data in splits.present().items():
        source = splits.sources.get(split, split)
        questions, contexts, gold = read_split(spec, split, data, source)
        crowded = qa_windows.crowded_question(tokenizer, questions, d.max_length, d.doc_stride)
        if crowded is not None:
            raise ConfigError(
                f"data.max_length: the question of row {crowded[0] + 1} of the {split} data "
                f"({source}) leaves {crowded[1]} of {d.max_length} tokens for its context, not "
                f"more than data.doc_stride={d.doc_stride}; raise max_length or lower doc_stride"
            )
        encoded = qa_windows.encode(
            tokenizer,
            questions,
            contexts,
            max_length=d.max_length,
            stride=d.doc_stride,
            answers=[g.first for g in gold],
        )
        tokenized[split] = Dataset.from_dict(encoded.features)
        if split == "train":
            unanswerable = any(not g.texts for g in gold)
        else:
            positions = np.stack(
                [encoded.features["start_positions"], encoded.features["end_positions"]], axis=1
            )
            windowed[split] = SplitWindows(data, contexts, gold, encoded.windows, positions)

    def answers_of(split: SplitWindows, logits: np.ndarray) -> list[qa_windows.Answer]:
        return qa_windows.best_answers(
            split.windows,
            logits[..., 0],
            logits[..., 1],
            split.contexts,
            max_answer_length=d.max_answer_length,
            null_threshold=d.null_threshold,
            allow_null=unanswerable,
        )

    def compute_metrics(pred: EvalPrediction) -> dict[str, Any]:
        logits = np.asarray(pred.predictions)
        label_ids: Any = pred.label_ids  # (start positions, end positions)
        positions = np.stack([np.asarray(label_ids[0]), np.asarray(label_ids[1])], axis=1)
        split = split_of(windowed, positions)
        answers = answers_of(split, logits)
        return squad.scores([g.texts for g in split.gold], [a.text for a in answers])

    def predictions(
        raw: Dataset, logits: np.ndarray, model: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        split = next((s for s in windowed.values() if s.raw is raw), None)
        if split is None:
            raise RuntimeError("predictions asked for a split this task did not window")
        logits = np.asarray(logits)
        answers = answers_of(split, logits[: len(split.windows)])
        rows = prediction_rows(spec, split, answers)
        golds = [g.texts for g in split.gold]
        return rows, {FINAL_METRICS: squad.scores(golds, [a.text for a in answers])}

    return Task(
        model=from_pretrained(AutoModelForQuestionAnswering, spec, model_path),
        labels=[],
        tokenized=tokenized,
        collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple()),
        compute_metrics=compute_metrics,
        predictions=predictions,
        preprocess_logits=start_end,
        default_metric=headline("question-answering").metric,
        peft_task=PEFT_TASK,
        # final/kubetune.json: "no answer" may win only where training saw unanswerables.
        inference=lambda: {"allow_null": unanswerable},
    )


def start_end(logits: Any, labels: Any) -> Any:
    """One array of each batch's start and end logits, ``(windows, tokens, 2)``: the runner
    reads one prediction array per split (the model returns two)."""
    import torch

    return torch.stack([logits[0], logits[1]], dim=-1)


def split_of(windowed: dict[str, SplitWindows], positions: np.ndarray) -> SplitWindows:
    """The split whose windows have these targets (the Trainer's compute_metrics is not
    told which split it scores), eval first."""
    for name in sorted(windowed, key=lambda s: s != "eval"):
        if np.array_equal(windowed[name].positions, positions):
            return windowed[name]
    raise RuntimeError(f"no split has {len(positions)} windows with these answer positions")


def prediction_rows(
    spec: JobSpec, split: SplitWindows, answers: list[qa_windows.Answer]
) -> list[dict[str, Any]]:
    """predictions.jsonl: per example its question, context id, answer with character
    offsets into the context, score, gold answers and how the answer scored against them."""
    d = spec.data
    raw = split.raw
    ids = list(raw["id"]) if "id" in raw.column_names else list(range(len(raw)))
    questions = list(raw[d.question_column])
    given = list(raw[CONTEXT_ID]) if CONTEXT_ID in raw.column_names else None
    rows: list[dict[str, Any]] = []
    for i, (answer, gold) in enumerate(zip(answers, split.gold, strict=True)):
        em, f1 = squad.example_scores(gold.texts, answer.text)
        rows.append(
            {
                "id": ids[i],
                "question": questions[i],
                "context_id": context_id(given[i] if given else None, split.contexts[i]),
                "answer": answer.text,
                "start": answer.start,
                "end": answer.end,
                "score": round(answer.score, 4),
                "null_score": round(answer.null_score, 4),
                "gold": {"text": gold.texts, "answer_start": gold.starts},
                "exact_match": em,
                "f1": round(100 * f1, 2),
            }
        )
    return rows
