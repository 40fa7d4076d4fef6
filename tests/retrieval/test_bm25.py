"""BM25 through bm25s: ranking, stopwords, no stemming, saving and loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.errors import ConfigError
from kubetune.retrieval.bm25 import BM25, tokenize

IDS = ["cats", "dogs", "both", "stocks"]
TEXTS = [
    "The cat sat on the mat with another cat.",
    "A dog chased the dog next door.",
    "The cat and the dog are friends.",
    "Shares and stocks fell on the exchange.",
]


def test_tokenize_drops_stopwords_and_does_not_stem() -> None:
    assert tokenize(["The Cats sat on a mat", "the of and"]) == [["cats", "sat", "mat"], []]


def test_search_ranks_by_term_frequency_and_leaves_out_non_matches() -> None:
    bm25 = BM25.build(IDS, TEXTS)
    cat, dog, nothing, stopwords = bm25.search(["cat", "dog", "zebra", "the and of"], k=10)
    # "cat" twice in a text of the same length beats once: cats, then both; the others
    # share no term with the query and are not ranked at all.
    assert [doc for doc, _ in cat] == ["cats", "both"]
    assert cat[0][1] > cat[1][1] > 0
    assert [doc for doc, _ in dog] == ["dogs", "both"]
    assert nothing == [] and stopwords == []
    # k cuts; k above the corpus size is fine.
    assert bm25.search(["cat dog"], k=1)[0][0][0] in {"cats", "dogs", "both"}
    assert len(bm25.search(["cat dog"], k=1)[0]) == 1
    assert bm25.search([], k=3) == []
    with pytest.raises(ValueError, match="k must be at least 1"):
        bm25.search(["cat"], k=0)


def test_save_and_load_give_the_same_results(tmp_path: Path) -> None:
    bm25 = BM25.build(IDS, TEXTS)
    bm25.save(tmp_path / "bm25")
    loaded = BM25.load(tmp_path / "bm25")
    assert loaded.ids == IDS
    queries = ["cat", "dog friends", "stocks exchange"]
    assert loaded.search(queries, k=4) == bm25.search(queries, k=4)
    assert bm25.params["tokenizer"]["stopwords"] == "en"


def test_load_names_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no BM25 index here \(params.index.json missing\)"):
        BM25.load(tmp_path)


def test_build_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError, match="2 ids for 1 texts"):
        BM25.build(["a", "b"], ["text"])
    with pytest.raises(ValueError, match="no documents"):
        BM25.build([], [])
    with pytest.raises(ConfigError, match="none of the 2 texts has a word BM25 can index"):
        BM25.build(["a", "b"], ["", "the a 1"])
