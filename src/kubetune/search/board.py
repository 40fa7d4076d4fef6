"""A driven sweep as people read it: the leaderboard, the budget, the search space.

Shared by ``kubetune run`` (live, as trials end), ``kubetune status`` and ``kubetune sweep``.
No Optuna: it reads :class:`~kubetune.search.state.SweepState` and the spec.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from kubetune._tables import add_id_column, add_value_column, format_value
from kubetune.search.state import SweepState
from kubetune.spec import SweepSpec

_STYLES = {"completed": "green", "pruned": "cyan", "running": "yellow", "failed": "red"}


def leaderboard(state: SweepState, *, limit: int | None = None) -> Table:
    """Trials best first: number, run, state, objective, rungs, parameters, CPU/GPU time."""
    rows = state.leaderboard()
    if limit is not None:
        rows = rows[:limit]
    params: list[str] = []
    for row in rows:
        params += [p for p in row.params if p not in params]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(state.counts().items()))
    table = Table(title=escape(f"{state.sweep}: {state.method}, {counts or 'no trials yet'}"))
    table.add_column("#", justify="right")
    add_id_column(table, "run id", [r.run_id or "—" for r in rows])
    table.add_column("state")
    table.add_column(f"{state.metric}\n({'max' if state.direction == 'maximize' else 'min'})",
                     justify="right")  # fmt: skip
    table.add_column("rungs", justify="right")
    cells = {p: [escape(format_value(r.params.get(p))) if p in r.params else "—" for r in rows]
             for p in params}  # fmt: skip
    for p in params:
        add_value_column(table, p, cells[p])
    gpu = any(r.gpu_seconds for r in rows)
    table.add_column("GPU h" if gpu else "CPU s", justify="right")
    best = state.best()
    for i, row in enumerate(rows):
        value = "—" if row.value is None else f"{row.value:.4f}"
        if best is not None and row.number == best.number:
            value = f"[bold]{value}[/]"
        shown = row.state if row.same_as is None else f"{row.state} (= #{row.same_as})"
        cost = f"{row.gpu_seconds / 3600:.2f}" if gpu else f"{row.cpu_seconds:.0f}"
        table.add_row(
            str(row.number),
            row.run_id or "—",
            f"[{_STYLES[row.state]}]{shown}[/]",
            value,
            str(row.rungs or "—"),
            *(cells[p][i] for p in params),
            cost,
        )
    return table


def budget_line(state: SweepState) -> str:
    """``spent 0.42 of 2 CPU-hours, 0.5 hours; launching stopped: budget …``"""
    spent = state.spent
    used = {"gpu_hours": spent.gpu_hours, "cpu_hours": spent.cpu_hours, "hours": spent.hours}
    labels = {"gpu_hours": "GPU-hours", "cpu_hours": "CPU-hours", "hours": "hours"}
    parts = []
    for key, value in used.items():
        if key in state.budget:
            parts.append(f"{value:.3g} of {state.budget[key]:g} {labels[key]}")
        elif key != "gpu_hours" or value:
            parts.append(f"{value:.3g} {labels[key]}")
    line = "spent " + ", ".join(parts)
    if state.stopped:
        line += f"; launching stopped: {state.stopped}"
    return line


def space_table(name: str, sweep: SweepSpec) -> Table:
    """The search space of a tpe or cmaes sweep (its trials are asked as results come in)."""
    ends = f"up to {sweep.max_runs} trials" if sweep.max_runs else "until its budget ends"
    extra = f", pruner {sweep.pruner.type}" if sweep.pruner else ""
    table = Table(title=escape(f"{name}: {sweep.method} search, {ends}{extra}"))
    table.add_column("parameter")
    table.add_column("searched over")
    table.add_column("when")
    for path, param in sweep.parameters.items():
        if param.values is not None:
            over = "one of " + "; ".join(
                "null" if v is None else format_value(v) for v in param.values
            )
        elif param.uniform is not None:
            over = f"uniform [{param.uniform[0]:g}, {param.uniform[1]:g}]"
        elif param.log_uniform is not None:
            over = f"log-uniform [{param.log_uniform[0]:g}, {param.log_uniform[1]:g}]"
        else:
            assert param.int_uniform is not None
            over = f"integers [{param.int_uniform[0]}, {param.int_uniform[1]}]"
        when = "; ".join(f"{k} = {format_value(v)}" for k, v in (param.when or {}).items()) or "—"
        table.add_row(escape(path), escape(over), escape(when))
    return table
