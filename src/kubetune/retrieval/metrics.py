"""Recall@k, MRR@10 and nDCG@10 of rankings, computed by sentence-transformers.

The arithmetic is ``InformationRetrievalEvaluator.compute_metrics``'s, the evaluator most
retrieval fine-tuning reports with, so figures here and in a sentence-transformers training
log mean the same thing. It is given the rankings we produced (FAISS, BM25, fusion), not a
model, so one code path scores every kind of search. What it computes, per query, averaged
over queries:

- ``recall@k``: relevant documents among the first k / relevant documents;
- ``mrr@10``: 1 / the rank of the first relevant document, 0 if none is in the first 10;
- ``ndcg@10``: Σ 1/log2(rank + 1) over relevant documents in the first 10, divided by the
  same sum for an ideal ranking (every relevant document first); relevance is binary.

A ranking is scored in the order given: the evaluator re-sorts results by score (ties by
doc id), so it is handed each document's position as its score, and equal scores in our
rankings keep the order the search chose. Queries are those with at least one relevant
document in ``qrels``; one that has no ranking scores 0 (as ``trec_eval -c`` counts it), and
rankings of queries outside ``qrels`` are ignored. Importing sentence-transformers imports
torch (seconds), so it happens on the first call, not on import of this module.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

#: A ranking: (doc id, score), best first.
Ranking = Sequence[tuple[str, float]]
#: The cut-offs of recall reported by default.
RECALL_AT = (1, 5, 10, 100)
#: The cut-off of MRR and nDCG.
CUTOFF = 10


def metric_names(recall_at: Sequence[int] = RECALL_AT) -> list[str]:
    """The keys :func:`evaluate` returns, in its order."""
    return [*(f"recall@{k}" for k in recall_at), f"mrr@{CUTOFF}", f"ndcg@{CUTOFF}"]


def evaluate(
    rankings: Mapping[str, Ranking],
    qrels: Mapping[str, Collection[str]],
    *,
    recall_at: Sequence[int] = RECALL_AT,
) -> dict[str, float]:
    """``{"recall@1": …, "recall@5": …, "recall@10": …, "recall@100": …, "mrr@10": …,
    "ndcg@10": …}`` (recall keys follow ``recall_at``), each a mean over the queries of
    ``qrels`` (query id → relevant doc ids) that have a relevant document.

    Raises ``ValueError`` when no query has one, a cut-off is below 1, or a ranking names a
    document twice (it would count twice).
    """
    relevant = {query: set(docs) for query, docs in qrels.items() if docs}
    if not relevant:
        raise ValueError("no query has a relevant document: nothing to score")
    if not recall_at or min(recall_at) < 1:
        raise ValueError(f"recall cut-offs must be at least 1, got {list(recall_at)}")
    for query in relevant:
        ids = [doc for doc, _ in rankings.get(query, ())]
        if len(set(ids)) != len(ids):
            raise ValueError(f"the ranking of query {query!r} names a document more than once")
    evaluator = _evaluator(relevant, list(recall_at))
    results = [
        [
            {"corpus_id": doc, "score": -float(position)}
            for position, (doc, _) in enumerate(rankings.get(query, ()))
        ]
        for query in evaluator.queries_ids
    ]
    raw = evaluator.compute_metrics(results)
    out = {f"recall@{k}": float(raw["recall@k"][k]) for k in recall_at}
    out[f"mrr@{CUTOFF}"] = float(raw["mrr@k"][CUTOFF])
    out[f"ndcg@{CUTOFF}"] = float(raw["ndcg@k"][CUTOFF])
    return out


def _evaluator(relevant: dict[str, set[str]], recall_at: list[int]) -> Any:
    # Here since sentence-transformers 5.4 (sentence_transformers.evaluation before).
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    # Query texts and the corpus are only read when the evaluator encodes with a model;
    # compute_metrics reads ids and relevant_docs alone.
    return InformationRetrievalEvaluator(
        queries={query: query for query in relevant},
        corpus={},
        relevant_docs=relevant,
        mrr_at_k=[CUTOFF],
        ndcg_at_k=[CUTOFF],
        accuracy_at_k=[],
        precision_recall_at_k=recall_at,
        map_at_k=[],
        write_csv=False,
    )
