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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import launch, render, spec, sweep
from kubetune.store import RunLocation, open_store

from conftest import free_port
from tiny import tiny_spec, write_yaml

# bucket: the same module-wide credentials and bucket `runs` as the fault tests (autouse).
from train.test_crash_safety import CREDENTIALS, EVENT, FlakyProxy, bucket  # noqa: F401

pytestmark = pytest.mark.slow

#: 2 ranks × batch 10 over the 100 tiny rows: 5 steps an epoch, 10 in all, a checkpoint every 2.
TRAIN = {"epochs": 2, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 2}


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

    def wait_for_line(self, text: str) -> None:
        """Block until a line of this pod's output contains ``text``; the process must live."""
        with self.changed:
            while not any(text in line for line in self.lines):
                assert self.proc.poll() is None, self.log()
                self.changed.wait(1)

    def log(self) -> str:
        return "".join(self.lines)

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


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    """Pods a test starts; whatever is left of them is killed when it ends (pass or fail)."""
    started: list[Pod] = []
    yield started
    for pod in started:
        if pod.proc.poll() is None:
            pod.kill()


class GatedStore(FlakyProxy):
    """The store behind a proxy that goes down at the first request for ``trip`` and stays
    down until the test calls :meth:`restore`: the outage ends on an event the test saw,
    not after some seconds."""

    def wait_tripped(self, pods: list[Pod]) -> None:
        while not self.tripped.wait(1):
            for pod in pods:
                assert pod.proc.poll() is None, pod.log()


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
    s3_endpoint: str, tiny: dict[str, Path], tmp_path: Path, pods: list[Pod]
) -> None:
    data = gang_spec(tiny, tmp_path, "gang-kill")
    command, env, run = rendered_pods(data, free_port())
    assert command[command.index("--rdzv_backend") + 1] == "c10d"
    spec_file = write_yaml(
        tmp_path / "spec.yaml", yaml.safe_load(render.render([run])[0].values["spec"])
    )
    command = [str(spec_file) if c == launch.SPEC_PATH else c for c in command]
    # The store goes down when step 4's checkpoint goes up: the run cannot finish until the
    # test brings it back, so the pod is lost mid-run whatever the machine's speed.
    store = GatedStore(s3_endpoint, trip=b"checkpoints/step-000004/")

    def start(rank: int, attempt: int) -> Pod:
        argv, values = kubelet(command, env, rank)
        work = tmp_path / f"pod{rank}-{attempt}"
        # torch elastic's agents say at INFO when they restart their workers (accelerate's
        # rich handler prints it; wide, so that no line of it wraps).
        extra = {"LOGLEVEL": "INFO", "COLUMNS": "500"}
        pod = Pod(f"pod{rank}", argv, pod_env(values, store.url, work, **extra))
        pods.append(pod)
        return pod

    try:
        # Index 1 starts first: its agent waits for index 0, which hosts the rendezvous.
        pod1 = start(1, 0)
        pod0 = start(0, 0)
        store.wait_tripped([pod0, pod1])
        location = _location(s3_endpoint, data["storage"]["uri"], run)
        assert location.checkpoints() == [2], "step 2 was stored before the outage"

        pod1.kill()  # index 1's node is lost mid-run
        store.restore()
        # The Job controller replaces index 1's pod; it joins the surviving agent's next round.
        pod1 = start(1, 1)
        codes = [p.proc.wait(timeout=600) for p in (pod0, pod1)]
    finally:
        store.close()
    logs = "\n-----\n".join(p.log() for p in pods)
    assert codes == [0, 0], logs

    # Index 0 never failed: its agent restarted its workers to meet the new index 1.
    assert "will restart worker group" in pod0.log(), logs
    (begin, *_) = [e for p in pods for e in p.events if e["event"] == "train_begin"]
    resumed = [e["step"] for p in pods for e in p.events if e["event"] == "resume"]
    assert resumed and min(resumed) >= 2, "the gang resumed from a stored checkpoint"
    record = location.store.read_json(location.key("run.json"))
    assert record["status"] == "completed", record
    assert record["resumed_from_step"] in resumed
    assert record["attempt"] >= 2
    # The same run as one that was never interrupted: all its steps, its last checkpoint.
    assert begin["max_steps"] == 10
    assert location.checkpoints()[-1] == 10

    # A lone index re-created after the run completed exits 0 and waits for no rendezvous.
    argv, values = kubelet(command, env, 1)
    lone = subprocess.run(
        argv, env=pod_env(values, s3_endpoint, tmp_path / "lone"), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert lone.returncode == 0, lone.stdout + lone.stderr
    assert "already completed; nothing to do" in lone.stdout


def test_sigterm_two_processes_in_one_pod_get_the_whole_grace_and_exit_130(
    s3_endpoint: str, tiny: dict[str, Path], tmp_path: Path, pods: list[Pod]
) -> None:
    prefix = "gang-sigterm"
    # 30 steps; the stop saves the only checkpoint.
    data = tiny_spec(tiny, train={"epochs": 6, "save_strategy": "steps", "save_steps": 1000})
    data["storage"] = {"uri": f"s3://runs/{prefix}"}
    (run,) = sweep.expand(spec.validate(data))
    path = write_yaml(tmp_path / "job.yaml", data)
    # The line of a pod with 2 GPUs; on this CPU machine its 2 workers use gloo.
    command = launch.accelerate_command(str(path), gpus=2, python=sys.executable)
    assert "--multi_gpu" in command
    # The stop's checkpoint upload takes the store down until the test sees a worker still
    # trying to store it. torchrun's agent, had it been signalled, would SIGKILL its workers
    # once its shutdown timeout (30 s by default) ran out: at 0 s here, it would kill them
    # at once, so a worker alive and retrying after the signal shows the agent never was.
    store = GatedStore(s3_endpoint, trip=b"checkpoints/step-")
    env = pod_env(
        {}, store.url, tmp_path / "pod",
        KUBETUNE_STORE=f"s3://runs/{prefix}", KUBETUNE_STOP_GRACE_SECONDS="110",
        TORCH_ELASTIC_SHUTDOWN_TIMEOUT="0", COLUMNS="500",  # the agent's lines unwrapped
        KUBETUNE_S3_MAX_ATTEMPTS="1",  # a refused request shows at once as kubetune's retry
    )  # fmt: skip
    try:
        pod = Pod("pod", command, env)
        pods.append(pod)
        pod.wait_for("step", 2)
        pod.proc.send_signal(signal.SIGTERM)  # what the kubelet sends the pod's PID 1
        store.wait_tripped([pod])
        pod.wait_for_line("; retrying in ")
        assert pod.proc.poll() is None
        store.restore()
        code = pod.proc.wait(timeout=300)
    finally:
        store.close()
    log = pod.log()
    assert code == 130, log
    assert "death signal" not in log and "closing signal" not in log, "the agent was signalled"
    assert log.count("got SIGTERM; saving a checkpoint") == 2, "each worker stopped itself"
    location = _location(s3_endpoint, f"s3://runs/{prefix}", run)
    record = location.store.read_json(location.key("run.json"))
    (stopped,) = [e for e in pod.events if e["event"] == "interrupted"]
    assert 2 <= stopped["step"] < 30
    assert record["status"] == "interrupted"
    assert record["stored_step"] == record["step"] == stopped["step"]
    assert location.checkpoints() == [stopped["step"]]

    resumed = Pod("pod", command, pod_env({}, s3_endpoint, tmp_path / "pod2",
                                         KUBETUNE_STORE=f"s3://runs/{prefix}"))  # fmt: skip
    pods.append(resumed)
    assert resumed.proc.wait(timeout=300) == 0, resumed.log()
    assert [e["step"] for e in resumed.events if e["event"] == "resume"] == [stopped["step"]]
    (begin,) = [e for e in resumed.events if e["event"] == "train_begin"]
    assert begin["max_steps"] == 30
    assert location.store.read_json(location.key("run.json"))["status"] == "completed"
