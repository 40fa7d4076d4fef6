"""Retrieval metrics against figures worked out by hand."""

from __future__ import annotations

import math

import pytest

from kubetune.retrieval.metrics import evaluate, metric_names

from conftest import ML_GROUP

# sentence-transformers computes the metrics, and importing it imports torch.
pytestmark = pytest.mark.xdist_group(ML_GROUP)


def ranking(*ids: str) -> list[tuple[str, float]]:
    """Ids best first, with falling scores."""
    return [(ident, 1.0 - i / 100) for i, ident in enumerate(ids)]


def test_one_query_per_case_by_hand() -> None:
    one_relevant_third = ranking("a", "b", "c", "d", "e")  # relevant: c, rank 3
    two_relevant = ranking("a", "b", "c", "d")  # relevant: b (rank 2) and d (rank 4)
    beyond_ten = ranking(*(f"x{i}" for i in range(10)), "r")  # relevant: r, rank 11
    rankings = {"q1": one_relevant_third, "q2": two_relevant, "q3": beyond_ten}
    qrels = {"q1": {"c"}, "q2": {"b", "d"}, "q3": {"r"}}

    # q1: found at rank 3 → recall 0 at 1, 1 from 5 on; RR 1/3; nDCG (1/log2(3+1)) / 1 = 1/2.
    # q2: b at 2, d at 4 → recall@1 0, @5 2/2 = 1; RR 1/2;
    #     nDCG = (1/log2(3) + 1/log2(5)) / (1/log2(2) + 1/log2(3)), ideal = both first.
    # q3: rank 11 → recall 0 at 1, 5, 10 and 1 at 100; RR@10 0; nDCG@10 0.
    ndcg_q2 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    expected = {
        "recall@1": (0 + 0 + 0) / 3,
        "recall@5": (1 + 1 + 0) / 3,
        "recall@10": (1 + 1 + 0) / 3,
        "recall@100": (1 + 1 + 1) / 3,
        "mrr@10": (1 / 3 + 1 / 2 + 0) / 3,
        "ndcg@10": (1 / 2 + ndcg_q2 + 0) / 3,  # ndcg_q2 = 0.7967...
    }
    got = evaluate(rankings, qrels)
    assert list(got) == metric_names() == list(expected)
    assert got == pytest.approx(expected, abs=1e-12)


def test_recall_counts_each_relevant_document() -> None:
    # Three relevant, two of them in the top 5 and one at rank 8: recall@5 = 2/3,
    # recall@10 = 3/3; the first at rank 1 → RR 1.
    got = evaluate(
        {"q": ranking("r1", "a", "r2", "b", "c", "d", "e", "r3")},
        {"q": ["r1", "r2", "r3"]},
        recall_at=(1, 5, 10),
    )
    assert got["recall@1"] == pytest.approx(1 / 3)
    assert got["recall@5"] == pytest.approx(2 / 3)
    assert got["recall@10"] == pytest.approx(1.0)
    assert got["mrr@10"] == pytest.approx(1.0)
    assert list(got) == ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"]


def test_ranking_order_counts_not_the_scores() -> None:
    # Equal scores: the order given is the ranking (sentence-transformers alone would put
    # "a" before "z" by id). Relevant "z" is first → RR 1, not 1/2.
    tied = [("z", 0.5), ("a", 0.5)]
    assert evaluate({"q": tied}, {"q": {"z"}})["mrr@10"] == 1.0
    assert evaluate({"q": tied}, {"q": {"a"}})["mrr@10"] == 0.5


def test_unranked_queries_score_zero_and_unjudged_ones_are_ignored() -> None:
    got = evaluate(
        {"q1": ranking("a"), "extra": ranking("a")},  # q2 has no ranking; extra no qrels
        {"q1": {"a"}, "q2": {"b"}, "q3": set()},  # q3 judges nothing: not a query here
    )
    # q1 perfect, q2 nothing: every metric is (1 + 0) / 2.
    assert got == pytest.approx(dict.fromkeys(metric_names(), 0.5))


@pytest.mark.parametrize(
    ("rankings", "qrels", "match"),
    [
        ({"q": ranking("a")}, {"q": set()}, "no query has a relevant document"),
        ({"q": ranking("a", "a")}, {"q": {"a"}}, "names a document more than once"),
    ],
)
def test_rejects(
    rankings: dict[str, list[tuple[str, float]]], qrels: dict[str, set[str]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(rankings, qrels)
    with pytest.raises(ValueError, match="at least 1"):
        evaluate({"q": ranking("a")}, {"q": {"a"}}, recall_at=(0, 5))
