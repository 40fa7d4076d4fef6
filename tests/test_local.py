"""`kubetune run` as a user runs it: accelerate launch, progress, summary, exit codes, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import base_spec, run_cli
from tiny import tiny_spec, write_yaml

KUBETUNE = str(Path(sys.executable).with_name("kubetune"))


def kubetune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBETUNE, *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})  # fmt: skip


@pytest.mark.slow
def test_run_trains_prints_a_summary_and_does_not_retrain(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    data = tiny_spec(tiny, sweep={"parameters": {"train.learning_rate": {"values": [5e-3, 3e-3]}}},
                     train={"epochs": 3})  # fmt: skip
    path = write_yaml(tmp_path / "job.yaml", data)
    proc = kubetune("run", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "kubetune run" in out and "accuracy" in out and "eval" in out and "test" in out
    # Not a terminal: progress as plain lines on stderr, the results table on stdout.
    assert "steps/s" in proc.stderr and "ETA" in proc.stderr and "eval accuracy" in proc.stderr
    assert "kubetune run" in proc.stdout and "steps/s" not in proc.stdout
    runs = sorted((tmp_path / "runs" / "tiny-cls").iterdir())
    assert len(runs) == 2
    assert all((r / "run.json").is_file() and (r / "final" / "config.json").is_file() for r in runs)
    assert str(runs[0].name) in out
    assert (tmp_path / "runs" / ".logs" / f"{runs[0].name}.log").is_file()

    again = kubetune("run", str(path), "--run", runs[1].name, cwd=tmp_path)
    assert again.returncode == 0
    assert "already finished" in again.stdout + again.stderr


@pytest.mark.slow
def test_run_config_error_exits_2_with_the_trainers_line(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    path = write_yaml(tmp_path / "job.yaml", tiny_spec(tiny, data={"label_column": "topic"}))
    proc = kubetune("run", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert errors and "data.label_column: column 'topic' is not in the train data" in errors[0]


def test_run_rejects_a_bad_store(tmp_path: Path) -> None:
    # Refused before any model or data is looked at: no tiny model needed.
    path = write_yaml(tmp_path / "job.yaml", base_spec())
    proc = run_cli("run", str(path), "--store", "ftp://x", cwd=tmp_path)
    assert proc.returncode == 2 and "--store ftp://x: use file://" in proc.stderr


def _interrupt(path: Path, cwd: Path, until: Callable[[str], bool]) -> tuple[int, str]:
    """``kubetune run path`` until ``until(output so far)`` holds, then Ctrl-C: its exit
    code and everything it printed."""
    proc = subprocess.Popen([KUBETUNE, "run", str(path)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    stream = proc.stdout
    assert stream is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")))
    reader.start()
    # Waits on what the run has done, however slow the machine (pytest-timeout ends a hang).
    while proc.poll() is None and not until("".join(lines)):
        time.sleep(0.2)
    assert until("".join(lines)) or _reached(until, lines, reader), "".join(lines)
    # Ctrl-C in a terminal signals the whole foreground process group.
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=300)
    reader.join(timeout=60)
    return code, "".join(lines)


def _reached(until: Callable[[str], bool], lines: list[str], reader: threading.Thread) -> bool:
    """Whether ``until`` holds once the exited run's last output is read."""
    reader.join(timeout=60)
    return until("".join(lines))


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_run(tiny: dict[str, Path], tmp_path: Path) -> None:
    # 400 steps, a checkpoint every 10: the first Ctrl-C lands long before the end.
    data = tiny_spec(tiny, train={"epochs": 40, "save_strategy": "steps", "save_steps": 10})
    path = write_yaml(tmp_path / "job.yaml", data)
    store = tmp_path / "runs" / "tiny-cls"
    code, out = _interrupt(
        path, tmp_path, lambda _: bool(list(store.glob("*/checkpoints/step-*/MANIFEST.json")))
    )
    assert code == 130, out
    assert "run the same command again to resume" in out
    # The same command resumes from that checkpoint (and is stopped again there: training
    # the rest to the end is what test_runner's resume tests check).
    code, out = _interrupt(
        path, tmp_path, lambda text: "resuming from the checkpoint at step" in text
    )
    assert "resuming from the checkpoint at step" in out, out
    assert code == 130, out


def test_data_prepare_unknown_dataset_is_one_line(tmp_path: Path) -> None:
    proc = kubetune("data", "prepare", "bbc", str(tmp_path / "x"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "bbc-news" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
