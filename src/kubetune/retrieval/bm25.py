"""BM25 over a corpus with bm25s: build from (ids, texts), save, load, search.

Texts are tokenized by bm25s' own tokenizer (lower case, words of two or more letters or
digits, bm25s' English stopwords removed) and not stemmed: bm25s stems only through
PyStemmer, which kubetune does not depend on, so "cats" does not match "cat". Scoring is
bm25s' default (Lucene's BM25, k1 = 1.5, b = 0.75). A document that shares no term with the
query scores 0 and is left out of the ranking, as a search engine leaves it out, so a
ranking can be shorter than k.

The saved folder is bm25s' own format (``BM25.save``), with the doc ids as its corpus
(``corpus.jsonl``, one ``{"id": …}`` per document in index order), so the folder alone
answers a search with ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s  # type: ignore[import-untyped]
import numpy as np

from kubetune.errors import ConfigError

#: The tokenizer's settings, recorded in index.json so a reader knows what a term is.
STOPWORDS = "en"
TOKENIZER = {"library": "bm25s", "stopwords": STOPWORDS, "stemmer": None, "lower": True}


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Each text's terms, as indexed and as searched."""
    tokens: list[list[str]] = bm25s.tokenize(
        list(texts), stopwords=STOPWORDS, stemmer=None, return_ids=False, show_progress=False
    )
    return tokens


class BM25:
    """A BM25 index of documents with ids."""

    def __init__(self, retriever: Any, ids: list[str]) -> None:
        self._retriever = retriever
        self.ids = ids

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str]) -> BM25:
        """Index ``texts``, known by ``ids`` (same order, unique)."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if not ids:
            raise ValueError("no documents to index")
        tokens = tokenize(texts)
        if not any(tokens):
            # bm25s cannot index an empty vocabulary (and nothing could match it).
            raise ConfigError(
                f"none of the {len(texts)} texts has a word BM25 can index (two or more "
                "letters or digits, not a stopword); give the documents their text"
            )
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return cls(retriever, list(ids))

    @property
    def params(self) -> dict[str, Any]:
        """Scoring and tokenizer settings, for index.json."""
        r = self._retriever
        return {"k1": r.k1, "b": r.b, "method": r.method, "tokenizer": TOKENIZER}

    def save(self, folder: Path) -> None:
        """Write bm25s' files into ``folder`` (created if missing)."""
        corpus = [{"id": ident} for ident in self.ids]
        self._retriever.save(
            str(folder), corpus=corpus, show_progress=False, raise_on_serialization_error=True
        )

    @classmethod
    def load(cls, folder: Path) -> BM25:
        """Read a folder :meth:`save` wrote; ``ConfigError`` naming it if it cannot."""
        params = folder / "params.index.json"
        if not params.is_file():
            raise ConfigError(f"{folder}: no BM25 index here ({params.name} missing); rebuild it")
        try:
            retriever = bm25s.BM25.load(str(folder), load_corpus=True, show_progress=False)
            ids = [str(row["id"]) for row in retriever.corpus]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{folder}: not a readable BM25 index ({exc}); rebuild it") from exc
        count = int(retriever.scores["num_docs"])
        if len(ids) != count:
            raise ConfigError(
                f"{folder / 'corpus.jsonl'}: {len(ids)} ids for {count} indexed documents; "
                "rebuild the BM25 index"
            )
        retriever.corpus = None  # retrieve() then answers with positions, mapped to ids here
        return cls(retriever, ids)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        """Per query, up to ``k`` (doc id, BM25 score), best first; equal scores in index
        order. Documents scoring 0 (no term in common) are left out."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not queries:
            return []
        depth = min(k, len(self.ids))
        positions, scores = self._retriever.retrieve(
            tokenize(queries), k=depth, show_progress=False, n_threads=0
        )
        out = []
        for row_positions, row_scores in zip(positions, scores, strict=True):
            hits = [
                (int(p), float(s))
                for p, s in zip(row_positions, row_scores, strict=True)
                if s > 0 and np.isfinite(s)
            ]
            hits.sort(key=lambda hit: (-hit[1], hit[0]))
            out.append([(self.ids[p], s) for p, s in hits])
        return out
