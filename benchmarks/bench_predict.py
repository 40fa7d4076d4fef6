"""Batched inference against a plain ``transformers.pipeline`` loop, same model, same rows.

    .venv/bin/python benchmarks/bench_predict.py MODEL_FOLDER [--rows 300] [--max-length 512]

MODEL_FOLDER is a stored run's ``final/`` (a classifier; ``make bench-search`` leaves some in
its work folder). The rows are BBC News training articles (data/bbc-news, ``make demo``).
Printed: rows/s of the pipeline (batch_size 32, truncation at --max-length), of
:mod:`kubetune.predict.engine` in fp32, and with int8 dynamic quantization, each with its
ratio to the pipeline and how many labels agree with the pipeline's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_search import cpu_name  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    import torch
    from transformers import pipeline

    from kubetune.predict import engine

    source = ROOT / "data" / "bbc-news" / "train.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()[: args.rows]
    texts = [json.loads(line)["text"] for line in lines]
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; {len(texts)} articles, "
          f"max_length {args.max_length}", flush=True)  # fmt: skip

    pipe = pipeline("text-classification", model=str(args.model), device=-1)
    pipe(texts[:8], batch_size=32, truncation=True, max_length=args.max_length)
    started = time.perf_counter()
    theirs = pipe(texts, batch_size=32, truncation=True, max_length=args.max_length)
    base = time.perf_counter() - started
    labels = [r["label"] for r in theirs]
    print(f"{'pipeline (batch 32)':<28} {len(texts) / base:>8.1f} rows/s", flush=True)
    for name, int8 in (("kubetune engine, fp32", False), ("kubetune engine, int8", True)):
        loaded = engine.load(str(args.model), max_length=args.max_length, int8=int8)
        engine.predict(loaded, texts[:8])
        started = time.perf_counter()
        ours = engine.predict(loaded, texts)
        seconds = time.perf_counter() - started
        agree = sum(o["label"] == t for o, t in zip(ours, labels, strict=True))
        print(f"{name:<28} {len(texts) / seconds:>8.1f} rows/s  {base / seconds:.2f}× the "
              f"pipeline, {agree}/{len(texts)} labels agree", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
