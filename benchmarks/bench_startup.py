"""Time from `kubetune run` to the trainer's first step, against the plain accelerate line.

Both arms train the same one-process CPU run of jobs/bbc-news-topic.yaml (the packaged
all-MiniLM-L6-v2; a slice: 64 training rows, 2 steps) into a fresh file store, and time,
from the command's start, the trainer's progress events: ``model`` (data read, model
loaded), ``train_begin`` and the first ``step``.

- kubetune: ``python -m kubetune.launch accelerate launch … -m kubetune.train SPEC``, the
  line `kubetune run` and the Job use. For one process the supervisor starts the trainer
  itself (kubetune.launch.direct_launch): torch is imported once.
- accelerate: ``accelerate launch … -m kubetune.train SPEC``, as before: accelerate's CLI
  imports torch, then starts the trainer, which imports it again.

Arms alternate, ``--repeats`` times each; medians are printed with their ratio. Also
printed: the time `kubetune run` takes to report a data mistake (a non-UTF-8 byte in the
training file), which the pre-flight checks find before any trainer starts.

    .venv/bin/python benchmarks/bench_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubetune import launch, sweep
from kubetune import spec as specmod
from kubetune.events import PREFIX as EVENT_PREFIX

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ("model", "train_begin", "step")
SLICE = {
    "data.max_train_samples": 64,
    "data.max_eval_samples": 32,
    "train.epochs": 1,
    "train.save_strategy": "no",
}


def _spec(folder: Path, train: Path | None = None) -> tuple[Path, str]:
    """The example as one resolved run on a slice (``train``: another training file)."""
    data = specmod.load_raw(ROOT / "jobs" / "bbc-news-topic.yaml")[0]
    for key, value in SLICE.items():
        specmod.set_path(data, key, value)
    for split in ("train", "eval", "test"):
        specmod.set_path(data, f"data.{split}", str(ROOT / data["data"][split]))
    if train is not None:
        specmod.set_path(data, "data.train", str(train))
    data.pop("storage", None)
    data.pop("tracking", None)
    run = sweep.expand(specmod.validate(data), "bench")[0]
    path = folder / f"{run.run_id}.yaml"
    path.write_text(specmod.dump(run.spec), encoding="utf-8")
    return path, run.run_id


def _time_events(command: list[str], store: Path, run_id: str) -> dict[str, float]:
    env = {
        **os.environ,
        "KUBETUNE_STORE": store.as_uri(),
        "KUBETUNE_RUN_ID": run_id,
        "KUBETUNE_SWEEP": "bench",
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    seen: dict[str, float] = {}
    started = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(EVENT_PREFIX):
            kind = json.loads(line[len(EVENT_PREFIX) :]).get("event")
            seen.setdefault(kind, time.monotonic() - started)
    if proc.wait() != 0:
        raise SystemExit(f"{command[:4]}… exited {proc.returncode}")
    return seen


def _first_error(folder: Path, accelerate_line: list[str]) -> dict[str, float]:
    """Seconds to the first error line about a bad byte in the training data: from
    `kubetune run` (its pre-flight checks) and from the launch line alone (the trainer finds
    it, as `kubetune run` did before it had pre-flight checks)."""
    bad = folder / "bad.jsonl"
    raw = (ROOT / "data" / "bbc-news" / "train.jsonl").read_bytes()
    bad.write_bytes(raw.replace(b"the ", b"th\xe9 ", 1))
    spec, run_id = _spec(folder, bad)
    kubetune = [str(Path(sys.executable).with_name("kubetune")), "run", str(spec)]
    arms = {
        "kubetune run": [*kubetune, "--store", (folder / "err").as_uri()],
        "trainer": [*accelerate_line[:-1], str(spec)],
    }
    took = {}
    for name, command in arms.items():
        env = {**os.environ, "KUBETUNE_STORE": (folder / "err").as_uri(), "KUBETUNE_RUN_ID": run_id}
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
        took[name] = time.monotonic() - started
        assert done.returncode != 0 and "not UTF-8" in done.stderr + done.stdout, done.stderr
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (ROOT / "data" / "bbc-news" / "train.jsonl").is_file():
        raise SystemExit("prepare the data first: kubetune data prepare bbc-news data/bbc-news")
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )  # fmt: skip
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec, run_id = _spec(folder)
        line = launch.accelerate_command(str(spec), gpus=0, python=sys.executable)
        line[3] = str(Path(sys.executable).with_name("accelerate"))
        arms = {"kubetune": line, "accelerate": line[3:]}
        timings: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
        for repeat in range(args.repeats):
            for name in ("accelerate", "kubetune"):
                store = folder / f"store-{name}-{repeat}"
                timings[name].append(_time_events(arms[name], store, run_id))
        print(f"\nseconds from start, median of {args.repeats}:")
        print(f"{'event':<13}" + "".join(f"{name:>12}" for name in arms) + f"{'ratio':>8}")
        for event in EVENTS:
            medians = {n: statistics.median(t[event] for t in timings[n]) for n in arms}
            ratio = medians["accelerate"] / medians["kubetune"]
            print(
                f"{event:<13}" + "".join(f"{medians[n]:>11.1f}s" for n in arms) + f"{ratio:>7.2f}x"
            )
        took = _first_error(folder, arms["accelerate"])
        ratio = took["trainer"] / took["kubetune run"]
        print(
            "\nto the first error line (a bad byte in data.train): "
            f"kubetune run {took['kubetune run']:.1f}s, the trainer {took['trainer']:.1f}s, "
            f"{ratio:.0f}x"
        )


if __name__ == "__main__":
    main()
