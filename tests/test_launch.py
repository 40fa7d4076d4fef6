"""The launch line, and the supervisor that keeps the trainer's exit code and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune.launch import accelerate_command, supervise

from conftest import ML_GROUP

PREFIX = ["python", "-m", "kubetune.launch", "accelerate", "launch"]


def test_single_gpu_launch_line() -> None:
    cmd = accelerate_command("/etc/kubetune/spec.yaml", gpus=1)
    assert cmd[:5] == PREFIX
    assert cmd[-3:] == ["-m", "kubetune.train", "/etc/kubetune/spec.yaml"]
    assert cmd[cmd.index("--num_processes") + 1] == "1"
    assert "--multi_gpu" not in cmd and "--cpu" not in cmd and "--machine_rank" not in cmd


def test_cpu_launch_line() -> None:
    cmd = accelerate_command("spec.yaml", gpus=0)
    assert "--cpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "1"


def test_multi_node_launch_line_uses_kubernetes_env_expansion() -> None:
    cmd = accelerate_command("spec.yaml", gpus=4, nodes=2)
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[cmd.index("--num_machines") + 1] == "2"
    assert cmd[cmd.index("--machine_rank") + 1] == "$(KUBETUNE_MACHINE_RANK)"
    assert cmd[cmd.index("--main_process_ip") + 1] == "$(KUBETUNE_MAIN_HOST)"
    assert "--multi_gpu" in cmd


# A stand-in for accelerate: it runs the "trainer" in a grandchild, hides its exit code behind
# a 1 (as accelerate does), and ignores SIGTERM itself (as accelerate's launcher does not
# forward it).
LAUNCHER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
sys.exit(0 if child.wait() == 0 else 1)
"""
TRAINER_CONFIG_ERROR = """
import os
open(os.environ["KUBETUNE_EXIT_FILE"], "w").write("2")
raise SystemExit(2)
"""
TRAINER_GRACEFUL = """
import os, signal, sys, time
def stop(signum, frame):
    time.sleep(0.5)  # "saving a checkpoint"
    open(sys.argv[1], "w").write("checkpoint")
    open(os.environ["KUBETUNE_EXIT_FILE"], "w").write("130")
    raise SystemExit(130)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def test_supervisor_reports_the_trainers_exit_code() -> None:
    code = supervise([sys.executable, "-c", LAUNCHER, TRAINER_CONFIG_ERROR])
    assert code == 2
    assert supervise([sys.executable, "-c", "raise SystemExit(0)"]) == 0
    assert supervise([sys.executable, "-c", "raise SystemExit(7)"]) == 7
    # The supervisor hands the signals back: Ctrl-C in this process is KeyboardInterrupt again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_supervisor_forwards_sigterm_and_waits_for_the_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "saved"
    trainer = TRAINER_GRACEFUL.replace("sys.argv[1]", repr(str(marker)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.launch", sys.executable, "-c", LAUNCHER, trainer],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends PID 1 of a preempted pod
    assert proc.wait(timeout=30) == 130
    assert marker.read_text() == "checkpoint"


def test_a_completed_run_exits_0_before_starting_the_launcher(s3_env: str, tmp_path: Path) -> None:
    from kubetune.store import RunLocation, open_store

    location = RunLocation(open_store("s3://runs/lone"), "sweep-a", "run-a-12345678")
    location.store.write_json(location.key("run.json"), {"status": "completed"})
    marker = tmp_path / "started"
    env = {
        **os.environ,
        "KUBETUNE_STORE": "s3://runs/lone",
        "KUBETUNE_SWEEP": "sweep-a",
        "KUBETUNE_RUN_ID": "run-a-12345678",
    }
    would_start = [sys.executable, "-c", f"open({str(marker)!r}, 'w'); raise SystemExit(3)"]
    done = subprocess.run(
        [sys.executable, "-m", "kubetune.launch", *would_start],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "already completed; nothing to do" in done.stdout
    assert not marker.exists(), "accelerate (and so any rendezvous) never started"

    location.store.write_json(location.key("run.json"), {"status": "interrupted"})
    again = subprocess.run(
        [sys.executable, "-m", "kubetune.launch", *would_start],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 3 and marker.exists(), "an unfinished run starts"


def test_multi_node_line_restarts_the_gang_in_a_c10d_rendezvous_hosted_by_index_0() -> None:
    from kubetune.launch import with_rendezvous_host

    cmd = accelerate_command("spec.yaml", gpus=0, nodes=2, max_restarts=5)
    assert "--multi_gpu" in cmd and "--cpu" not in cmd  # accelerate's --cpu would start one
    assert cmd[cmd.index("--rdzv_backend") + 1] == "c10d"
    assert cmd[cmd.index("--max_restarts") + 1] == "5"
    assert "--same_network" not in cmd  # accelerate then passes the c10d endpoint
    for rank, host in (("0", "true"), ("1", "false")):
        line = [c.replace("$(KUBETUNE_MACHINE_RANK)", rank) for c in cmd]
        conf = with_rendezvous_host(line)[line.index("--rdzv_conf") + 1]
        assert conf.endswith(f",is_host={host}")
    one_pod = accelerate_command("spec.yaml", gpus=1)
    assert with_rendezvous_host(one_pod) == one_pod


def test_a_c10d_gang_gives_its_workers_a_fresh_store_every_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replaced pod joining a later round would wait forever for the shared store's address
    (tests/train/test_gang.py loses a pod and needs this)."""
    from kubetune.launch import rendezvous_env

    monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)
    gang = accelerate_command("spec.yaml", gpus=0, nodes=2)
    assert rendezvous_env(gang) == {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    assert rendezvous_env(accelerate_command("spec.yaml", gpus=2)) == {}
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "0")
    assert rendezvous_env(gang) == {}, "a value the pod sets wins"


# --- one process: the supervisor starts the trainer as accelerate's simple launcher would ----


def _accelerates_own(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """What accelerate itself would run for ``argv`` (``accelerate launch …``)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    args, _defaults, _mp = _validate_launch_command(launch_command_parser().parse_args(argv[2:]))
    command, env = prepare_simple_launcher_cmd_env(args)
    return list(command), dict(env)


@pytest.mark.xdist_group(ML_GROUP)  # accelerate imports torch: in the worker that has it
@pytest.mark.parametrize("gpus", [0, 1])
@pytest.mark.parametrize("threads", [None, "3"])
def test_a_one_process_launch_runs_the_trainer_as_accelerates_simple_launcher_would(
    gpus: int, threads: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetune.launch import direct_launch

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no accelerate config file
    monkeypatch.delenv("ACCELERATE_CONFIG_FILE", raising=False)
    if threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
    argv = accelerate_command("spec.yaml", gpus=gpus, python=sys.executable)[3:]
    ours = direct_launch(argv)
    assert ours is not None
    command, env = ours
    assert (command, {**os.environ, **env}) == _accelerates_own(argv)


def test_other_launch_lines_go_through_accelerate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetune.launch import direct_launch

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for gpus, nodes in ((2, 1), (1, 2), (0, 2)):
        assert direct_launch(accelerate_command("spec.yaml", gpus=gpus, nodes=nodes)[3:]) is None
    assert direct_launch(["accelerate", "launch", "--num_processes", "1", "x.py"]) is None
    assert direct_launch(["python", "-m", "kubetune.train", "spec.yaml"]) is None
    single = accelerate_command("spec.yaml", gpus=0)[3:]
    assert direct_launch(single) is not None
    config = tmp_path / "accelerate" / "default_config.yaml"
    config.parent.mkdir()
    config.write_text("mixed_precision: bf16\n")  # the user's own accelerate settings win
    assert direct_launch(single) is None


TRAINER_WITH_A_HELPER = """
import os, signal, subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # like wandb's
def stop(signum, frame):
    helper.kill()
    open(os.environ["KUBETUNE_EXIT_FILE"], "w").write("130")
    raise SystemExit(130)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def test_a_directly_started_trainer_is_signalled_itself_not_its_helpers() -> None:
    supervisor = (
        "import sys; from kubetune.launch import supervise; "
        f"sys.exit(supervise([sys.executable, '-c', {TRAINER_WITH_A_HELPER!r}], launcher=False))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", supervisor],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
