"""How a driven sweep reads: the leaderboard, the budget line, the report's sentences."""

from __future__ import annotations

from rich.console import Console

from kubetune.report import search_lines
from kubetune.search.board import budget_line, leaderboard
from kubetune.search.state import Spent, SweepState, TrialRow


def state(**changes: object) -> SweepState:
    trials = [
        TrialRow(number=0, run_id="t-aaaa1111", params={"train.learning_rate": 1e-4},
                 state="completed", value=0.91, rungs=6, cpu_seconds=600),
        TrialRow(number=1, run_id="t-bbbb2222", params={"train.learning_rate": 1e-2},
                 state="pruned", value=0.40, rungs=1, cpu_seconds=100),
        TrialRow(number=2, run_id="t-cccc3333", params={"train.learning_rate": 3e-4},
                 state="completed", value=0.95, rungs=6, cpu_seconds=600),
        TrialRow(number=3, run_id="t-cccc3333", params={"train.learning_rate": 3e-4},
                 state="completed", value=0.95, same_as=2),
        TrialRow(number=4, run_id="t-dddd4444", params={"train.learning_rate": 5e-5},
                 state="running", rungs=2, value=0.7, cpu_seconds=0),
    ]  # fmt: skip
    fields: dict[str, object] = {
        "sweep": "t", "method": "tpe", "seed": 0, "spec_hash": "0" * 64, "metric": "accuracy",
        "direction": "maximize", "parallelism": 1, "started": "2026-11-30T10:00:00+00:00",
        "updated": "2026-11-30T10:30:00+00:00", "budget": {"cpu_hours": 1.0},
        "spent": Spent(cpu_hours=1300 / 3600, hours=0.5), "trials": trials,
        "stopped": "budget: cpu_hours 1 (spent 0.361, next trial ≈ 0.167)",
    }  # fmt: skip
    fields.update(changes)
    return SweepState.model_validate(fields)


def render(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_the_leaderboard_puts_completed_best_first_then_pruned_then_running() -> None:
    rows = state().leaderboard()
    assert [r.number for r in rows] == [2, 3, 0, 1, 4]
    text = render(leaderboard(state()))
    lines = [line for line in text.splitlines() if "t-" in line and "│" in line]
    assert "completed" in lines[0] and "0.9500" in lines[0]
    assert "completed (= #2)" in lines[1]
    assert "pruned" in lines[3] and "0.4000" in lines[3]
    assert "tpe, 3 completed, 1 pruned, 1 running" in text


def test_minimising_ranks_lowest_first() -> None:
    low = state(direction="minimize", metric="loss")
    assert [r.number for r in low.leaderboard()][:3] == [0, 2, 3]
    assert low.best() is not None and low.best().number == 0  # type: ignore[union-attr]


def test_the_budget_line_says_what_was_spent_of_what_and_why_launching_stopped() -> None:
    line = budget_line(state())
    assert line.startswith("spent 0.361 of 1 CPU-hours, 0.5 hours")
    assert "GPU" not in line
    assert line.endswith("launching stopped: budget: cpu_hours 1 (spent 0.361, next trial ≈ 0.167)")


def test_the_report_says_what_pruning_saved_and_the_best_trial() -> None:
    lines = search_lines(state())
    assert lines[0].startswith("tpe sweep driven by kubetune")
    assert "5 trials (3 completed, 1 pruned, 1 running)" in lines[0]
    # Own trials used 1300 CPU-s; run in full the pruned one would have cost 600, not 100.
    assert "1300 CPU-seconds, about 72% of the ≈1800" in lines[1]
    assert lines[-1] == "Best trial: #2 (t-cccc3333), eval accuracy 0.9500."
