"""Retrieval: a FAISS index of embeddings with BM25 beside it, and how well each finds things.

    sets      a retrieval set on disk (queries, their one relevant document, a corpus) → lists
    index     the index folder: FAISS (flat, IVF or HNSW) + docs.jsonl + index.json + bm25/
    bm25      BM25 over the same documents (bm25s)
    fusion    reciprocal-rank fusion of several rankings (hybrid search)
    metrics   recall@k, MRR@10, nDCG@10 of rankings against relevance judgements
    compare   dense vs BM25 vs hybrid on one retrieval set, side by side

A ranking is a list of ``(doc id, score)``, best first. Importing this package imports
nothing heavy: ``sets`` is standard library only (``kubetune data prepare`` uses it), the
others import faiss or bm25s when imported, and ``metrics`` imports sentence-transformers
(and so torch) only when called.
"""
