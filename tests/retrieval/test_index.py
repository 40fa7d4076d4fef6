"""The index folder: each kind round-trips through plain faiss, and a broken folder is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from kubetune.errors import ConfigError
from kubetune.retrieval import index as ix
from kubetune.retrieval.fusion import fuse

COUNT, DIM = 300, 16


def unit_rows(count: int, dim: int = DIM, seed: int = 0) -> Any:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def corpus() -> tuple[Any, list[str], list[str]]:
    ids = [f"doc-{i:03d}" for i in range(COUNT)]
    texts = [f"document {i} about topic{i % 5}" for i in range(COUNT)]
    return unit_rows(COUNT), ids, texts


@pytest.fixture(scope="module")
def folders(
    corpus: tuple[Any, list[str], list[str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    vectors, ids, texts = corpus
    root = tmp_path_factory.mktemp("indexes")
    for kind in ix.KINDS:
        ix.write(root / kind, vectors, ids, texts, {"encoder": {"name": "test"}}, kind=kind)
    return {kind: root / kind for kind in ix.KINDS}


@pytest.mark.parametrize("kind", ix.KINDS)
def test_round_trip_through_plain_faiss(
    kind: str, folders: dict[str, Path], corpus: tuple[Any, list[str], list[str]]
) -> None:
    vectors, ids, texts = corpus
    folder = folders[kind]
    assert sorted(p.name for p in folder.iterdir()) == [
        "bm25", "docs.jsonl", "index.faiss", "index.json"
    ]  # fmt: skip
    meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    assert {k: meta[k] for k in ("kind", "dim", "count", "metric")} == {
        "kind": kind, "dim": DIM, "count": COUNT, "metric": "ip"
    }  # fmt: skip
    assert meta["encoder"] == {"name": "test"}

    # Plain faiss, no kubetune: each vector finds itself first, at cosine 1, and position i
    # is docs.jsonl's line i.
    raw = faiss.read_index(str(folder / "index.faiss"))
    scores, positions = raw.search(vectors, 1)
    assert positions[:, 0].tolist() == list(range(COUNT))
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    lines = (folder / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": i, "text": t} for i, t in zip(ids, texts, strict=True)
    ]

    loaded = ix.Index.load(folder)
    hits = loaded.search(vectors, 3)
    assert [ranking[0][0] for ranking in hits] == ids
    assert all(len(ranking) == 3 for ranking in hits)
    assert all(r[0][1] >= r[1][1] >= r[2][1] for r in hits)
    assert loaded.doc("doc-007").text == "document 7 about topic2"
    assert loaded.meta == meta


def test_search_settings_are_kept(folders: dict[str, Path]) -> None:
    ivf_meta = json.loads((folders["ivf"] / "index.json").read_text(encoding="utf-8"))
    nlist = ix.ivf_lists(COUNT)
    assert ivf_meta["params"] == {"nlist": nlist, "nprobe": ix.ivf_nprobe(nlist)}
    assert 1 < ivf_meta["params"]["nprobe"] < nlist
    # faiss keeps nprobe and efSearch in the file itself...
    ivf = faiss.read_index(str(folders["ivf"] / "index.faiss"))
    assert faiss.extract_index_ivf(ivf).nprobe == ivf_meta["params"]["nprobe"]
    hnsw = faiss.read_index(str(folders["hnsw"] / "index.faiss"))
    assert isinstance(hnsw, faiss.IndexHNSWFlat)
    assert hnsw.hnsw.efSearch == ix.HNSW_EF_SEARCH
    assert hnsw.metric_type == faiss.METRIC_INNER_PRODUCT


def edited_copy(folder: Path, to: Path, **params: Any) -> Path:
    """A copy of index ``folder`` at ``to`` with index.json's params updated."""
    shutil.copytree(folder, to)
    meta = json.loads((to / "index.json").read_text(encoding="utf-8"))
    meta["params"].update(params)
    (to / "index.json").write_text(json.dumps(meta), encoding="utf-8")
    return to


def test_index_json_params_are_applied_on_load(folders: dict[str, Path], tmp_path: Path) -> None:
    ivf = ix.Index.load(edited_copy(folders["ivf"], tmp_path / "ivf", nprobe=3))
    assert faiss.extract_index_ivf(ivf.faiss).nprobe == 3
    hnsw = ix.Index.load(edited_copy(folders["hnsw"], tmp_path / "hnsw", efSearch=200))
    assert isinstance(hnsw.faiss, faiss.IndexHNSWFlat)
    assert hnsw.faiss.hnsw.efSearch == 200
    broken = edited_copy(folders["ivf"], tmp_path / "broken", nprobe=0)
    with pytest.raises(ConfigError, match=r"params.nprobe must be a whole number >= 1, got 0"):
        ix.Index.load(broken)


def test_auto_picks_flat_below_the_threshold(tmp_path: Path) -> None:
    meta = ix.write(tmp_path, unit_rows(20), [str(i) for i in range(20)], ["some text"] * 20, {})
    assert meta["kind"] == "flat" and meta["params"] == {}
    assert ix.choose_kind(ix.FLAT_MAX - 1) == "flat"
    assert ix.choose_kind(ix.FLAT_MAX) == "hnsw"
    assert ix.choose_kind(10, "ivf") == "ivf"
    with pytest.raises(ConfigError, match="index kind 'annoy': use auto, flat, ivf, hnsw"):
        ix.choose_kind(10, "annoy")


def test_bm25_and_hybrid_search_from_a_loaded_folder(
    folders: dict[str, Path], corpus: tuple[Any, list[str], list[str]]
) -> None:
    vectors, _, _ = corpus
    loaded = ix.Index.load(folders["flat"])
    [words] = loaded.search_bm25(["document 42"], 5)
    assert words[0][0] == "doc-042"  # "42" is in that text only; "document" in all
    # Hybrid: dense for vector 7 and BM25 for "topic3" fused, the same as fusing by hand.
    [hybrid] = loaded.search_hybrid(vectors[7:8], ["topic3"], 5)
    dense = loaded.search(vectors[7:8], ix.HYBRID_DEPTH)[0]
    sparse = loaded.search_bm25(["topic3"], ix.HYBRID_DEPTH)[0]
    assert len(hybrid) == 5 and hybrid == fuse([dense, sparse], limit=5)
    with pytest.raises(ValueError, match="1 query vectors for 2 queries"):
        loaded.search_hybrid(vectors[:1], ["a", "b"], 5)


def test_rewriting_a_folder_replaces_it_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    ix.write(tmp_path, unit_rows(30), [f"a{i}" for i in range(30)], ["old text"] * 30, {})
    ix.write(tmp_path, unit_rows(10, seed=1), [f"b{i}" for i in range(10)], ["new"] * 10, {})
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert not [n for n in names if n.endswith(".tmp")]
    loaded = ix.Index.load(tmp_path)
    assert len(loaded) == 10 and loaded.bm25.ids == [f"b{i}" for i in range(10)]


# --- a broken folder is a ConfigError naming its file -------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Path:
    ix.write(tmp_path / "idx", unit_rows(12), [f"d{i}" for i in range(12)], ["text here"] * 12, {})
    return tmp_path / "idx"


def test_missing_index_faiss(small: Path) -> None:
    (small / "index.faiss").unlink()
    with pytest.raises(ConfigError, match=r"/idx/index\.faiss: missing; write the index again"):
        ix.Index.load(small)


def test_index_faiss_that_is_not_one(small: Path) -> None:
    (small / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(ConfigError, match=r"/idx/index\.faiss: not a FAISS index"):
        ix.Index.load(small)


def test_docs_count_differs_from_the_index(small: Path) -> None:
    lines = (small / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    (small / "docs.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"/idx/docs\.jsonl: 11 documents, but index\.faiss holds 12 vectors"
    ):
        ix.Index.load(small)


def test_bad_docs_row_missing_index_json_and_other_documents_in_bm25(
    small: Path, tmp_path: Path
) -> None:
    (small / "docs.jsonl").write_text('{"id": 1, "text": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"docs\.jsonl:1: each line must be"):
        ix.Index.load(small)
    (small / "index.json").unlink()
    with pytest.raises(ConfigError, match=r"/idx/index\.json: missing; the index was not written"):
        ix.Index.load(small)
    with pytest.raises(ConfigError, match="no index folder here"):
        ix.Index.load(tmp_path / "nowhere")

    other = tmp_path / "other"
    ix.write(other, unit_rows(12), [f"e{i}" for i in range(12)], ["text here"] * 12, {})
    ix.write(small, unit_rows(12), [f"d{i}" for i in range(12)], ["text here"] * 12, {})
    shutil.rmtree(small / "bm25")
    shutil.copytree(other / "bm25", small / "bm25")
    loaded = ix.Index.load(small)  # BM25 is read on first use
    with pytest.raises(ConfigError, match=r"/idx/bm25: indexes other documents than docs\.jsonl"):
        loaded.search_bm25(["text"], 3)


def test_index_json_disagreeing_with_index_faiss(small: Path) -> None:
    meta = json.loads((small / "index.json").read_text(encoding="utf-8"))
    (small / "index.json").write_text(json.dumps({**meta, "count": 13}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"index\.faiss: 12 vectors of 16 dimensions, but "):
        ix.Index.load(small)
    (small / "index.json").write_text(json.dumps({**meta, "metric": "l2"}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r'index\.json: metric must be "ip"'):
        ix.Index.load(small)
    (small / "index.json").write_text(json.dumps({**meta, "params": []}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"index\.json: params must be an object"):
        ix.Index.load(small)
    (small / "index.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"index\.json: not JSON"):
        ix.Index.load(small)


def test_write_checks_its_input(tmp_path: Path) -> None:
    rows = unit_rows(3)
    with pytest.raises(ValueError, match="L2-normalised: row 0 has norm 2"):
        ix.write(tmp_path, rows * 2, ["a", "b", "c"], ["words"] * 3, {})
    with pytest.raises(ConfigError, match="document id 'a' is given twice"):
        ix.write(tmp_path, rows, ["a", "b", "a"], ["words"] * 3, {})
    with pytest.raises(ValueError, match="3 vectors, 2 ids and 3 texts"):
        ix.write(tmp_path, rows, ["a", "b"], ["words"] * 3, {})
    with pytest.raises(ValueError, match="meta may not set count, kind"):
        ix.write(tmp_path, rows, ["a", "b", "c"], ["words"] * 3, {"kind": "x", "count": 1})
    with pytest.raises(ValueError, match="2-D array"):
        ix.write(tmp_path, rows[0], ["a"], ["words"], {})
    assert not list(tmp_path.iterdir())
    loaded = ix.Index.build(rows, ["a", "b", "c"], ["words"] * 3)
    with pytest.raises(ValueError, match="vectors have 8 dimensions, the index 16"):
        loaded.search(unit_rows(1, dim=8), 2)
    assert loaded.search(rows[:0], 2) == []
    assert [len(r) for r in loaded.search(rows, 10)] == [3, 3, 3]  # k above the count
