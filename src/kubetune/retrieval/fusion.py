"""Reciprocal-rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

Each document scores Σ 1 / (k + rank) over the rankings it appears in, rank counted from 1;
a ranking that misses it adds nothing. k = 60 is the paper's constant: it damps the lead of
the very first ranks, so one list's top hit does not outvote agreement between lists. Only
ranks are used, never the scores, which is why BM25 scores (unbounded) and cosine
similarities (-1 to 1) can be fused without calibrating one against the other.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The paper's constant.
K = 60


def fuse(
    rankings: Sequence[Sequence[tuple[str, float]]], *, k: int = K, limit: int | None = None
) -> list[tuple[str, float]]:
    """One query's rankings (each (doc id, score), best first) → the fused ranking of every
    document in any of them, (doc id, RRF score), best first, cut to ``limit`` if given.

    Equal RRF scores are ordered by the best rank the document reached, then by the ranking
    it reached it in, earlier first (fusing dense then BM25, dense breaks the tie): a total
    order, so the result never depends on dict or sort internals. A document listed twice in
    one ranking counts once, at its first (best) rank.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores: dict[str, float] = {}
    best: dict[str, tuple[int, int]] = {}  # doc → (best rank, first ranking holding it)
    for which, ranking in enumerate(rankings):
        seen: set[str] = set()
        for rank, (doc, _) in enumerate(ranking, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
            best[doc] = min(best.get(doc, (rank, which)), (rank, which))
    fused = sorted(scores.items(), key=lambda item: (-item[1], *best[item[0]]))
    return fused if limit is None else fused[:limit]


def fuse_all(
    per_query: Sequence[Sequence[Sequence[tuple[str, float]]]],
    *,
    k: int = K,
    limit: int | None = None,
) -> list[list[tuple[str, float]]]:
    """:func:`fuse` for each query: ``per_query[i]`` holds query i's rankings."""
    return [fuse(rankings, k=k, limit=limit) for rankings in per_query]
