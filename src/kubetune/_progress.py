"""The displays of ``kubetune run``: progress while training, a table at the end.

Progress and diagnostics go to one console (stderr), results (the table, where each run
went) to another (stdout). On a terminal the progress is a live bar; elsewhere (a CI log,
``| tee``, a pod's log) a live bar prints nothing until it ends, so :class:`PlainDisplay`
prints lines instead: see :func:`display_for`.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kubetune import events
from kubetune._tables import add_id_column
from kubetune.errors import DEBUG
from kubetune.headline import RANKED
from kubetune.local import Display, Outcome, tail
from kubetune.sweep import ResolvedRun

#: Metric columns of the summary table: the first of :data:`~kubetune.headline.RANKED` that
#: any run reports.
COLUMNS = 2


def display_for(console: Console, results: Console) -> RichDisplay:
    """A live bar on a terminal, plain lines anywhere else."""
    kind = RichDisplay if console.is_terminal else PlainDisplay
    return kind(console, results)


class RichDisplay(Display):
    def __init__(self, console: Console, results: Console | None = None) -> None:
        self.console = console
        self.results = results or console
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.metric = ""

    def start(self, run: ResolvedRun) -> None:
        params = ", ".join(f"{k}={v}" for k, v in run.params.items())
        self.console.print(f"[bold]{run.run_id}[/] {escape(params)}".rstrip())
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("preparing", total=None, info="")

    def event(self, run: ResolvedRun, event: events.Event) -> None:
        assert self.progress is not None and self.task is not None
        note = _note(event)
        if note:
            self.progress.console.print(note)
        elif isinstance(event, events.TrainBegin):
            self.progress.update(
                self.task, description="training", total=event.max_steps, completed=event.step
            )
        elif isinstance(event, events.Step):
            info = f"loss {event.loss:.4f}" if event.loss is not None else ""
            if self.metric:
                info += f"  {self.metric}"
            self.progress.update(self.task, completed=event.step, total=event.max_steps, info=info)
        elif isinstance(event, events.Eval) and event.value is not None:
            self.metric = f"eval {event.metric} {event.value:.4f}"

    def finish(self, outcome: Outcome) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.task, self.metric = None, None, ""
        if outcome.status == "already-completed":
            self.console.print(f"  [green]already finished[/] at {outcome.url}; not retrained")
        elif outcome.status == "pruned":
            at = outcome.metrics.get("pruned", {})
            value = at.get("value")
            shown = f": {value:.4f}" if isinstance(value, int | float) else ""
            self.console.print(
                f"  [cyan]pruned[/] by the sweep at evaluation {at.get('rung')} "
                f"(step {at.get('step')}){shown}; its checkpoint is at {outcome.url}"
            )
        elif outcome.status == "interrupted":
            self.console.print(
                f"  [yellow]stopped[/] with a checkpoint at {outcome.url or 'the store'}; "
                "run the same command again to resume"
            )
        elif outcome.status == "config-error":
            for line in outcome.errors or tail(outcome.log):
                self.console.print(f"[bold red]error:[/] {escape(line)}")
        elif outcome.status == "failed" and outcome.errors and not os.environ.get(DEBUG):
            # The trainer said what failed in one line; the traceback stays in the log.
            for line in outcome.errors:
                self.console.print(
                    f"[bold red]error:[/] {escape(line)} (the whole log: {outcome.log})"
                )
        elif outcome.status == "failed":
            self.console.print(
                f"[bold red]error:[/] {outcome.run.run_id} failed; "
                f"the end of its log ({outcome.log}):"
            )
            for line in tail(outcome.log):
                self.console.print(f"  {escape(line)}")

    def summary(self, outcomes: list[Outcome]) -> None:
        done = [o for o in outcomes if o.status in ("completed", "already-completed")]
        if not done:
            return
        splits = [s for s in ("eval", "test") if any(s in o.metrics for o in done)]
        names = [m for m in RANKED if any(m in o.metrics.get(s, {}) for o in done for s in splits)][
            :COLUMNS
        ]
        table = Table(title="kubetune run")
        add_id_column(table, "run id", [o.run.run_id for o in done])
        for split in splits:
            for name in names:
                table.add_column(f"{split}\n{name}", justify="right")
        table.add_column("time", justify="right")
        for o in done:
            cells = [
                f"{o.metrics[s][n]:.4f}"
                if isinstance(o.metrics.get(s, {}).get(n), (int, float))
                else "—"
                for s in splits
                for n in names
            ]
            # Training time where the run trained; the whole run for a zero-shot baseline.
            seconds = o.metrics.get("train", {}).get("train_runtime", o.seconds)
            table.add_row(o.run.run_id, *cells, f"{seconds:.0f}s")
        self.results.print(table)
        for o in done:
            self.results.print(f"  {o.run.run_id} → {o.url}")


class PlainDisplay(RichDisplay):
    """Progress as lines, for a console that is not a terminal: one per evaluation, and one
    each :data:`LINES`-th of training (and at its last step) with step/total, loss, the latest
    eval metric, steps per second and the time left. The pace comes from the trainer's own
    ``elapsed``, so the same events always print the same lines."""

    #: Step lines per run: one each tenth of training.
    LINES = 10

    def __init__(self, console: Console, results: Console | None = None) -> None:
        super().__init__(console, results)
        self.first = 0  # the step training (re)started at
        self.every = 1
        self.printed = -1

    def start(self, run: ResolvedRun) -> None:
        params = ", ".join(f"{k}={v}" for k, v in run.params.items())
        self.console.print(f"[bold]{run.run_id}[/] {escape(params)}".rstrip())
        self.first, self.every, self.printed = 0, 1, -1

    def event(self, run: ResolvedRun, event: events.Event) -> None:
        note = _note(event)
        if note:
            self.console.print(note)
        elif isinstance(event, events.TrainBegin):
            self.first = event.step
            self.every = max(1, (event.max_steps - self.first) // self.LINES)
            self.console.print(f"  training: steps {self.first}→{event.max_steps}")
        elif isinstance(event, events.Step):
            step, total = event.step, event.max_steps
            if step != self.printed and ((step - self.first) % self.every == 0 or step == total):
                self.printed = step
                self.console.print(f"  {_step_line(event, self.first, self.metric)}")
        elif isinstance(event, events.Eval) and event.value is not None:
            self.metric = f"eval {event.metric} {event.value:.4f}"
            self.console.print(f"  step {event.step}: {self.metric}")

    def finish(self, outcome: Outcome) -> None:
        self.progress = None  # there is no bar to stop
        super().finish(outcome)


def _note(event: events.Event) -> str:
    """The line of an event that is said once (the model, a resume, a rejected checkpoint)."""
    if isinstance(event, events.Model):
        total, trainable = event.total, event.trainable
        labels = f", {event.labels} labels" if event.labels else ""
        return (
            f"  model: {_count(total)} parameters, {_count(trainable)} trainable"
            f" ({100 * trainable / max(total, 1):.1f}%){labels}"
        )
    if isinstance(event, events.Resume):
        return f"  resuming from the checkpoint at step {event.step}"
    if isinstance(event, events.CheckpointRejected):
        return f"  [yellow]checkpoint at step {event.step} rejected[/]: {escape(str(event.reason))}"
    return ""


def _step_line(event: events.Step, first: int, metric: str) -> str:
    """``step 120/1200 (10%)  loss 0.4321  eval accuracy 0.9012  2.31 steps/s  ETA 7m48s``"""
    step, total = event.step, event.max_steps
    parts = [f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)"]
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if metric:
        parts.append(metric)
    elapsed = event.elapsed
    if elapsed is not None and elapsed > 0 and step > first:
        rate = (step - first) / elapsed
        parts += [f"{rate:.2f} steps/s", f"ETA {_duration((total - step) / rate)}"]
    return "  ".join(escape(p) for p in parts)


def _duration(seconds: float) -> str:
    """45s, 7m48s, 2h05m."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _count(n: int) -> str:
    """22.7M, 312.5k, 840."""
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)
