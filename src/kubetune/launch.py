"""The one launch line of the trainer, shared by the Kubernetes Job and ``kubetune run``.

The trainer always starts from this line so that a laptop run and a cluster run take the
same code path. For one process on one machine the supervisor starts the trainer itself,
with the environment accelerate's simple launcher would give it (:func:`direct_launch`):
accelerate's CLI would import torch only to start a process that imports it again. Across
nodes, Kubernetes fills ``$(KUBETUNE_MACHINE_RANK)`` (the
pod's completion index) and ``$(KUBETUNE_MAIN_HOST)`` (index 0 behind the headless Service)
from the container's environment.

More than one process (``gpus > 1`` or ``nodes > 1``) goes through accelerate's torchrun
path (``--multi_gpu``; on a CPU node its workers use gloo): accelerate's ``--cpu`` with
several processes would start one process and expect MPI. Across nodes the ranks meet in a
c10d rendezvous hosted by index 0, with ``--max_restarts``: when a worker or a whole pod
fails, every agent stops its workers and the gang meets again (a replaced pod joins the next
round), then resumes from the newest stored checkpoint. A static rendezvous cannot take a
replaced rank back.

The line starts with ``python -m kubetune.launch``, a small supervisor (:func:`supervise`,
PID 1 of the pod; no torch import) that:

- exits 0 at once when the run is already completed in the store, before any rendezvous, so a
  lone rank re-created after the gang finished never waits for peers that will not come;
- runs accelerate in its own session and, on SIGTERM/SIGINT (the kubelet signals PID 1
  only), signals the trainer processes themselves, never torchrun's agent: the agent would
  SIGKILL its workers 30 s later, whatever the pod's grace period. The trainers agree on a
  stop, store a checkpoint and exit; the agent sees its workers finish and exits too;
- waits until every process it started is gone (it is a child subreaper, so orphans come
  back to it), and exits with the trainer's own code: 2 for a spec or config error (the
  chart's podFailurePolicy fails the Job), 130 for a clean stop (retried without counting).
  ``accelerate launch`` itself turns every failure into 1, so the trainer leaves its code in
  a file (:data:`EXIT_FILE_ENV`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetune.store.record import RunRecord

from kubetune import events
from kubetune.kube import names

#: Where the chart mounts the run's resolved spec.
SPEC_PATH = "/etc/kubetune/spec.yaml"
#: Port of the multi-node rendezvous (the chart's job.rendezvousPort).
RENDEZVOUS_PORT = 29500
#: The trainer writes its exit code here so the supervisor can report it.
EXIT_FILE_ENV = "KUBETUNE_EXIT_FILE"
#: Seconds a c10d store client keeps trying to reach index 0 (which may still be pending or
#: pulling its image), and a rendezvous waits for every node before its agent gives up.
RENDEZVOUS_TIMEOUT = 900
#: Exit code of a clean stop (kubetune.errors.EXIT_INTERRUPTED; not imported: no package
#: import beyond what the supervisor needs).
_INTERRUPTED = 130


def accelerate_command(
    spec_path: str,
    *,
    gpus: int,
    nodes: int = 1,
    machine_rank: str = "$(KUBETUNE_MACHINE_RANK)",
    main_host: str = "$(KUBETUNE_MAIN_HOST)",
    port: int = RENDEZVOUS_PORT,
    max_restarts: int = 3,
    python: str = "python",
) -> list[str]:
    """``python -m kubetune.launch accelerate launch … -m kubetune.train SPEC``.

    ``max_restarts``: how often each node's agent restarts the whole gang in place after a
    worker or node failure (multi-node only).
    """
    processes = max(gpus, 1) * nodes
    command = [
        python, "-m", "kubetune.launch",
        "accelerate", "launch",
        "--num_machines", str(nodes),
        "--num_processes", str(processes),
        "--dynamo_backend", "no",
    ]  # fmt: skip
    if processes > 1:
        command.append("--multi_gpu")  # torchrun; on CPU nodes the workers use gloo
    elif gpus == 0:
        command.append("--cpu")
    if nodes > 1:
        command += [
            "--machine_rank", machine_rank,
            "--main_process_ip", main_host,
            "--main_process_port", str(port),
            "--rdzv_backend", "c10d",
            "--max_restarts", str(max_restarts),
            "--rdzv_conf", f"join_timeout={RENDEZVOUS_TIMEOUT},read_timeout={RENDEZVOUS_TIMEOUT}",
        ]  # fmt: skip
    return [*command, "-m", "kubetune.train", spec_path]


def with_rendezvous_host(argv: list[str]) -> list[str]:
    """Say which node hosts the c10d store: the one of machine rank 0.

    torch guesses it by resolving the endpoint's DNS name, which races the headless
    Service's record of a pod that just started; a guess of "not me" on index 0 leaves every
    node waiting for a store no one hosts.
    """
    if "c10d" not in argv or "--machine_rank" not in argv or "--rdzv_conf" not in argv:
        return argv
    rank = argv[argv.index("--machine_rank") + 1]
    at = argv.index("--rdzv_conf") + 1
    host = "true" if rank == "0" else "false"
    return [*argv[:at], f"{argv[at]},is_host={host}", *argv[at + 1 :]]


#: torch's elastic agents share their c10d store with the workers by default. A node that
#: joins a later round (a replaced pod) then waits for that store's address in the new round,
#: which the surviving rank-0 agent, having published it once, never writes again: the gang
#: hangs until the rendezvous read timeout. Without the sharing, rank 0 publishes a fresh
#: address every round. (Seen with torch 2.13; pytorch/pytorch#135712 is the same sharing
#: breaking restarts another way.)
NO_SHARED_STORE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def rendezvous_env(argv: list[str]) -> dict[str, str]:
    """What a c10d rendezvous needs in torch's environment; a value already set wins."""
    if "c10d" not in argv:
        return {}
    return {k: v for k, v in NO_SHARED_STORE.items() if k not in os.environ}


def completed_elsewhere() -> tuple[str, RunRecord] | None:
    """The store URL and run.json of this run when it says completed (or pruned by its
    sweep: it is not trained again either); else None.

    Reads ``KUBETUNE_STORE``, ``KUBETUNE_SWEEP`` and ``KUBETUNE_RUN_ID`` (the chart sets all
    three); without them, or when the store cannot be read, the trainer decides as usual.
    """
    uri, sweep, run_id = (
        os.environ.get(k) for k in (names.STORE_ENV, names.SWEEP_ENV, names.RUN_ID_ENV)
    )
    if not (uri and sweep and run_id):
        return None
    from kubetune.store import NotFoundError, RunLocation, StoreError, endpoint_here, open_store
    from kubetune.store.record import load_record

    try:
        location = RunLocation(open_store(uri, endpoint=endpoint_here(None)), sweep, run_id)
        record = load_record(location)
    except NotFoundError:
        return None
    except StoreError as exc:
        print(f"kubetune: could not read the run record ({exc}); starting", file=sys.stderr)
        return None
    if record.status in ("completed", "pruned"):
        return location.url, record
    return None


#: The arguments of a one-process launch that :func:`direct_launch` knows how to start itself.
_SIMPLE_FLAGS = {"--num_machines": "1", "--num_processes": "1", "--dynamo_backend": "no"}


def direct_launch(argv: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """A one-process ``accelerate launch`` line as the trainer command and environment that
    accelerate's simple launcher would run, or None for any other line.

    ``accelerate launch`` imports torch before it starts the trainer, which imports torch
    again: on 2 cores about 6 s before the first step. For one process on one machine the
    launcher only sets a few variables (accelerate 1.x ``prepare_simple_launcher_cmd_env``;
    ``tests/test_launch.py`` compares this function with it), so the supervisor starts the
    trainer itself. A user's accelerate config file could change those variables: with one,
    the line goes through accelerate as written.
    """
    if len(argv) < 2 or Path(argv[0]).name != "accelerate" or argv[1] != "launch":
        return None
    if "-m" not in argv or _accelerate_config() is not None:
        return None
    at = argv.index("-m")
    options, script = argv[2:at], argv[at + 1 :]
    cpu = "--cpu" in options
    pairs = [o for o in options if o != "--cpu"]
    given = dict(zip(pairs[::2], pairs[1::2], strict=False))
    if len(pairs) % 2 or given != _SIMPLE_FLAGS or not script:
        return None
    env = {
        "ACCELERATE_USE_CPU": str(cpu),
        "ACCELERATE_MIXED_PRECISION": "no",
        "ACCELERATE_DYNAMO_BACKEND": "NO",
        "ACCELERATE_DYNAMO_MODE": "default",
        "ACCELERATE_DYNAMO_USE_FULLGRAPH": "False",
        "ACCELERATE_DYNAMO_USE_DYNAMIC": "False",
        "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "False",
        "OMP_NUM_THREADS": _threads(cpu),
    }
    if cpu:
        env |= {"KMP_AFFINITY": "granularity=fine,compact,1,0", "KMP_BLOCKTIME": "1"}
    return [sys.executable, "-m", *script], env


def _accelerate_config() -> Path | None:
    """The accelerate config file ``accelerate launch`` would read, if there is one."""
    named = os.environ.get("ACCELERATE_CONFIG_FILE")
    if named:
        return Path(named)
    cache = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    home = Path(os.environ.get("HF_HOME") or Path(cache) / "huggingface")
    default = home / "accelerate" / "default_config.yaml"
    return default if default.is_file() else None


def _threads(cpu: bool) -> str:
    """OMP_NUM_THREADS as accelerate sets it: the user's, else on CPU the physical cores."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return str(int(given))
    if cpu:
        import psutil

        physical = psutil.cpu_count(logical=False) or 1
        if physical > 1:
            return str(physical)
    return "1"


def supervise(
    argv: list[str], extra_env: dict[str, str] | None = None, *, launcher: bool = True
) -> int:
    """Run ``argv`` in its own session; forward stop signals to the trainer processes;
    return the trainer's code. ``launcher``: ``argv`` starts the trainers as its children
    (accelerate); else ``argv`` is the trainer, and is signalled itself."""
    fd, exit_file = tempfile.mkstemp(prefix="kubetune-exit-")
    os.close(fd)
    env = {**os.environ, **(extra_env or {}), EXIT_FILE_ENV: exit_file}
    child = subprocess.Popen(argv, env=env, start_new_session=True)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        trainers = _children(child.pid) if launcher else [child.pid]
        if trainers:
            for pid in trainers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        else:  # nothing started yet (or no /proc): the launcher itself stops
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
        # accelerate may be gone while the trainer still writes its last checkpoint.
        while _group_alive(child.pid):
            time.sleep(0.2)
        if _is_subreaper():
            _reap_orphans()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    path = Path(exit_file)
    reported = path.read_text(encoding="utf-8").strip()
    path.unlink()
    if reported.isdigit() and int(reported) != 0:
        return int(reported)
    if stopping and code != 0:
        return _INTERRUPTED  # stopped before any trainer could report: nothing was lost
    return code if code >= 0 else 128 - code


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def become_subreaper() -> bool:
    """Orphaned descendants (torchrun's workers when their agent dies) become this process's
    children, as they would of a pod's PID 1, so :func:`supervise` can wait for them."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def _is_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    return bool(
        libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value
    )


def _reap_orphans() -> None:
    """Wait for every child left (orphans re-parented to this subreaper)."""
    while kids := _children(os.getpid()):
        for pid in kids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m kubetune.launch accelerate launch … -m kubetune.train SPEC")
        return 2
    completed = completed_elsewhere()
    if completed is not None:
        url, record = completed
        # The same event the trainer sends for a finished run, so `kubetune run` says so.
        if record.status == "pruned":
            at = record.pruned_at or {}
            rung = int(at.get("rung") or 0)
            events.emit(events.Pruned(record.step or 0, rung, url, at.get("value")))
        else:
            events.emit(events.Done(already=True, url=url, metrics=record.metrics))
        print(f"kubetune: the run at {url} is already {record.status}; nothing to do", flush=True)
        return 0
    become_subreaper()
    direct = direct_launch(argv)
    if direct is not None:
        return supervise(*direct, launcher=False)
    return supervise(with_rendezvous_host(argv), rendezvous_env(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
