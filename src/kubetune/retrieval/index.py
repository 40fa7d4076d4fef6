"""The index folder: embeddings in FAISS, the documents beside them, BM25 over the same docs.

    index.faiss   faiss.write_index; L2-normalised float32 vectors searched by inner product
                  (= cosine), so a plain ``faiss.read_index`` loads and searches it
    docs.jsonl    one {"id", "text"} per vector, in index order
    bm25/         bm25s' own save format, the same documents (:mod:`kubetune.retrieval.bm25`)
    index.json    {"kind", "dim", "count", "metric": "ip", "params", "bm25", …} plus the
                  caller's fields (encoder, run, corpus); written last

Three kinds, chosen by ``kind="auto"`` from the number of vectors. Measured with
``benchmarks/bench_retrieval.py`` on 2 AMD EPYC cores shared with other work (times varied by
up to 2× between runs): 10k all-MiniLM-L6-v2 embeddings of BBC News sentences (384 dims)
queried with 1,000 headlines, top 10, recall@10 against exact search; "one query" is the
median time of a single query on one thread:

- ``flat`` (IndexFlatIP) below :data:`FLAT_MAX` vectors: exact, no training, nothing to
  tune, built at once. It reads every vector for every query, so its time grows with n·dim:
  one query takes 0.8-1.5 ms at 10k vectors and 12 ms at 100k (random vectors). Below 50k
  vectors (about 6 ms) an approximate index saves too little to pay for the recall it loses.
- ``hnsw`` (IndexHNSWFlat, inner product, M = 32, efConstruction = 80, efSearch =
  :data:`HNSW_EF_SEARCH`) from :data:`FLAT_MAX` on: one query in 0.3 ms at 10k, a graph walk
  that grows slowly with n; recall 0.987 (0.965 at efSearch 64, 0.996 at 256). It costs
  build time (1.3-2.9 s for 10k, 137 s for 100k random vectors) and memory (M links per
  vector). ``auto`` prefers it to IVF: no training, and better recall for the time.
- ``ivf`` (IndexIVFFlat, spherical k-means to nlist = 4·√n lists, nprobe = 4·√nlist), on
  request: builds faster (0.4-0.8 s for 10k, 23 s for 100k) and keeps no graph, for corpora
  too large to build a graph of in the time at hand. One query in 0.26 ms at 10k; recall
  0.944 (nprobe 80 of 400 lists; 0.885 at 40, 0.983 at 160).

On random vectors, which have no clusters or neighbourhoods to exploit, recall at the same
settings is far lower (10k: HNSW 0.93, IVF 0.58; 100k: 0.45 and 0.43): the figures above
hold for embeddings, and a corpus of unusual vectors should check its own.

``nprobe`` (IVF) and ``efSearch`` (HNSW) are search-time settings. faiss 1.15 keeps both in
index.faiss (checked by the tests); they are also written to index.json's ``params`` and set
from there on :meth:`Index.load`, so editing index.json tunes a built index, and an index
read by a faiss that does not keep them still searches as it was built to.

Every file is written under a temporary name and renamed into place; index.json is removed
first and written last, so a folder with an index.json is a complete one, and a reader in
the middle of a rewrite gets a :class:`ConfigError` rather than half of each version.
:meth:`Index.load` checks that the files agree (vector count, dimension, documents) and
names the file that does not.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from kubetune.atomic import TMP_SUFFIX, replacing, write_atomic
from kubetune.datafiles import json_rows
from kubetune.errors import ConfigError
from kubetune.retrieval.bm25 import BM25
from kubetune.retrieval.fusion import fuse

Kind = Literal["flat", "ivf", "hnsw"]
KINDS: tuple[Kind, ...] = ("flat", "ivf", "hnsw")

#: The folder's files (the shared contract's names).
INDEX_FILE, DOCS_FILE, META_FILE, BM25_DIR = "index.faiss", "docs.jsonl", "index.json", "bm25"
#: ``auto`` builds an exact flat index below this many vectors, HNSW from it on.
FLAT_MAX = 50_000
#: HNSW: links per vector, candidates kept while building and while searching.
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
#: How many hits of each side :meth:`Index.search_hybrid` fuses (at least k).
HYBRID_DEPTH = 100
#: How far from 1 a vector's L2 norm may be.
NORM_TOLERANCE = 1e-3
#: The fields of index.json this module owns; a caller's ``meta`` may not set them.
OWN_FIELDS = ("kind", "dim", "count", "metric", "params", "bm25")

Vectors = npt.NDArray[np.float32]
Ranking = list[tuple[str, float]]


@dataclass(frozen=True)
class Doc:
    """One indexed document."""

    id: str
    text: str


def choose_kind(count: int, kind: str = "auto") -> Kind:
    """The kind to build for ``count`` vectors: ``kind`` itself, or flat/hnsw for ``auto``."""
    if kind == "auto":
        return "flat" if count < FLAT_MAX else "hnsw"
    if kind not in KINDS:
        raise ConfigError(f"index kind {kind!r}: use auto, {', '.join(KINDS)}")
    return kind


def ivf_lists(count: int) -> int:
    """nlist for ``count`` vectors: 4·√n (faiss' guideline is 4·√n to 16·√n), at most n."""
    return max(1, min(count, round(4 * math.sqrt(count))))


def ivf_nprobe(nlist: int) -> int:
    """Lists searched per query: 4·√nlist (80 of 400 lists at 10k vectors, 20 %; 253 of
    4,000 at 1M, 6 %): recall@10 0.944 of exact search on 10k sentence embeddings, where
    2·√nlist gave 0.885."""
    return max(1, min(nlist, round(4 * math.sqrt(nlist))))


def _check_vectors(vectors: Any, dim: int | None = None) -> Vectors:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array [n, dim], got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"vectors have {array.shape[1]} dimensions, the index {dim}")
    if len(array):
        norms = np.linalg.norm(array, axis=1)
        off = np.flatnonzero(~(np.abs(norms - 1) <= NORM_TOLERANCE))
        if len(off):
            raise ValueError(
                f"vectors must be L2-normalised: row {off[0]} has norm {norms[off[0]]:.4g}"
            )
    return array


def build_faiss(vectors: Vectors, kind: Kind) -> tuple[faiss.Index, dict[str, Any]]:
    """A FAISS index of ``kind`` holding ``vectors`` (checked normalised), and its params."""
    count, dim = vectors.shape
    index: faiss.Index
    params: dict[str, Any]
    if kind == "flat":
        index, params = faiss.IndexFlatIP(dim), {}
    elif kind == "ivf":
        nlist = ivf_lists(count)
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.spherical = True  # centroids on the unit sphere, as the vectors are
        ivf.train(vectors)
        ivf.nprobe = ivf_nprobe(nlist)
        index, params = ivf, {"nlist": nlist, "nprobe": ivf.nprobe}
    else:
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        index = hnsw
        params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH}
    index.add(vectors)
    return index, params


def _apply_search_params(index: faiss.Index, kind: str, params: Mapping[str, Any]) -> None:
    """Set nprobe (ivf) or efSearch (hnsw) from index.json's params."""
    name = {"ivf": "nprobe", "hnsw": "efSearch"}.get(kind)
    if name is None or name not in params:
        return
    value = params[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"index.json: params.{name} must be a whole number >= 1, got {value!r}")
    faiss.ParameterSpace().set_index_parameter(index, name, value)


class Index:
    """A loaded (or freshly built) index: FAISS, its documents, index.json, and BM25."""

    def __init__(
        self,
        faiss_index: faiss.Index,
        docs: list[Doc],
        meta: dict[str, Any],
        *,
        bm25: BM25 | None = None,
        folder: Path | None = None,
    ) -> None:
        self.faiss = faiss_index
        #: The documents in index order (position i is vector i).
        self.docs = docs
        #: index.json's content.
        self.meta = meta
        self._bm25 = bm25
        self._folder = folder
        self._positions = {doc.id: i for i, doc in enumerate(docs)}

    # --- building and writing ------------------------------------------------------------

    @classmethod
    def build(
        cls,
        vectors: Any,
        ids: Sequence[str],
        texts: Sequence[str],
        *,
        kind: str = "auto",
        meta: Mapping[str, Any] | None = None,
    ) -> Index:
        """Build in memory: FAISS from ``vectors`` (row i is document i), BM25 from
        ``texts``. Ids must be unique; ``meta`` joins index.json (not its own fields)."""
        array = _check_vectors(vectors)
        if not len(array):
            raise ConfigError("no documents to index")
        if not len(ids) == len(texts) == len(array):
            raise ValueError(f"{len(array)} vectors, {len(ids)} ids and {len(texts)} texts")
        seen: set[str] = set()
        for ident in ids:
            if ident in seen:
                raise ConfigError(f"document id {ident!r} is given twice; ids must be unique")
            seen.add(ident)
        clash = sorted(set(meta or {}) & set(OWN_FIELDS))
        if clash:
            raise ValueError(f"meta may not set {', '.join(clash)}: the index writes them")
        chosen = choose_kind(len(array), kind)
        index, params = build_faiss(array, chosen)
        bm25 = BM25.build(ids, texts)
        info: dict[str, Any] = {
            "kind": chosen,
            "dim": int(array.shape[1]),
            "count": len(array),
            "metric": "ip",
            "params": params,
            "bm25": bm25.params,
            **(meta or {}),
        }
        docs = [Doc(str(i), str(t)) for i, t in zip(ids, texts, strict=True)]
        return cls(index, docs, info, bm25=bm25)

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the folder (see the module docstring); returns index.json's content."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder}: is a file; give a folder to write the index into")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / META_FILE).unlink(missing_ok=True)  # the folder is incomplete until the end
        with replacing(folder / INDEX_FILE, fsync=True) as tmp:
            faiss.write_index(self.faiss, str(tmp))
        docs = "".join(
            json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n" for d in self.docs
        )
        write_atomic(folder / DOCS_FILE, docs, fsync=True)
        _replace_folder(folder / BM25_DIR, self.bm25.save)
        write_atomic(
            folder / META_FILE,
            json.dumps(self.meta, ensure_ascii=False, indent=2) + "\n",
            fsync=True,
        )
        self._folder = folder
        return dict(self.meta)

    # --- reading -------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: Path) -> Index:
        """Read an index folder; ``ConfigError`` naming the file that is missing or does not
        agree with the others. BM25 is read on its first use."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no index folder here")
        meta = _read_meta(folder / META_FILE)
        path = folder / INDEX_FILE
        if not path.is_file():
            raise ConfigError(f"{path}: missing; write the index again")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ConfigError(f"{path}: not a FAISS index; write the index again") from exc
        if (index.ntotal, index.d) != (meta["count"], meta["dim"]):
            raise ConfigError(
                f"{path}: {index.ntotal} vectors of {index.d} dimensions, but "
                f"{META_FILE} says {meta['count']} of {meta['dim']}; write the index again"
            )
        _apply_search_params(index, meta["kind"], meta.get("params") or {})
        docs = _read_docs(folder / DOCS_FILE)
        if len(docs) != index.ntotal:
            raise ConfigError(
                f"{folder / DOCS_FILE}: {len(docs)} documents, but {INDEX_FILE} holds "
                f"{index.ntotal} vectors; write the index again"
            )
        return cls(index, docs, meta, folder=folder)

    @property
    def bm25(self) -> BM25:
        """The BM25 index of the same documents (read from bm25/ on first use)."""
        if self._bm25 is None:
            assert self._folder is not None, "an index is built with its BM25"
            bm25 = BM25.load(self._folder / BM25_DIR)
            if bm25.ids != [d.id for d in self.docs]:
                raise ConfigError(
                    f"{self._folder / BM25_DIR}: indexes other documents than {DOCS_FILE}; "
                    "write the index again"
                )
            self._bm25 = bm25
        return self._bm25

    def doc(self, ident: str) -> Doc:
        """The document with id ``ident`` (``KeyError`` if none)."""
        return self.docs[self._positions[ident]]

    def __len__(self) -> int:
        return len(self.docs)

    # --- searching -----------------------------------------------------------------------

    def search(self, vectors: Any, k: int) -> list[Ranking]:
        """Per query vector (rows, L2-normalised), up to ``k`` (doc id, cosine), best first."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = _check_vectors(vectors, self.faiss.d)
        if not len(queries):
            return []
        scores, positions = self.faiss.search(queries, min(k, len(self.docs)))
        return [
            [(self.docs[p].id, float(s)) for p, s in zip(row, row_scores, strict=True) if p >= 0]
            for row, row_scores in zip(positions.tolist(), scores.tolist(), strict=True)
        ]

    def search_bm25(self, queries: Sequence[str], k: int) -> list[Ranking]:
        """Per query text, up to ``k`` (doc id, BM25 score), best first (see bm25)."""
        return self.bm25.search(queries, k)

    def search_hybrid(
        self, query_vectors: Any, queries: Sequence[str], k: int, *, depth: int = HYBRID_DEPTH
    ) -> list[Ranking]:
        """Reciprocal-rank fusion of dense and BM25 search, each taken ``max(k, depth)``
        deep: per query, up to ``k`` (doc id, RRF score), best first."""
        if len(query_vectors) != len(queries):
            raise ValueError(f"{len(query_vectors)} query vectors for {len(queries)} queries")
        deep = max(k, depth)
        dense = self.search(query_vectors, deep)
        sparse = self.search_bm25(queries, deep)
        return [fuse(pair, limit=k) for pair in zip(dense, sparse, strict=True)]


def write(
    folder: Path,
    vectors: Any,
    ids: Sequence[str],
    texts: Sequence[str],
    meta: Mapping[str, Any],
    kind: str = "auto",
) -> dict[str, Any]:
    """Build an index of ``vectors`` (row i is the document ``ids[i]``, ``texts[i]``) and
    write its folder; returns the index.json written."""
    return Index.build(vectors, ids, texts, kind=kind, meta=meta).save(folder)


def _replace_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder beside ``target`` with ``fill(path)``, then swap it in."""
    tag = f"{os.getpid()}{TMP_SUFFIX}"
    fresh = target.with_name(f".{target.name}.new.{tag}")
    old = target.with_name(f".{target.name}.old.{tag}")
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        fill(fresh)
        if target.exists():
            target.rename(old)
        fresh.rename(target)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the index was not written completely, write it again")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not JSON ({exc}); write the index again") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: not a JSON object; write the index again")
    problems = []
    if meta.get("kind") not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}")
    if meta.get("metric") != "ip":
        problems.append('metric must be "ip"')
    for key in ("dim", "count"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{key} must be a whole number >= 1")
    if not isinstance(meta.get("params", {}), dict):
        problems.append("params must be an object")
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")
    return meta


def _read_docs(path: Path) -> list[Doc]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; write the index again")
    docs = []
    for row in json_rows([path]):
        ident, text = row.values.get("id"), row.values.get("text")
        if not isinstance(ident, str) or not isinstance(text, str):
            raise ConfigError(f'{row.where}: each line must be {{"id": text, "text": text}}')
        docs.append(Doc(ident, text))
    return docs
