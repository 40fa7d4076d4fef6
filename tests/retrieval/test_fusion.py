"""Reciprocal-rank fusion, worked out by hand."""

from __future__ import annotations

import pytest

from kubetune.retrieval.fusion import K, fuse, fuse_all


def ids(*names: str) -> list[tuple[str, float]]:
    return [(name, 100.0 - i) for i, name in enumerate(names)]


def test_fuse_by_hand() -> None:
    dense = ids("a", "b", "c")
    bm25 = ids("c", "d", "a", "e")
    # a: rank 1 and 3 → 1/61 + 1/63     c: rank 3 and 1 → 1/63 + 1/61 (a tie with a)
    # b: rank 2 in dense → 1/62         d: rank 2 in bm25 → 1/62      (a tie with b)
    # e: rank 4 in bm25 → 1/64
    # Ties: same best rank, so the earlier ranking's document first: a before c, b before d.
    fused = fuse([dense, bm25])
    assert [doc for doc, _ in fused] == ["a", "c", "b", "d", "e"]
    scores = [score for _, score in fused]
    assert scores == pytest.approx([1 / 61 + 1 / 63] * 2 + [1 / 62] * 2 + [1 / 64])
    assert K == 60


def test_agreement_beats_one_top_rank() -> None:
    # x tops one list only: 1/(60+1) = 0.01639. y is second in both: 2/(60+2) = 0.03226.
    fused = fuse([ids("x", "y"), ids("z", "y")])
    assert [doc for doc, _ in fused] == ["y", "x", "z"]
    assert fused[0][1] == pytest.approx(2 / 62)


def test_k_limit_and_repeats() -> None:
    # k = 0: a = 1/1 + 1/2 = 1.5; b = 1/2 = 0.5 (its repeat at rank 3 is ignored); c = 1/1.
    fused = fuse([ids("a", "b", "b"), ids("c", "a")], k=0)
    assert fused == [("a", 1.5), ("c", 1.0), ("b", 0.5)]
    assert fuse([ids("a", "b", "b"), ids("c", "a")], k=0, limit=2) == [("a", 1.5), ("c", 1.0)]
    assert fuse([]) == []
    with pytest.raises(ValueError, match="k must be >= 0"):
        fuse([ids("a")], k=-1)


def test_fuse_all_is_per_query() -> None:
    assert fuse_all([[ids("a"), ids("b")], [ids("c")]], limit=1) == [
        [("a", 1 / 61)],
        [("c", 1 / 61)],
    ]
