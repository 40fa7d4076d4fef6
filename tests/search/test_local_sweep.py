"""``kubetune run`` of driven sweeps with real (tiny) trainers in subprocesses: a trial
stopped at a rung ends ``pruned`` with its checkpoint; a driver killed mid-sweep and run
again finishes the same trials without training any twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tiny import tiny_spec, write_yaml

pytestmark = pytest.mark.slow

KUBETUNE = str(Path(sys.executable).with_name("kubetune"))


def kubetune(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBETUNE, *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, "COLUMNS": "220", **(env or {})})  # fmt: skip


def search_spec(tiny: dict[str, Path], **sweep: Any) -> dict[str, Any]:
    return tiny_spec(
        tiny,
        train={"epochs": 6, "save_strategy": "epoch", "eval_strategy": "epoch"},
        sweep={
            "method": "tpe",
            "seed": 3,
            "max_runs": 3,
            # eval loss: continuous, so the pruner's comparisons have no ties
            "objective": {"metric": "loss"},
            "pruner": {"type": "asha", "reduction_factor": 2, "wait_seconds": 120},
            "parameters": {"train.learning_rate": {"log_uniform": [1e-4, 3e-2]}},
            **sweep,
        },
    )


def sweep_state(root: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((root / "runs" / "tiny-cls" / "sweep.json").read_text())
    return state


def test_pruned_trials_keep_checkpoints_and_a_killed_driver_finishes_the_same_sweep(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    for folder in (unbroken, broken):
        folder.mkdir()
        write_yaml(folder / "job.yaml", search_spec(tiny))
    proc = kubetune("run", "job.yaml", cwd=unbroken)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    state = sweep_state(unbroken)
    trials = state["trials"]
    assert len(trials) == 3 and state["stopped"] == "max_runs (3) reached"
    assert "pruned by the sweep at evaluation" in proc.stderr
    assert "tiny-cls: tpe" in proc.stdout  # the leaderboard
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, trials
    for trial in pruned:
        folder = unbroken / "runs" / "tiny-cls" / trial["run_id"]
        record = json.loads((folder / "run.json").read_text())
        assert record["status"] == "pruned"
        rung = record["pruned_at"]["rung"]
        # Stopped at an ASHA rung (evaluation 1, 2 or 4 of 6), at that epoch's end.
        assert rung in (1, 2, 4) and record["step"] == rung * 10  # 100 rows, batches of 10
        stored = record["stored_step"]
        assert (folder / "checkpoints" / f"step-{stored:06d}" / "MANIFEST.json").is_file()
        assert not (folder / "final").exists()
        assert record["compute"]["cpu_seconds"] > 0
        decisions = sorted((folder / "rungs").glob("*.decision.json"))
        assert len(decisions) == rung
        assert json.loads(decisions[-1].read_text())["prune"] is True
    for trial in trials:
        if trial["state"] == "completed":
            folder = unbroken / "runs" / "tiny-cls" / trial["run_id"]
            record = json.loads((folder / "run.json").read_text())
            assert record["metrics"]["eval"]["loss"] == pytest.approx(trial["value"])

    # SIGKILL of the driver right after it told the study how trial 0 ended; then again.
    killed = kubetune("run", "job.yaml", cwd=broken, env={"KUBETUNE_FAILPOINT": "driver-told:0"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(sweep_state(broken)["trials"]) == 1
    again = kubetune("run", "job.yaml", cwd=broken)
    assert again.returncode == 0, again.stderr[-3000:]

    def trial_list(root: Path) -> list[tuple[int, str, str]]:
        return [(t["number"], t["run_id"], t["state"]) for t in sweep_state(root)["trials"]]

    assert trial_list(broken) == trial_list(unbroken)
    for number, run_id, _state in trial_list(broken):
        record = json.loads((broken / "runs" / "tiny-cls" / run_id / "run.json").read_text())
        assert record["attempt"] == 1, (number, record["attempt"])  # trained once
