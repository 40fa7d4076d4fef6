"""SQuAD's exact match and F1, as the official SQuAD v2.0 evaluation script computes them.

An answer and each gold answer are normalised (lowercased, punctuation and the articles a, an,
the removed, whitespace collapsed); exact match is 1 when they are equal, F1 is the harmonic
mean of the token precision and recall between them. An example scores the best over its
gold answers. A question the context does not answer has the one gold answer "" (the
official script's rule), so only an empty prediction scores on it.

Every score is on the official script's 0–100 scale (the scale papers and model cards report
SQuAD on), as kubetune's other 0–100 metrics (ROUGE, BLEU) are. The headline ``f1`` of a
question-answering run is this one.

No ML framework here: plain Python, unit-tested against hand-computed values.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (the
    official script's order)."""
    lowered = text.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punctuation)
    return " ".join(no_articles.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact(gold: str, predicted: str) -> int:
    """1 when the normalised answers are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(predicted))


def f1(gold: str, predicted: str) -> float:
    """Token-overlap F1 of two answers (0–1); two empty answers agree fully."""
    gold_tokens, predicted_tokens = _tokens(gold), _tokens(predicted)
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    same = sum((Counter(gold_tokens) & Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(predicted_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[str]) -> list[str]:
    """The gold answers an example is scored against: those that are not empty once
    normalised, or [""] for a question the context does not answer."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def example_scores(answers: Sequence[str], predicted: str) -> tuple[int, float]:
    """(exact match, F1) of one prediction, each the best over the gold answers (0–1)."""
    golds = gold_texts(answers)
    return max(exact(g, predicted) for g in golds), max(f1(g, predicted) for g in golds)


def scores(golds: Sequence[Sequence[str]], predicted: Sequence[str]) -> dict[str, float | int]:
    """Exact match and F1 over examples on the 0–100 scale, and the number of examples.

    ``golds[i]``: example i's gold answer texts (empty for a question the context does not
    answer); ``predicted[i]``: its predicted answer ("" for no answer). When some examples
    are unanswerable, the scores over the answerable ones (``has_ans_*``) and over the
    unanswerable ones (``no_ans_*``) come too, as the official script's HasAns/NoAns.
    """
    if len(golds) != len(predicted):
        raise ValueError(f"{len(golds)} gold answer lists for {len(predicted)} predictions")
    per_example = [example_scores(g, p) for g, p in zip(golds, predicted, strict=True)]
    answerable = [bool(g) for g in golds]

    def over(keep: Sequence[bool]) -> tuple[float, float, int]:
        chosen = [s for s, k in zip(per_example, keep, strict=True) if k]
        if not chosen:
            return 0.0, 0.0, 0
        total = len(chosen)
        return (
            100.0 * sum(e for e, _ in chosen) / total,
            100.0 * sum(f for _, f in chosen) / total,
            total,
        )

    em, f, total = over([True] * len(per_example))
    out: dict[str, float | int] = {"exact_match": em, "f1": f, "total": total}
    if not all(answerable):
        for prefix, keep in (("has_ans", answerable), ("no_ans", [not a for a in answerable])):
            em, f, total = over(keep)
            out |= {f"{prefix}_exact": em, f"{prefix}_f1": f, f"{prefix}_total": total}
    return out
