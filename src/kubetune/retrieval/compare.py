"""Dense, BM25 and hybrid search of one retrieval set, side by side.

The corpus is encoded once and indexed like any index folder (:class:`index.Index`, exact
flat search unless asked otherwise, so the comparison is of the encoder and not of an
approximate index); each query is searched three ways, each ranking taken
:data:`DEPTH` deep (recall@100 needs 100), and all three are scored by
:func:`metrics.evaluate` against the same relevance judgements:

- ``dense``: cosine similarity of the encoder's embeddings (FAISS);
- ``bm25``: BM25 over the same texts (bm25s, see :mod:`kubetune.retrieval.bm25`);
- ``hybrid``: reciprocal-rank fusion (k = 60) of the two rankings.

``encode`` is any function from texts to L2-normalised float32 rows, in input order:
:func:`kubetune.predict.encode`'s ``Encoder.encode``, or a sentence-transformers model's
``encode(texts, normalize_embeddings=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from kubetune.retrieval import metrics
from kubetune.retrieval.index import Index

#: Texts → L2-normalised float32 embeddings [len(texts), dim], in input order.
Encode = Callable[[Sequence[str]], Any]
#: How deep each ranking is taken (the largest recall cut-off).
DEPTH = max(metrics.RECALL_AT)
#: The searches compared, in report order.
METHODS = ("dense", "bm25", "hybrid")


def compare(
    encode: Encode,
    corpus_ids: Sequence[str],
    corpus_texts: Sequence[str],
    query_ids: Sequence[str],
    query_texts: Sequence[str],
    qrels: Mapping[str, Collection[str]],
    *,
    kind: str = "flat",
) -> dict[str, Any]:
    """``{"dense": metrics, "bm25": metrics, "hybrid": metrics, "counts": {"corpus": n,
    "queries": m}}``, each metrics dict :func:`metrics.evaluate`'s over the queries given
    that ``qrels`` judges (m of them; the others are searched but not scored). A
    :class:`~kubetune.retrieval.sets.Split` unpacks into the five lists:
    ``compare(encode, *sets.load(folder, "test"))``.
    """
    if len(query_ids) != len(query_texts):
        raise ValueError(f"{len(query_ids)} query ids for {len(query_texts)} query texts")
    doc_vectors = _encoded(encode, corpus_texts)
    query_vectors = _encoded(encode, query_texts)
    index = Index.build(doc_vectors, corpus_ids, corpus_texts, kind=kind)
    depth = min(DEPTH, len(index))
    rankings = {
        "dense": index.search(query_vectors, depth),
        "bm25": index.search_bm25(query_texts, depth),
        "hybrid": index.search_hybrid(query_vectors, query_texts, depth, depth=depth),
    }
    judged = {ident: qrels[ident] for ident in query_ids if qrels.get(ident)}
    report: dict[str, Any] = {
        method: metrics.evaluate(dict(zip(query_ids, rankings[method], strict=True)), judged)
        for method in METHODS
    }
    report["counts"] = {"corpus": len(index), "queries": len(judged)}
    return report


def _encoded(encode: Encode, texts: Sequence[str]) -> Any:
    vectors = np.asarray(encode(list(texts)), dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(texts):
        raise ValueError(f"encode gave shape {vectors.shape} for {len(texts)} texts")
    return vectors
