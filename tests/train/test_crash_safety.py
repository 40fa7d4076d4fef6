"""Crash safety against a real S3 protocol: moto's server over HTTP, tiny models, CPU.

Every test compares with one uninterrupted run of the same spec: a run that was killed,
corrupted, cut off from its store or raced by a second trainer must end with the same
weights and the same metrics.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubetune import spec, sweep
from kubetune.store import RunLocation, open_store

from tiny import tiny_spec, write_yaml

#: Every test here starts real trainers and kills them.
pytestmark = pytest.mark.slow

EVENT = "@@kubetune "
#: Saves every 5 steps, evaluates each epoch (10 steps), keeps 2 checkpoints, 30 steps in all.
TRAIN = {
    "epochs": 3,
    "save_strategy": "steps",
    "save_steps": 5,
    "eval_strategy": "epoch",
    "save_total_limit": 2,
}
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Timings differ from run to run by nature.
TIMINGS = ("runtime", "samples_per_second", "steps_per_second")


def _env(endpoint: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KUBETUNE_STORE": f"s3://runs/{prefix}",
        "AWS_ENDPOINT_URL": endpoint,
        **CREDENTIALS,
        "OMP_NUM_THREADS": "1",
        "KUBETUNE_WORKDIR": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"kt-{prefix}"),
        **extra,
    }


def _train(job: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune.train", str(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(x[len(EVENT) :]) for x in stdout.splitlines() if x.startswith(EVENT)]


@pytest.fixture(scope="module", autouse=True)
def bucket(s3_endpoint: str) -> Iterator[None]:
    """Credentials for moto in this process too, and the bucket ``runs``."""
    import boto3

    with pytest.MonkeyPatch.context() as env:
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        client = boto3.client("s3", endpoint_url=s3_endpoint)
        if "runs" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket="runs")
        yield


@pytest.fixture(scope="module")
def job(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tiny_spec(tiny, train=TRAIN)
    (run,) = sweep.expand(spec.validate(data))
    path = write_yaml(tmp_path_factory.mktemp("crash") / "job.yaml", data)
    return {"path": path, "run": run}


def _location(endpoint: str, prefix: str, job: dict[str, Any]) -> RunLocation:
    store = open_store(f"s3://runs/{prefix}", endpoint=endpoint)
    return RunLocation(store, job["run"].sweep, job["run"].run_id)


def _outcome(location: RunLocation, tmp: Path) -> dict[str, Any]:
    """Final weights and metrics of a stored run, timings left out."""
    from safetensors.numpy import load_file

    location.store.download_file(location.key("final/model.safetensors"), tmp / "model.st")
    record = location.store.read_json(location.key("run.json"))
    metrics = {
        split: {k: v for k, v in values.items() if not k.endswith(TIMINGS)}
        for split, values in record["metrics"].items()
    }
    history = [
        {k: v for k, v in row.items() if not k.endswith(TIMINGS)}
        for row in location.store.read_json(location.key("history.json"))
    ]
    return {
        "weights": load_file(str(tmp / "model.st")),
        "metrics": metrics,
        "history": history,
        "record": record,
    }


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["weights"].keys() == want["weights"].keys()
    for name, tensor in want["weights"].items():
        np.testing.assert_array_equal(got["weights"][name], tensor, err_msg=name)
    assert got["metrics"] == want["metrics"]
    assert got["history"] == want["history"], "every logged loss and evaluation, in order"


def _assert_checkpoints_sound(location: RunLocation, tmp: Path) -> None:
    """What the store keeps of a completed run: the last two checkpoints, each matching its
    manifest, without the optimizer state (train.keep_optimizer_state is false)."""
    from concurrent.futures import ThreadPoolExecutor

    from kubetune.store import checkpoints

    assert location.checkpoints() == [25, 30]
    with ThreadPoolExecutor(4) as pool:
        for step in (25, 30):
            checkpoints.fetch(location, step, tmp / f"check-{step}", pool)
    keys = location.store.list_keys(location.key("checkpoints"))
    leftovers = {k.split("/")[-2] for k in keys}
    assert leftovers == {"step-000025", "step-000030"}, "no partial or pruned folders remain"
    for step in (25, 30):
        prefix = location.checkpoint_prefix(step)
        manifest = location.store.read_json(f"{prefix}/MANIFEST.json")
        named = {f"{prefix}/{f['path']}" for f in manifest["files"]}
        held = {k for k in keys if k.startswith(prefix + "/")}
        assert held == named | {f"{prefix}/MANIFEST.json"}, "each file named, and no other"
        assert "optimizer.pt" in manifest[checkpoints.TRIMMED]["files"]
        assert f"{prefix}/model.safetensors" in named
        assert f"{prefix}/trainer_state.json" in named
    removed = location.store.read_json(location.key("run.json"))[checkpoints.STATE_REMOVED]
    assert removed["steps"] == [25, 30] and removed["bytes"] > 0


@pytest.fixture(scope="module")
def baseline(
    s3_endpoint: str, job: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    proc = _train(job["path"], _env(s3_endpoint, "baseline"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = [e["step"] for e in _events(proc.stdout) if e["event"] == "checkpoint"]
    assert stored == [5, 10, 15, 20, 25, 30]
    return _outcome(_location(s3_endpoint, "baseline", job), tmp_path_factory.mktemp("base"))


@pytest.mark.parametrize(
    ("point", "newest"),
    [
        # The promise: a kill loses at most the work since the last checkpoint but one. Which
        # of the allowed checkpoints is the newest stored depends on how fast the uploads ran.
        ("step:13", (5, 10)),  # between steps: saves 5 and 10 done, so 5 is stored
        ("save:15", (5, 10)),  # mid-save: weights on local disk, optimizer not yet
        ("upload:20", (15,)),  # mid-upload: one file of checkpoint 20 in the store, no manifest
        ("manifest-before:25", (20,)),  # every file of 25 stored, no manifest
        ("manifest-after:25", (25,)),  # manifest of 25 written, older ones not pruned yet
        ("final:30", (30,)),  # final model and outputs stored, run.json not completed
    ],
)
def test_sigkill_anywhere_then_restart_gives_the_same_run(
    point: str,
    newest: tuple[int, ...],
    s3_endpoint: str,
    job: dict[str, Any],
    baseline: dict[str, Any],
    tmp_path: Path,
) -> None:
    prefix = f"kill-{point.replace(':', '-')}"
    killed = _train(job["path"], _env(s3_endpoint, prefix, KUBETUNE_FAILPOINT=point))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    location = _location(s3_endpoint, prefix, job)
    assert location.store.read_json(location.key("run.json"))["status"] == "running"
    complete = location.checkpoints()
    assert complete and complete[-1] in newest, complete

    restarted = _train(job["path"], _env(s3_endpoint, prefix))
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    resumed = [e["step"] for e in _events(restarted.stdout) if e["event"] == "resume"]
    assert resumed == complete[-1:], "resumes from the newest complete checkpoint"

    got = _outcome(location, tmp_path)
    _assert_same(got, baseline)
    assert got["record"]["status"] == "completed" and got["record"]["attempt"] == 2
    _assert_checkpoints_sound(location, tmp_path)


def test_a_corrupted_checkpoint_is_rejected_and_the_one_before_used(
    s3_endpoint: str, job: dict[str, Any], baseline: dict[str, Any], tmp_path: Path
) -> None:
    prefix = "flipped-byte"
    # Killed at step 22, saving every 5 steps: checkpoint 15 is stored, however slowly a busy
    # machine ran the uploads (the save at 20 waited for it), and 20 may be.
    killed = _train(job["path"], _env(s3_endpoint, prefix, KUBETUNE_FAILPOINT="step:22"))
    assert killed.returncode == -signal.SIGKILL
    location = _location(s3_endpoint, prefix, job)
    complete = location.checkpoints()
    assert 15 in complete and complete[-1] in (15, 20), complete
    newest, before = complete[-1], complete[-2]
    shard = location.key(f"checkpoints/step-{newest:06d}/model.safetensors")
    data = bytearray(location.store.read_bytes(shard))
    data[len(data) // 2] ^= 0x01
    location.store.write_bytes(shard, bytes(data))

    restarted = _train(job["path"], _env(s3_endpoint, prefix))
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    events = _events(restarted.stdout)
    (rejected,) = [e for e in events if e["event"] == "checkpoint_rejected"]
    assert rejected["step"] == newest and "model.safetensors" in rejected["reason"]
    assert [e["step"] for e in events if e["event"] == "resume"] == [before]
    assert f"checkpoint step-{newest:06d} rejected" in restarted.stderr
    got = _outcome(location, tmp_path)
    _assert_same(got, baseline)
    assert got["record"]["rejected_checkpoints"][0]["step"] == newest


class FlakyProxy:
    """A TCP proxy to the S3 server that goes down when a request for ``trip`` passes
    through, and stays down until :meth:`restore`: it cuts every open connection and hangs up
    on new ones, as a store that blinks does. The test decides when the store comes back, on
    what it has seen the trainer do."""

    def __init__(self, target: str, trip: bytes) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.trip = trip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.tripped = threading.Event()
        self.restored = threading.Event()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def is_down(self) -> bool:
        return self.tripped.is_set() and not self.restored.is_set()

    def restore(self) -> None:
        self.restored.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_down:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if request and not self.tripped.is_set() and self.trip in chunk:
                    self._go_down()
                    return
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def _go_down(self) -> None:
        self.tripped.set()
        with self.lock:
            for s in self.open:
                s.close()
            self.open.clear()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FlakyProxy]:
    p = FlakyProxy(s3_endpoint, trip=b"checkpoints/step-000010/")
    yield p
    p.close()


def test_a_store_outage_loses_no_checkpoint_and_training_waits_at_the_next_save(
    proxy: FlakyProxy,
    s3_endpoint: str,
    job: dict[str, Any],
    baseline: dict[str, Any],
    tmp_path: Path,
) -> None:
    prefix = "outage"
    env = _env(s3_endpoint, prefix, AWS_ENDPOINT_URL=proxy.url)
    proc = _start(job["path"], env)
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    for line in proc.stdout:
        if not line.startswith(EVENT):
            continue
        seen.append(json.loads(line[len(EVENT) :]))
        if seen[-1] == {"event": "checkpoint_wait", "step": 15, "waiting_for": 10}:
            # The store is down from the first request for checkpoint 10 until now: that
            # request has surely been sent, since the trainer waits for checkpoint 10.
            proxy.tripped.wait()
            proxy.restore()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert proxy.restored.is_set(), "the save at 15 waited for checkpoint 10"

    stored = [e["step"] for e in seen if e["event"] == "checkpoint"]
    assert stored == [5, 10, 15, 20, 25, 30], "no checkpoint lost"
    waited = seen.index({"event": "checkpoint_wait", "step": 15, "waiting_for": 10})
    trained = [e["step"] for e in seen[:waited] if e["event"] == "step"]
    # Training went on while checkpoint 10 could not be stored, up to the next save…
    assert trained[-1] == 15, trained
    # …where it waited: step 16 came only after that, once the store was back.
    assert next(e["step"] for e in seen[waited:] if e["event"] == "step") == 16
    _assert_same(_outcome(_location(s3_endpoint, prefix, job), tmp_path), baseline)


def test_two_trainers_of_one_run_one_manifest_wins_the_loser_stops(
    s3_endpoint: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    # Long enough (100 steps) that both trainers are surely training at once.
    data = tiny_spec(tiny, train={**TRAIN, "epochs": 10})
    (run,) = sweep.expand(spec.validate(data))
    path = write_yaml(tmp_path / "job.yaml", data)
    prefix = "two-writers"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kubetune.train", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(s3_endpoint, prefix, KUBETUNE_WORKDIR=str(tmp_path / f"work-{i}")),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], [err[-2000:] for _, err in outputs]
    (loser_err,) = [err for p, (_, err) in zip(procs, outputs, strict=True) if p.returncode]
    (line,) = [x for x in loser_err.splitlines() if x.startswith("error: ")]
    assert "was stored first by another trainer" in line and "this one" in line

    location = _location(s3_endpoint, prefix, {"run": run})
    record = location.store.read_json(location.key("run.json"))
    assert record["status"] == "completed"
    manifests = [
        location.store.read_json(location.key(f"checkpoints/step-{step:06d}/MANIFEST.json"))
        for step in location.checkpoints()
    ]
    assert [m["step"] for m in manifests] == [95, 100]
    assert len({m["writer"] for m in manifests}) == 1, "every stored checkpoint has one writer"


def _start(job: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kubetune.train", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _sigterm_after_step(proc: subprocess.Popen[str], step: int) -> list[dict[str, Any]]:
    """Send SIGTERM once the trainer reports ``step``; the events it printed until it ended."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        if line.startswith(EVENT):
            seen.append(json.loads(line[len(EVENT) :]))
            if seen[-1]["event"] == "step" and seen[-1]["step"] == step:
                proc.send_signal(signal.SIGTERM)
    return seen


def test_sigterm_stores_a_checkpoint_exits_retriable_and_resumes_the_same(
    s3_endpoint: str, job: dict[str, Any], baseline: dict[str, Any], tmp_path: Path
) -> None:
    prefix = "sigterm"
    proc = _start(job["path"], _env(s3_endpoint, prefix))
    seen = _sigterm_after_step(proc, 12)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]  # the chart's podFailurePolicy retries 130
    assert "got SIGTERM; saving a checkpoint" in err
    (stopped,) = [e for e in seen if e["event"] == "interrupted"]
    location = _location(s3_endpoint, prefix, job)
    record = location.store.read_json(location.key("run.json"))
    assert record["status"] == "interrupted"
    assert record["step"] == record["stored_step"] == stopped["step"], "stored within the grace"
    assert location.checkpoints()[-1] == stopped["step"]

    restarted = _train(job["path"], _env(s3_endpoint, prefix))
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    resumed = [e["step"] for e in _events(restarted.stdout) if e["event"] == "resume"]
    assert resumed == [stopped["step"]]
    _assert_same(_outcome(location, tmp_path), baseline)


def test_sigterm_with_the_store_down_exits_within_the_grace_period(
    s3_endpoint: str, job: dict[str, Any], baseline: dict[str, Any], tmp_path: Path
) -> None:
    prefix = "sigterm-store-down"
    # The first checkpoint upload takes the store down; the trainer gets SIGTERM at step 8
    # (after the save at 5, before the one at 10). The store comes back once the trainer says
    # the grace period is over, so that it can record the stop.
    proxy = FlakyProxy(s3_endpoint, trip=b"checkpoints/step-000005/")
    env = _env(
        s3_endpoint,
        prefix,
        AWS_ENDPOINT_URL=proxy.url,
        KUBETUNE_STOP_GRACE_SECONDS="2",
        KUBETUNE_FAILPOINT="signal:8:term",
    )
    grace_over = "was not stored within the 2 s grace period"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune.train", str(job["path"])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stderr is not None
        err = ""
        for line in proc.stderr:
            err += line
            if grace_over in line:
                proxy.restore()
        proc.wait(timeout=300)
    finally:
        proxy.restore()
        proxy.close()
    assert proc.returncode == 130, err[-3000:]
    assert proxy.tripped.is_set()
    assert grace_over in err
    location = _location(s3_endpoint, prefix, job)
    assert location.store.read_json(location.key("run.json"))["status"] == "interrupted"
    # Nothing half-stored counts: step 5 is listed only if its upload, retried once the store
    # was back, finished while the stop was being recorded, and then it matches its manifest.
    from concurrent.futures import ThreadPoolExecutor

    from kubetune.store import checkpoints

    stored = location.checkpoints()
    assert stored in ([], [5]), stored
    with ThreadPoolExecutor(4) as pool:
        for step in stored:
            checkpoints.fetch(location, step, tmp_path / f"check-{step}", pool)

    restarted = _train(job["path"], _env(s3_endpoint, prefix))
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    _assert_same(_outcome(location, tmp_path), baseline)


def test_a_stop_on_an_epochs_last_step_stores_one_checkpoint_that_resumes(
    s3_endpoint: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    """Saving by epoch, stopped on an epoch's last step: the step's end and the epoch's end
    both want a checkpoint of that step. It is saved once, matches its manifest, and the next
    start resumes from it."""
    from concurrent.futures import ThreadPoolExecutor

    from kubetune.store import checkpoints

    data = tiny_spec(tiny, train={"epochs": 3, "save_strategy": "epoch", "eval_strategy": "no"})
    (run,) = sweep.expand(spec.validate(data))
    path = write_yaml(tmp_path / "job.yaml", data)
    prefix = "epoch-stop"
    stopped = _train(path, _env(s3_endpoint, prefix, KUBETUNE_FAILPOINT="signal:10:term"))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    location = _location(s3_endpoint, prefix, {"run": run})
    assert location.checkpoints() == [10]
    with ThreadPoolExecutor(4) as pool:  # every file as its manifest says, or it raises
        checkpoints.fetch(location, 10, tmp_path / "check-10", pool)
    restarted = _train(path, _env(s3_endpoint, prefix))
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert [e["step"] for e in _events(restarted.stdout) if e["event"] == "resume"] == [10]
