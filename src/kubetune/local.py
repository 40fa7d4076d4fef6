"""``kubetune run``: the embedded default, each run in a subprocess on this machine.

A run goes through exactly the launch line a Kubernetes Job uses (:mod:`kubetune.launch`).
The trainer prints machine-readable progress events (``@@kubetune {json}``) on stdout.
This module turns them into a progress display, sends everything else to a log file, and
maps the trainer's exit code: 0 done, 2 a spec/config error, 130 stopped with a checkpoint,
anything else a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune import events, launch
from kubetune import spec as specmod
from kubetune.errors import EXIT_INTERRUPTED, EXIT_USER, ConfigError
from kubetune.kube import names
from kubetune.sweep import ResolvedRun


@dataclass
class Outcome:
    """What one run ended with."""

    run: ResolvedRun
    status: str  # completed | already-completed | pruned | interrupted | config-error | failed
    url: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def local_gpus() -> int:
    """GPUs visible here, without importing torch (the CLI stays light)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def accelerate_executable() -> str:
    """``accelerate`` beside this Python (a venv need not be activated), else on PATH."""
    beside = Path(sys.executable).with_name("accelerate")
    if beside.is_file():
        return str(beside)
    found = shutil.which("accelerate")
    if found is None:
        raise ConfigError(
            "kubetune run needs the trainer's stack: pip install 'kubetune[train]' "
            "(or make demo, which sets it up)"
        )
    return found


def store_root(uri: str) -> Path | None:
    """The local folder of a file:// store (for logs and W&B files), else None."""
    if uri.startswith("file://"):
        from kubetune.store import file_uri_path

        return file_uri_path(uri)
    return None


class Display:
    """Progress events → what the user sees. The CLI supplies a rich implementation."""

    def start(self, run: ResolvedRun) -> None: ...
    def event(self, run: ResolvedRun, event: events.Event) -> None: ...
    def finish(self, outcome: Outcome) -> None: ...


def run_one(
    run: ResolvedRun,
    store: str,
    display: Display,
    *,
    gpus: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Outcome:
    """Run one resolved run in a subprocess under ``accelerate launch`` (``extra_env``: variables
    to add, such as the GPUs a sweep driver gives this trial)."""
    root = store_root(store) or Path("runs")
    logs = root / ".logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{run.run_id}.log"
    spec_dir = Path(tempfile.mkdtemp(prefix="kubetune-spec-"))
    spec_file = spec_dir / f"{run.run_id}.yaml"
    spec_file.write_text(specmod.dump(run.spec), encoding="utf-8")
    env = {
        **os.environ,
        names.STORE_ENV: store,
        names.RUN_ID_ENV: run.run_id,
        names.SWEEP_ENV: run.sweep,
        "WANDB_DIR": os.environ.get("WANDB_DIR") or str((root / ".wandb").resolve()),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if run.params:
        env[names.PARAMS_ENV] = json.dumps(run.params, sort_keys=True)
    if run.rungs:
        env[names.RUNGS_ENV] = run.rungs
    env.update(extra_env or {})
    command = launch.accelerate_command(
        str(spec_file), gpus=local_gpus() if gpus is None else gpus, nodes=1, python=sys.executable
    )
    command[3] = accelerate_executable()
    outcome = Outcome(run, "failed", log=log_path)
    display.start(run)
    started = time.monotonic()
    interrupted = False
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            bufsize=1,
        )
        assert proc.stdout is not None
        while True:
            try:
                line = proc.stdout.readline()
            except KeyboardInterrupt:
                # The trainer got the same SIGINT: it saves a checkpoint and stops. A second
                # Ctrl-C ends it at once.
                if interrupted:
                    proc.kill()
                    break
                interrupted = True
                continue
            if not line:
                break
            event = events.parse(line)
            if event is not None:
                _apply(outcome, event)
                display.event(run, event)
            else:
                log.write(line)
                if line.startswith("error: "):
                    outcome.errors.append(line[len("error: ") :].rstrip())
        code = proc.wait()
    shutil.rmtree(spec_dir, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    if outcome.status not in ("completed", "already-completed", "pruned"):
        if outcome.status == "interrupted" or code == EXIT_INTERRUPTED or interrupted:
            outcome.status = "interrupted"
        else:
            outcome.status = "config-error" if code == EXIT_USER else "failed"
    display.finish(outcome)
    return outcome


def _apply(outcome: Outcome, event: events.Event) -> None:
    if isinstance(event, events.Done):
        outcome.status = "already-completed" if event.already else "completed"
        outcome.url = event.url
        outcome.metrics = event.metrics
    elif isinstance(event, events.Pruned):
        outcome.status = "pruned"
        outcome.url = event.url
        outcome.metrics = {"pruned": {"rung": event.rung, "step": event.step, "value": event.value}}
    elif isinstance(event, events.Interrupted):
        outcome.status = "interrupted"
        outcome.url = event.url


def tail(path: Path | None, lines: int = 15) -> list[str]:
    """The last lines of a log."""
    if path is None:
        return []
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []
