"""The one launch line of the trainer, shared by the Kubernetes Job and ``kubetune run``.

The trainer always starts under ``accelerate launch`` so that a laptop run and a cluster run
take the same code path. Across nodes, Kubernetes fills ``$(KUBETUNE_MACHINE_RANK)`` (the
pod's completion index) and ``$(KUBETUNE_MAIN_HOST)`` (index 0 behind the headless Service)
from the container's environment.

``accelerate launch`` turns every failure of its child into exit code 1 and does not pass a
pod's SIGTERM on to it. So the line starts with ``python -m kubetune.launch``, a small
supervisor (:func:`supervise`): it runs accelerate in its own process group, forwards
SIGTERM/SIGINT to the whole group (the trainer then saves a checkpoint and stops), waits until
every process of the group is gone, and exits with the trainer's own code (2 for a spec or
config error, which the chart's podFailurePolicy turns into an immediate failure; 130 for a
clean stop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Where the chart mounts the run's resolved spec.
SPEC_PATH = "/etc/kubetune/spec.yaml"
#: Port of the multi-node rendezvous (the chart's job.rendezvousPort).
RENDEZVOUS_PORT = 29500
#: The trainer writes its exit code here so the supervisor can report it.
EXIT_FILE_ENV = "KUBETUNE_EXIT_FILE"
#: The pod's record of its staged inputs (the chart's run.inputs): a JSON object field →
#: {source, uri, sha256} that the trainer copies into run.json as ``inputs``.
INPUTS_ENV = "KUBETUNE_INPUTS"
#: Prefix of the trainer's machine-readable progress lines on stdout (``@@kubetune {json}``).
EVENT_PREFIX = "@@kubetune "


def accelerate_command(
    spec_path: str,
    *,
    gpus: int,
    nodes: int = 1,
    machine_rank: str = "$(KUBETUNE_MACHINE_RANK)",
    main_host: str = "$(KUBETUNE_MAIN_HOST)",
    port: int = RENDEZVOUS_PORT,
    python: str = "python",
) -> list[str]:
    """``python -m kubetune.launch accelerate launch … -m kubetune.train SPEC``."""
    processes = max(gpus, 1) * nodes
    command = [
        python, "-m", "kubetune.launch",
        "accelerate", "launch",
        "--num_machines", str(nodes),
        "--num_processes", str(processes),
        "--dynamo_backend", "no",
    ]  # fmt: skip
    if gpus == 0:
        command.append("--cpu")
    elif processes > 1:
        command.append("--multi_gpu")
    if nodes > 1:
        command += [
            "--machine_rank", machine_rank,
            "--main_process_ip", main_host,
            "--main_process_port", str(port),
            "--rdzv_backend", "static",
            "--same_network",
        ]  # fmt: skip
    return [*command, "-m", "kubetune.train", spec_path]


def supervise(argv: list[str]) -> int:
    """Run ``argv`` in its own process group; forward stop signals; return the trainer's code."""
    fd, exit_file = tempfile.mkstemp(prefix="kubetune-exit-")
    os.close(fd)
    env = {**os.environ, EXIT_FILE_ENV: exit_file}
    child = subprocess.Popen(argv, env=env, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
        # accelerate may be gone while the trainer still writes its last checkpoint.
        while _group_alive(child.pid):
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    path = Path(exit_file)
    reported = path.read_text(encoding="utf-8").strip()
    path.unlink()
    if reported.isdigit() and int(reported) != 0:
        return int(reported)
    return code if code >= 0 else 128 - code


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python -m kubetune.launch accelerate launch … -m kubetune.train SPEC")
        sys.exit(2)
    sys.exit(supervise(sys.argv[1:]))
