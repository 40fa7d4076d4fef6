"""Render a 1,000-point sweep to a folder; compare with the Helm engine's own render time.

    make bench            (or: .venv/bin/python benchmarks/bench_render.py [--points N])

Prints points per second for the whole laptop path (load YAML → validate → expand the sweep
→ chart values → Helm render → write a GitOps folder), the Helm engine's render time for the
same values measured in the same run, their ratio (target ≤ 3), the time to read each
example spec with libyaml against PyYAML's pure-Python parser (kubetune's loader either way:
line tracking and checks included) and their ratio, and the wall time of `kubetune --help`
(target ≤ 0.5 s) beside a bare `python -c pass`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sweep_spec(points: int) -> dict[str, object]:
    rates = [1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3]
    seeds = max(1, points // len(rates))
    return {
        "name": "bench-sweep",
        "task": "classification",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": "data/bbc-news/train.jsonl", "eval": "data/bbc-news/validation.jsonl"},
        "lora": {"r": 8, "target_modules": ["query", "value"]},
        "resources": {"gpus": 1, "queue": "team-nlp", "node_selector": {"pool": "gpu"}},
        "storage": {"uri": "s3://runs/bench", "secret": "kubetune-s3"},
        "tracking": {"wandb": {"project": "bench", "secret": "wandb-key"}},
        "sweep": {
            "method": "grid",
            "parameters": {
                "train.learning_rate": {"values": rates},
                "train.seed": {"values": list(range(seeds))},
            },
        },
    }


def bench_render(points: int) -> None:
    import helm_python

    from kubetune import render, spec, sweep

    work = Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    try:
        path = work / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep_spec(points), sort_keys=False))
        render._chart(str(render.chart_dir()))  # load the chart once, as a long run would

        start = time.perf_counter()
        runs = sweep.expand(spec.load(path), str(path))
        expanded = time.perf_counter()
        rendered = render.render(runs)
        rendered_at = time.perf_counter()
        render.write_dir(rendered, work / "out")
        total = time.perf_counter() - start

        chart = helm_python.Chart.load(str(render.chart_dir()))
        helm_times = []
        for item in rendered:
            t0 = time.perf_counter()
            chart.render(item.values, name=item.run.run_id, namespace="default")
            helm_times.append(time.perf_counter() - t0)
        helm_total = sum(helm_times)

        n = len(runs)
        files = sum(1 for _ in (work / "out").rglob("*.yaml"))
        print(f"sweep render: {n} points → {files} files")
        print(f"  total (load+expand+values+helm+write): {total:.3f} s = {n / total:,.0f} points/s")
        print(f"    load + expand + validate each point: {expanded - start:.3f} s")
        print(f"    values + helm render:                {rendered_at - expanded:.3f} s")
        print(f"    write folder:                        {total - (rendered_at - start):.3f} s")
        print(
            f"  helm engine alone, same values:        {helm_total:.3f} s "
            f"(median {statistics.median(helm_times) * 1e3:.2f} ms/point)"
        )
        print(f"  ratio total / helm engine:             {total / helm_total:.2f}  (target ≤ 3)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_spec_parse(repeats: int = 200) -> None:
    from kubetune import _yaml

    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "jobs").glob("*.yaml"))]

    def per_spec() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            for text in texts:
                _yaml.load(text)
        return (time.perf_counter() - start) / (repeats * len(texts))

    fast = per_spec()
    with mock.patch.object(yaml, "__with_libyaml__", False):
        slow = per_spec()
    print(f"spec parse, the {len(texts)} examples in jobs/ ({repeats} rounds):")
    print(f"  libyaml {fast * 1e3:.2f} ms/spec, pure-Python {slow * 1e3:.2f} ms/spec: "
          f"{slow / fast:.1f}x")  # fmt: skip


def wall(cmd: list[str], repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_help() -> None:
    kubetune = str(Path(sys.executable).with_name("kubetune"))
    bare = wall([sys.executable, "-c", "pass"])
    help_time = wall([kubetune, "--help"])
    print(f"kubetune --help: {help_time:.3f} s wall (best of 7; target ≤ 0.5 s)")
    print(
        f"  python -c pass: {bare:.3f} s, so kubetune's own imports take {help_time - bare:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    args = parser.parse_args()
    bench_render(args.points)
    bench_spec_parse()
    bench_help()


if __name__ == "__main__":
    main()
