"""Retrieval sets: reading a split by the contract, and building one from articles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune.errors import ConfigError
from kubetune.retrieval import sets


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def query(ident: str, text: str = "q", positive: str = "p") -> dict[str, Any]:
    return {"id": ident, "query": text, "positive": positive}


def test_with_a_corpus_queries_search_all_of_it(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "test.jsonl", [query("b", "find b", "B"), query("c", "find c", "C")])
    write_jsonl(tmp_path / "train.jsonl", [query("a", "find a", "A")])
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": x, "text": x.upper()} for x in "abcd"])
    split = sets.load(tmp_path, "test")
    assert split == sets.Split(
        corpus_ids=["a", "b", "c", "d"],
        corpus_texts=["A", "B", "C", "D"],
        query_ids=["b", "c"],
        query_texts=["find b", "find c"],
        qrels={"b": {"b"}, "c": {"c"}},
    )


def test_without_a_corpus_the_split_searches_its_own_positives(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "validation.jsonl", [query("x", "qx", "px"), query("y", "qy", "py")])
    corpus_ids, corpus_texts, query_ids, query_texts, qrels = sets.load(tmp_path, "validation")
    assert (corpus_ids, corpus_texts) == (["x", "y"], ["px", "py"])
    assert (query_ids, query_texts, qrels) == (["x", "y"], ["qx", "qy"], {"x": {"x"}, "y": {"y"}})


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"train.jsonl": [query("a")]}, r"test\.jsonl: no such file; .* \(found: train\.jsonl\)"),
        ({"test.jsonl": []}, r"test\.jsonl: no queries"),
        (
            {"test.jsonl": [query("a"), {"id": "b", "query": "q"}]},
            r'test\.jsonl:2: a query row is \{"id": text, "query": text, "positive": text\}',
        ),
        ({"test.jsonl": [{"id": 1, "query": "q", "positive": "p"}]}, r"test\.jsonl:1: a query"),
        (
            {"test.jsonl": [query("a"), query("b"), query("a")]},
            r"test\.jsonl:3: id 'a' repeats line 1",
        ),
        (
            {"test.jsonl": [query("a"), query("z")], "corpus.jsonl": [{"id": "a", "text": "t"}]},
            r"test\.jsonl:2: id 'z' has no document in corpus\.jsonl",
        ),
        (
            {"test.jsonl": [query("a")], "corpus.jsonl": [{"id": "a"}]},
            r'corpus\.jsonl:1: a corpus row is \{"id": text, "text": text\}',
        ),
        (
            {"test.jsonl": [query("a")], "corpus.jsonl": [{"id": "a", "text": "t"}] * 2},
            r"corpus\.jsonl:2: id 'a' repeats line 1",
        ),
        ({"test.jsonl": [query("a")], "corpus.jsonl": []}, r"corpus\.jsonl: no documents"),
    ],
)
def test_mistakes_name_the_file_and_line(
    files: dict[str, list[dict[str, Any]]], match: str, tmp_path: Path
) -> None:
    for name, rows in files.items():
        write_jsonl(tmp_path / name, rows)
    with pytest.raises(ConfigError, match=match):
        sets.load(tmp_path, "test")


def test_not_json_is_named_by_line(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text(json.dumps(query("a")) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"test\.jsonl:2: not JSON"):
        sets.load(tmp_path, "test")


# --- building from articles ----------------------------------------------------------------


def test_headline_and_body() -> None:
    assert sets.headline_and_body("Title\n\nPara one.\n\nPara two.\n") == (
        "Title",
        "Para one.\n\nPara two.",
    )
    assert sets.headline_and_body("Only a title") == ("Only a title", "")


def test_copies_leave_one_article_per_group() -> None:
    articles = [
        ("a", "Rates held\n\nThe bank held rates."),
        ("b", "Film wins prize\n\nA film won."),
        ("c", "Rates held\n\nThe bank held rates."),  # a, word for word
        ("d", "Bank holds rates\n\nThe  BANK held rates."),  # a's body, case and spacing aside
        ("e", "Film wins prize\n\nA film won a prize, in a later version."),  # b's headline
        ("f", "Unrelated\n\nSomething else."),
        ("g", "Headline alone"),  # no body
        ("h", "film WINS prize\n\nAnother body."),  # b's headline, case aside
        ("i", "Other headline\n\nA film won a prize, in a later version."),  # e's body: chain
    ]
    kept, notes = sets.headline_pairs(articles)
    assert kept == {
        "a": ("Rates held", "The bank held rates."),
        "b": ("Film wins prize", "A film won."),
        "f": ("Unrelated", "Something else."),
    }
    assert notes == [
        "1 article(s) without a body left out: g",
        "5 articles left out, each sharing its headline or its body with an earlier one "
        "(1 repeat the whole article; 2 groups): a group's first article is kept, so every "
        "query has one answer; 3 of 9 written",
    ]


def test_distinct_articles_are_all_kept() -> None:
    kept, notes = sets.headline_pairs([("x", "One\n\nBody one."), ("y", "Two\n\nBody two.")])
    assert list(kept) == ["x", "y"] and notes == []
