"""Each task's metrics, its headline metric, and which way a metric improves.

The one table of the contract between the trainer and everything that reads its results: a
task family trains towards :func:`headline` (its default ``metric_for_best_model``); ``runs
list``, ``kubetune status``, ``kubetune run``'s summary and the report show and rank runs by
it. Metric names are the keys of ``metrics.json`` (and of ``run.json``'s ``metrics``) within
a split. No ML framework here: the laptop path imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The metrics each task reports, headline first.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "zero-shot": ("accuracy", "macro_f1"),
    "classical": ("accuracy", "macro_f1"),
    "ner": ("f1", "precision", "recall"),
    "question-answering": ("f1", "exact_match"),
    "seq2seq": ("rougeL", "rouge1", "rouge2", "bleu", "chrf"),
    "causal-lm": ("perplexity", "token_accuracy"),
    "embedding": ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10"),
}
#: The family whose metrics each classical method reports (spec ``classical.method``): the
#: baseline of a NER sweep is scored as NER is, a lead summary as generated text is.
CLASSICAL_FAMILIES = {"tfidf-logreg": "classification", "crf": "ner", "lead": "seq2seq"}
#: What a multi-label run reports (classification, zero-shot, classical with
#: data.multi_label), headline first: see :func:`metrics_of`.
MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "subset_accuracy")
#: Metrics that improve downward; every other metric improves upward.
LOWER_IS_BETTER = frozenset({"perplexity", "loss"})
#: Metrics worth a column where runs of several (or unknown) tasks share a table, best first.
#: Each task's headline comes before its other metrics here, so the first of these a run
#: reports is its task's headline.
RANKED = (
    "accuracy", "f1", "micro_f1", "macro_f1", "rougeL", "rouge1", "bleu", "perplexity",
    "ndcg@10", "loss",
)  # fmt: skip
#: Splits whose final metrics rank runs, the held-out test split first.
SCORED_SPLITS = ("test", "eval")


@dataclass(frozen=True)
class Headline:
    """A task's headline metric and which way it improves."""

    metric: str
    higher_is_better: bool


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def metrics_of(task: str, multi_label: bool = False, method: str | None = None) -> tuple[str, ...]:
    """The metrics a run of ``task`` reports, headline first; multi-label labelling tasks
    report :data:`MULTI_LABEL_METRICS` instead of accuracy; a classical run reports those of
    its ``method``'s family (:data:`CLASSICAL_FAMILIES`).

    Raises:
        KeyError: ``task`` is not a task kubetune trains.
    """
    if task == "classical" and method is not None:
        task = CLASSICAL_FAMILIES.get(method, task)
    known = TASK_METRICS[task]
    return MULTI_LABEL_METRICS if multi_label and known[0] == "accuracy" else known


def headline(task: str, multi_label: bool = False, method: str | None = None) -> Headline:
    """The metric a run of ``task`` is judged by (``method``: a classical run's).

    Raises:
        KeyError: ``task`` is not a task kubetune trains.
    """
    metric = metrics_of(task, multi_label, method)[0]
    return Headline(metric, higher_is_better(metric))


def headline_value(
    metrics: Mapping[str, Mapping[str, Any]], task: str | None = None
) -> tuple[str, str, int | float] | None:
    """(split, metric, value) that sums a run up: its task's headline (else the first of
    :data:`RANKED` it reports), from the test split where it has one, else eval."""
    names: Iterable[str] = RANKED
    if task in TASK_METRICS:
        names = (headline(task).metric, *RANKED)
    for split in SCORED_SPLITS:
        values = metrics.get(split) or {}
        for name in names:
            value = values.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return split, name, value
    return None
