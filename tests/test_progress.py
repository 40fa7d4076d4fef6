"""The displays of ``kubetune run`` fed synthetic trainer events: what a user reads."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from kubetune import events, sweep
from kubetune import spec as specmod
from kubetune._progress import PlainDisplay, RichDisplay, display_for
from kubetune.local import Outcome

from conftest import base_spec


def consoles(terminal: bool = False) -> tuple[Console, Console]:
    """(progress, results) consoles writing to strings, as stderr and stdout would."""
    return (
        Console(file=io.StringIO(), width=200, force_terminal=terminal),
        Console(file=io.StringIO(), width=200, force_terminal=terminal),
    )


def text(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def one_run() -> sweep.ResolvedRun:
    data = base_spec(sweep={"parameters": {"train.learning_rate": {"values": [2e-5]}}})
    (run,) = sweep.expand(specmod.validate(data, "job.yaml"), "job.yaml")
    return run


def training(first: int, total: int, seconds_per_step: float) -> list[events.Event]:
    """The events of a run from step ``first`` (a resume when > 0) to ``total``, evaluated
    at its middle and end."""
    said: list[events.Event] = [events.TrainBegin(step=first, max_steps=total)]
    for step in range(first + 1, total + 1):
        elapsed = (step - first) * seconds_per_step
        loss = 1.0 / step
        said.append(events.Step(step=step, max_steps=total, loss=loss, elapsed=elapsed))
        if step in (total // 2, total):
            said.append(events.Eval(step=step, metric="accuracy", value=0.9))
    return said


def test_not_a_terminal_gets_plain_lines_and_a_terminal_the_live_bar() -> None:
    assert type(display_for(*consoles(terminal=False))) is PlainDisplay
    assert type(display_for(*consoles(terminal=True))) is RichDisplay


def test_plain_display_prints_a_line_each_tenth_and_each_evaluation() -> None:
    progress, results = consoles()
    display, run = PlainDisplay(progress, results), one_run()
    display.start(run)
    for event in training(0, 200, seconds_per_step=0.5):
        display.event(run, event)
    lines = text(progress).splitlines()
    assert lines[0] == f"{run.run_id} train.learning_rate=2e-05"
    steps = [line.strip() for line in lines if line.startswith("  step ") and "/200" in line]
    assert [s.split()[1] for s in steps] == [f"{n}/200" for n in range(20, 201, 20)]
    assert steps[1] == "step 40/200 (20%)  loss 0.0250  2.00 steps/s  ETA 1m20s"
    assert steps[5] == (
        "step 120/200 (60%)  loss 0.0083  eval accuracy 0.9000  2.00 steps/s  ETA 40s"
    )
    assert steps[-1].endswith("2.00 steps/s  ETA 0s")
    assert [line.strip() for line in lines if "eval" in line and "/200" not in line] == [
        "step 100: eval accuracy 0.9000",
        "step 200: eval accuracy 0.9000",
    ]


def test_plain_display_of_a_resumed_run_counts_from_where_it_resumed() -> None:
    progress, results = consoles()
    display, run = PlainDisplay(progress, results), one_run()
    display.start(run)
    for event in training(150, 250, seconds_per_step=0.25):
        display.event(run, event)
    steps = [line.strip() for line in text(progress).splitlines() if "/250 (" in line]
    assert [s.split()[1] for s in steps] == [f"{n}/250" for n in range(160, 251, 10)]
    assert "4.00 steps/s  ETA 22s" in steps[0]


def test_results_go_to_their_own_console_and_progress_to_the_other() -> None:
    progress, results = consoles()
    display, run = PlainDisplay(progress, results), one_run()
    display.start(run)
    for event in training(0, 10, seconds_per_step=1.0):
        display.event(run, event)
    metrics = {"test": {"accuracy": 0.93}, "train": {"train_runtime": 12.0}}
    outcome = Outcome(run, "completed", url="file:///runs/x", metrics=metrics)
    display.finish(outcome)
    display.summary([outcome])
    assert run.run_id in text(results) and "0.9300" in text(results)
    assert "file:///runs/x" in text(results)
    assert "0.9300" not in text(progress) and "│" not in text(progress)


def test_a_failed_run_is_the_trainers_one_line_and_debug_shows_its_log(
    tmp_path: Any, monkeypatch: Any
) -> None:
    log = tmp_path / "run.log"
    log.write_text("Traceback (most recent call last):\n  File x\nOSError: disk full\n")
    failed = Outcome(one_run(), "failed", log=log, errors=["OSError: disk full"])
    monkeypatch.delenv("KUBETUNE_DEBUG", raising=False)
    progress, _ = consoles()
    RichDisplay(progress).finish(failed)
    lines = text(progress).splitlines()
    assert lines == [f"error: OSError: disk full (the whole log: {log})"]

    monkeypatch.setenv("KUBETUNE_DEBUG", "1")
    progress, _ = consoles()
    RichDisplay(progress).finish(failed)
    assert "Traceback (most recent call last):" in text(progress)
