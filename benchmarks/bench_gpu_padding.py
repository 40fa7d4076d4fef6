"""bf16 and padding on one GPU, in a plain HF Trainer loop with kubetune's TrainingArguments.

    python benchmarks/bench_gpu_padding.py MODEL_CONFIG_DIR BBC_NEWS_DIR

Needs a CUDA GPU. MODEL_CONFIG_DIR holds all-MiniLM-L6-v2's config.json and tokenizer (the
weights are random: speed only); BBC_NEWS_DIR is ``kubetune data prepare bbc-news DIR``.
Prints steps per second of 150 steps (60 at batch 128) for fp32 and bf16, with the batches
padded to no multiple, to 8 and to 64, and in bf16 with torch's cuDNN attention turned off:
what showed that grouped lengths cost bf16 a cuDNN attention plan per shape, and why the
collators pad to a multiple of 8 on a GPU (kubetune.train.task.GPU_PAD_MULTIPLE).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
    )

    from kubetune import spec as specmod
    from kubetune.train.trainer import training_args

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_padding needs a CUDA GPU")
    config_dir, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    tokenizer = AutoTokenizer.from_pretrained(config_dir)
    config = AutoConfig.from_pretrained(config_dir, num_labels=5, attention_probs_dropout_prob=0.0)
    rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    labels = sorted({r["label"] for r in rows})
    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=256)
    train = Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": [labels.index(r["label"]) for r in rows],
        }
    )
    raw, _lines = specmod.load_raw(ROOT / "jobs" / "bbc-news-topic.yaml")

    def run(precision: str, multiple: int | None, *, cudnn: bool = True, batch: int = 32,
            steps: int = 150) -> None:  # fmt: skip
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        raw["train"].update(
            max_steps=steps, precision=precision, eval_strategy="no", save_strategy="no",
            batch_size=batch,
        )  # fmt: skip
        raw["data"].update(train="unused", eval="unused", test=None)
        args: Any = training_args(
            specmod.validate(raw, "bench spec"), Path("/tmp/bench-gpu-padding"), "accuracy"
        )
        torch.manual_seed(0)
        trainer = Trainer(
            model=AutoModelForSequenceClassification.from_config(config),
            args=args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple),
        )
        seconds = trainer.train().metrics["train_runtime"]
        print(
            f"{precision} batch {batch} pad_to_multiple_of={multiple} cudnn_sdp={cudnn}: "
            f"{steps / seconds:.2f} steps/s",
            flush=True,
        )

    for precision in ("fp32", "bf16"):
        for multiple in (None, 8, 64):
            run(precision, multiple)
    run("bf16", None, cudnn=False)
    run("bf16", 64, cudnn=False)
    run("fp32", None, batch=128, steps=60)
    run("bf16", None, batch=128, steps=60)
    run("bf16", 64, batch=128, steps=60)


if __name__ == "__main__":
    main()
