"""Metrics computed offline with scikit-learn, seqeval, rouge-score and sacrebleu
(``evaluate.load`` needs the hub)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class F1 (flat keys, so trackers can plot them)."""
    ids = list(range(len(names)))
    # scikit-learn and seqeval load in seconds: imported where a metric is computed.
    from sklearn.metrics import accuracy_score, f1_score

    per_class = f1_score(labels, predictions, labels=ids, average=None, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(
            f1_score(labels, predictions, labels=ids, average="macro", zero_division=0)
        ),
    }
    out.update({f"f1_{name}": float(score) for name, score in zip(names, per_class, strict=True)})
    return out


def confusion(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Confusion matrix with its axes named: rows are true labels, columns predictions."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, predictions, labels=list(range(len(names))))
    return {"labels": names, "matrix": matrix.tolist()}


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1, overall and per entity type (seqeval)."""
    from seqeval.metrics import classification_report as seq_report
    from seqeval.metrics import f1_score as seq_f1
    from seqeval.metrics import precision_score as seq_precision
    from seqeval.metrics import recall_score as seq_recall

    out: dict[str, Any] = {
        "precision": float(seq_precision(gold, predicted, zero_division=0)),
        "recall": float(seq_recall(gold, predicted, zero_division=0)),
        "f1": float(seq_f1(gold, predicted, zero_division=0)),
    }
    report = seq_report(gold, predicted, output_dict=True, zero_division=0)
    for name, row in report.items():
        if name.endswith(" avg"):
            continue
        out[f"f1_{name}"] = float(row["f1-score"])
    return out


#: ROUGE variants reported for generated text, under these names.
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
#: A sentence ends at ".", "!" or "?" followed by whitespace, unless a digit comes next (so a
#: word-piece decoder's "41. 2" stays whole). Abbreviations ("e.g. this") do split; the rule
#: is applied alike to generated and reference text, and only ROUGE-Lsum reads sentences.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?!\d)")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` for ROUGE-Lsum: its own line breaks first, then :data:`_SENTENCE_END`.

    nltk's punkt model, which Hugging Face's summarization examples use, is a download and not
    available offline; this rule needs no data and sees case-less (uncased model) output the same
    way as cased text.
    """
    return [
        sentence
        for line in text.splitlines()
        for sentence in _SENTENCE_END.split(line.strip())
        if sentence
    ]


def generation_metrics(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """How close generated texts are to their references, every score on a 0–100 scale.

    - ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``: F-measure with Porter stemming
      (Google's ``rouge-score``, which lowercases and keeps only ASCII letters and digits), the
      mean over examples. ROUGE-Lsum is the summary-level LCS over sentences split by
      :func:`split_sentences`; ROUGE-L treats each text as one sequence.
    - ``bleu``: corpus BLEU (sacrebleu defaults: 13a tokenisation, case-sensitive,
      exponential smoothing).
    - ``chrf``: corpus chrF (sacrebleu defaults: character 6-grams, beta 2, case-sensitive).

    0–100 is sacrebleu's own scale and the one papers report ROUGE on; rouge-score's 0–1
    F-measures are multiplied by 100. An empty corpus scores 0.
    """
    # Imported here: rouge-score loads nltk, a second or two that every other task would pay
    # at trainer start.
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.chrf import CHRF

    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts for {len(references)} references")
    if not generated:
        return dict.fromkeys((*ROUGE_TYPES, "bleu", "chrf"), 0.0)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(generated, references, strict=True):
        # rouge-score reads sentences for Lsum from line breaks; the other types ignore them.
        pair = scorer.score(
            "\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction))
        )
        for name in ROUGE_TYPES:
            totals[name] += pair[name].fmeasure
    out = {name: 100 * total / len(generated) for name, total in totals.items()}
    hypotheses, refs = list(generated), [list(references)]
    out["bleu"] = float(BLEU().corpus_score(hypotheses, refs).score)
    out["chrf"] = float(CHRF().corpus_score(hypotheses, refs).score)
    return out
