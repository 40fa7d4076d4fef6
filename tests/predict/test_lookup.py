"""`kubetune search` from a stored index: fetched once into a cache keyed by its manifest,
BM25 answered without importing torch, an unfinished or missing index one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kubetune.predict import lookup
from kubetune.predict.shards import Output
from kubetune.store import Store, open_store

from conftest import cli_sequence, run_cli

DOCS = {
    "d0": "rail workers strike over pay",
    "d1": "chelsea win the league title",
    "d2": "new mobile phone chips from intel",
}


def stored_index(store: Store, prefix: str, tmp_path: Path) -> str:
    """An index job's output folder in ``store``, as the last shard leaves it."""
    from kubetune.retrieval import index

    vectors = np.eye(3, 8, dtype=np.float32)
    folder = tmp_path / "built"
    index.write(folder, vectors, list(DOCS), list(DOCS.values()),
                {"encoder": {"source": "unused-by-bm25"}}, kind="flat")  # fmt: skip
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    output = Output(store, prefix)
    output.write_tree("index", files)
    return output.url


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_index_is_fetched_once_and_bm25_needs_no_encoder(
    tmp_path: Path, cache: Path, s3_env: str
) -> None:
    store = open_store(f"s3://runs/{tmp_path.name}")
    url = stored_index(store, "docs/docs-0123abcd", tmp_path)
    folder = lookup.fetch_index(url)
    assert folder.is_relative_to(cache) and (folder / "index.faiss").is_file()
    (folder / "docs.jsonl").write_text("tampered\n")  # a second fetch reads only the manifest
    assert lookup.fetch_index(url + "/index") == folder
    assert (folder / "docs.jsonl").read_text() == "tampered\n"
    searcher = lookup.Searcher(lookup.Searcher.load(str(tmp_path / "built")).index)
    hits, _seconds = searcher.search("strike over pay", 2, "bm25")
    assert hits[0][0] == "d0"


def test_search_cli_answers_bm25_queries_without_torch(tmp_path: Path, cache: Path) -> None:
    import os

    store = open_store(f"file://{tmp_path}/store")
    url = stored_index(store, "docs/docs-0123abcd", tmp_path)
    env = {**os.environ, "KUBETUNE_CACHE": str(cache)}
    args = ["search", url, "league title", "-k", "1", "--mode", "bm25"]
    (ran,) = cli_sequence([args], forbidden=("torch", "sentence_transformers"), env=env)
    assert ran["attempted"] == []
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "d1" in result.stdout and "chelsea win the league title" in result.stdout
    assert "1 hits of 3 documents (bm25)" in result.stderr


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("file-missing", "no index here; pass an index job's folder"),
        ("s3-unfinished", "no finished index here (no index/MANIFEST.json)"),
    ],
)
def test_no_index_is_one_line_and_exit_2(
    where: str, line: str, tmp_path: Path, cache: Path, s3_env: str
) -> None:
    uri = (
        f"file://{tmp_path}/nothing" if where == "file-missing" else f"s3://runs/{tmp_path.name}/x"
    )
    result = run_cli("search", uri, "query", "--mode", "bm25")
    assert result.returncode == 2, result.stderr
    assert line in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("search", str(tmp_path), "query", "--mode", "fuzzy")
    assert result.returncode == 2
