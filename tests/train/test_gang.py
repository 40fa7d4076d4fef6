"""Several trainer processes under the real launcher, on CPU (gloo), against moto over HTTP.

Each pod is started from the command and env of the rendered manifest, with what the
kubelet would substitute ($(KUBETUNE_MACHINE_RANK), $(KUBETUNE_MAIN_HOST)) filled in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_crash_safety import CREDENTIALS, EVENT, FlakyProxy

from kubetune import launch, render, spec, sweep
from kubetune.store import RunLocation, open_store

from conftest import free_port
from tiny import tiny_spec, write_yaml

pytestmark = pytest.mark.slow

#: Saves every 5 steps, 40 steps in all (2 ranks × batch 10 over 200 rows, 4 epochs).
TRAIN = {"epochs": 4, "save_strategy": "steps", "save_steps": 5, "save_total_limit": 2}


@pytest.fixture(scope="module", autouse=True)
def bucket(s3_endpoint: str) -> Iterator[None]:
    import boto3

    with pytest.MonkeyPatch.context() as env:
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        client = boto3.client("s3", endpoint_url=s3_endpoint)
        if "runs" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket="runs")
        yield


class Pod:
    """One rendered pod's container as a process tree: the supervisor and all it starts."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line)
                if line.startswith(EVENT):
                    self.events.append(json.loads(line[len(EVENT) :]))
                self.changed.notify_all()

    def wait_for(self, event: str, step: int | None = None) -> dict[str, Any]:
        """Block until this pod printed ``event`` (at ``step``); the process must live."""
        with self.changed:
            while True:
                for seen in self.events:
                    if seen["event"] == event and step in (None, seen.get("step")):
                        return seen
                assert self.proc.poll() is None, self.log()
                self.changed.wait(1)

    def log(self) -> str:
        return "".join(self.lines)[-6000:]

    def tree(self) -> list[int]:
        """Every process of this pod (the container's whole PID namespace)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += launch._children(pid)
        return found

    def kill(self) -> None:
        """The node is gone: every process of the pod dies at once."""
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=60)


def rendered_pods(data: dict[str, Any], port: int) -> tuple[list[str], dict[str, str], Any]:
    """The container command and plain env of a run's rendered Job, and the run."""
    (run,) = sweep.expand(spec.validate(data))
    (rendered,) = render.render([run], namespace="ml")
    docs = {name: yaml.safe_load(doc) for name, doc in rendered.documents}
    (container,) = docs["job.yaml"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    command = [str(c) for c in container["command"]]
    # The test's stand-in for the chart's rendezvous port: other tests may hold 29500.
    command[command.index("--main_process_port") + 1] = str(port)
    return command, env, run


def kubelet(command: list[str], env: dict[str, str], rank: int) -> tuple[list[str], dict[str, str]]:
    """$(VAR) expansion as the kubelet does it, with the downward-API index and the main
    host's DNS name replaced by this machine."""
    values = {**env, "KUBETUNE_MACHINE_RANK": str(rank), "KUBETUNE_MAIN_HOST": "127.0.0.1"}
    expanded = []
    for arg in command:
        for name, value in values.items():
            arg = arg.replace(f"$({name})", value)
        expanded.append(arg)
    python = str(Path(sys.executable))
    return [python if a == "python" else a for a in expanded], values


def pod_env(values: dict[str, str], endpoint: str, work: Path, **extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # `accelerate` on the PATH, as in the image
    env = {
        **os.environ,
        **values,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "AWS_ENDPOINT_URL": endpoint,
        **CREDENTIALS,
        "OMP_NUM_THREADS": "1",
        "KUBETUNE_WORKDIR": str(work),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    for key in ("HOME", "HF_HOME", "WANDB_DIR", "XDG_CACHE_HOME", "TMPDIR"):
        env[key] = str(work / key.lower())
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


def _location(endpoint: str, uri: str, run: Any) -> RunLocation:
    return RunLocation(open_store(uri, endpoint=endpoint), run.sweep, run.run_id)


def gang_spec(tiny: dict[str, Path], tmp: Path, prefix: str) -> dict[str, Any]:
    data = tiny_spec(tiny, train=TRAIN)
    data.update(
        image="ghcr.io/kubetune/kubetune-trainer@sha256:" + "ab" * 32,
        storage={"uri": f"s3://runs/{prefix}"},
        resources={"nodes": 2, "gpus": 0, "cpu": "1", "memory": "4Gi", "shm_size": "1Gi"},
    )
    return data


def test_two_ranks_from_the_rendered_pods_survive_a_lost_pod_and_complete(
    s3_endpoint: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    data = gang_spec(tiny, tmp_path, "gang-kill")
    command, env, run = rendered_pods(data, free_port())
    assert command[command.index("--rdzv_backend") + 1] == "c10d"
    spec_file = write_yaml(
        tmp_path / "spec.yaml", yaml.safe_load(render.render([run])[0].values["spec"])
    )
    command = [str(spec_file) if c == launch.SPEC_PATH else c for c in command]

    def start(rank: int, attempt: int) -> Pod:
        argv, values = kubelet(command, env, rank)
        work = tmp_path / f"pod{rank}-{attempt}"
        return Pod(f"pod{rank}", argv, pod_env(values, s3_endpoint, work))

    # Index 1 starts first: its agent waits for index 0, which hosts the rendezvous.
    pod1 = start(1, 0)
    pod0 = start(0, 0)
    pods = [pod0, pod1]
    # Rank 0 (on either pod) reports each checkpoint once the store holds it.
    stored = _first_checkpoint(pods)
    location = _location(s3_endpoint, data["storage"]["uri"], run)
    assert stored in location.checkpoints()

    pod1.kill()  # index 1's node is lost mid-run
    # The Job controller replaces index 1's pod; it joins the surviving agent's next round.
    pod1 = start(1, 1)
    codes = [p.proc.wait(timeout=900) for p in (pod0, pod1)]
    assert codes == [0, 0], pod0.log() + "\n-----\n" + pod1.log()

    log0 = "".join(pod0.lines)
    assert "will restart worker group" in log0, "index 0 restarted its workers with the new gang"
    resumed = [e["step"] for p in (pod0, pod1) for e in p.events if e["event"] == "resume"]
    assert resumed and resumed[0] >= stored, "the gang resumed from a stored checkpoint"
    record = location.store.read_json(location.key("run.json"))
    assert record["status"] == "completed" and record["resumed_from_step"] == resumed[0]
    assert location.checkpoints()[-1] == 40

    # A lone index re-created after the run completed exits 0 and waits for no rendezvous.
    argv, values = kubelet(command, env, 1)
    lone = subprocess.run(
        argv, env=pod_env(values, s3_endpoint, tmp_path / "lone"), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert lone.returncode == 0, lone.stderr
    assert "already completed; nothing to do" in lone.stdout


def _first_checkpoint(pods: list[Pod]) -> int:
    while True:
        for pod in pods:
            with pod.changed:
                for seen in pod.events:
                    if seen["event"] == "checkpoint":
                        return int(seen["step"])
                assert pod.proc.poll() is None, pod.log()
        with pods[0].changed:
            pods[0].changed.wait(1)


def test_sigterm_two_processes_in_one_pod_get_the_whole_grace_and_exit_130(
    s3_endpoint: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    prefix = "gang-sigterm"
    data = tiny_spec(tiny, train={**TRAIN, "save_steps": 1000})  # the stop saves the only one
    data["storage"] = {"uri": f"s3://runs/{prefix}"}
    (run,) = sweep.expand(spec.validate(data))
    path = write_yaml(tmp_path / "job.yaml", data)
    # The line of a pod with 2 GPUs; on this CPU machine its 2 workers use gloo.
    command = launch.accelerate_command(str(path), gpus=2, python=sys.executable)
    assert "--multi_gpu" in command
    # The stop's checkpoint upload takes the store down for longer than torchrun's 30 s.
    outage = 35.0
    proxy = FlakyProxy(s3_endpoint, trip=b"checkpoints/step-", outage=outage)
    env = pod_env(
        {}, proxy.url, tmp_path / "pod",
        KUBETUNE_STORE=f"s3://runs/{prefix}", KUBETUNE_STOP_GRACE_SECONDS="110",
    )  # fmt: skip
    try:
        pod = Pod("pod", command, env)
        pod.wait_for("step", 6)
        signalled = time.monotonic()
        pod.proc.send_signal(signal.SIGTERM)  # what the kubelet sends the pod's PID 1
        code = pod.proc.wait(timeout=300)
        ended = time.monotonic()
    finally:
        proxy.close()
    log = pod.log()
    assert code == 130, log
    assert proxy.down_at is not None and proxy.down_at >= signalled
    assert ended - signalled > 30, "the workers outlived torchrun's 30 s close timeout"
    assert "closing signal" not in log, "torchrun's agent never signalled its workers"
    assert log.count("got SIGTERM; saving a checkpoint") == 2, "each worker stopped itself"
    location = _location(s3_endpoint, f"s3://runs/{prefix}", run)
    record = location.store.read_json(location.key("run.json"))
    (stopped,) = [e for e in pod.events if e["event"] == "interrupted"]
    assert record["status"] == "interrupted"
    assert record["stored_step"] == record["step"] == stopped["step"]
    assert location.checkpoints() == [stopped["step"]]

    resumed = Pod("pod", command, pod_env({}, s3_endpoint, tmp_path / "pod2",
                                         KUBETUNE_STORE=f"s3://runs/{prefix}"))  # fmt: skip
    assert resumed.proc.wait(timeout=600) == 0, resumed.log()
    assert [e["step"] for e in resumed.events if e["event"] == "resume"] == [stopped["step"]]
    assert location.store.read_json(location.key("run.json"))["status"] == "completed"
