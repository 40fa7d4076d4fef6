"""``kubetune report``: one page about a run, a sweep or a whole store.

:func:`build_report` reads every run folder at or under a URI (see the run-folder contract in
:mod:`kubetune.store`) and writes two files with the same content:

- ``report.html``: self-contained. CSS is inline, plots are PNGs in ``data:`` URIs, there is
  no script and no reference to anything outside the file, so it can be mailed, attached to
  a ticket or opened offline.
- ``report.md`` beside it. Markdown viewers (GitHub among them) do not show ``data:`` images,
  so its plots are PNG files in a folder next to it, ``report_files/``, referenced by relative
  links: keep the ``.md`` and the folder together.

What it holds, per sweep: the metrics table (eval and test splits, status, swept parameters),
the best run by the task's headline metric (lower is better for perplexity and loss), training
loss and eval metric against step for every run (from ``history.json``), each swept parameter
against the headline metric, and five example outputs per run. Across the whole report:
baselines (zero/few-shot; classical: TF-IDF + logistic regression, a CRF, the lead sentence)
beside fine-tuned runs scored on the same data, with what fine-tuning bought over the cheap
baseline and at what cost (:func:`verdict`). Runs that are still running, were interrupted,
failed, or lack metrics or history appear with their status and empty cells.

matplotlib (``pip install 'kubetune[report]'``) is imported only while drawing, and only its
Agg canvas is used: no display, no GUI toolkit, no torch.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jinja2
import yaml

from kubetune.errors import ConfigError
from kubetune.headline import (
    MULTI_LABEL_METRICS,
    RANKED,
    TASK_METRICS,
    higher_is_better,
    metrics_of,
)
from kubetune.search.board import budget_line
from kubetune.search.state import SweepState, read_state
from kubetune.spec import BASELINE_TASKS
from kubetune.store import ForbiddenError, NotFoundError, RunLocation, find_runs
from kubetune.store.record import (
    HISTORY,
    METRICS,
    Compute,
    History,
    Metrics,
    RunRecord,
    UnreadableError,
    load_history,
    load_metrics,
    metric_value,
    read_run,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: For a task without a row in :data:`~kubetune.headline.TASK_METRICS`: this many of
#: :data:`~kubetune.headline.RANKED` that any run has.
FALLBACK_COLUMNS = 3
SPLITS = ("eval", "test")
#: Example outputs shown per run.
EXAMPLES = 5
#: Longest text shown in one example cell.
FIELD_CHARS = 300
#: Parameters read on a log axis when their values span a decade or more.
LOG_SCALE_HINTS = ("learning_rate", "weight_decay", "lr")
#: Colours of runs in every plot of a sweep (matplotlib's tab10, then tab20's light half).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
BASELINE, TUNED = "#8c8c8c", "#1f77b4"
MISSING = "—"


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote."""

    html: Path
    markdown: Path
    runs: int


def build_report(uri: str, out: Path) -> Report:
    """Write the report on every run at or under ``uri`` to ``out`` (HTML) and beside it
    (``out`` with suffix ``.md``, plots in ``<out stem>_files/``).

    Raises:
        ConfigError: ``uri`` is not a store URI or holds no runs; ``out`` ends in ``.md``;
            matplotlib is not installed.
        StoreError: the store could not be read.
    """
    if out.suffix.lower() == ".md":
        raise ConfigError(f"--out {out}: name the HTML page; the Markdown goes beside it as .md")
    _require_matplotlib()
    locations = find_runs(uri)
    if not locations:
        raise ConfigError(
            f"{uri}: no runs there (a run folder holds spec.yaml); give a store, "
            "<store>/<sweep> or a run's URI"
        )
    runs = [load_run(loc) for loc in locations]
    searches: dict[str, SweepState] = {}
    for loc in {loc.sweep: loc for loc in locations}.values():
        state = read_state(loc.store, loc.sweep)
        if state is not None:
            searches[loc.sweep] = state
    page = build_page(uri, runs, searches)
    markdown = out.with_suffix(".md")
    write_page(page, out, markdown)
    return Report(html=out, markdown=markdown, runs=len(runs))


# --- reading runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One example output, as text: what went in, what was expected, what came out."""

    input: str
    reference: str
    prediction: str
    #: Whether prediction and reference agree, where that is a yes or no (not for generation).
    correct: bool | None = None


@dataclass
class RunView:
    """What the report knows about one run folder; every part may be missing."""

    sweep: str
    run_id: str
    url: str
    record: RunRecord
    #: The record's status; "starting" without run.json, "unreadable" or "forbidden".
    status: str
    task: str | None
    metrics: Metrics
    history: History
    examples: list[Example]
    #: The file the examples came from (test_predictions.jsonl or predictions.jsonl).
    examples_from: str | None
    #: Files that were there but unreadable.
    problems: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    @property
    def short(self) -> str:
        """The run id without its sweep's name (``bbc-news-1a2b3c4d`` → ``1a2b3c4d``)."""
        return self.run_id.removeprefix(f"{self.sweep}-") or self.run_id

    @property
    def label(self) -> str:
        """How plots name the run: its short id and parameters."""
        params = ", ".join(f"{_last(k)}={format_param(v)}" for k, v in self.params.items())
        return f"{self.short} {params}".strip()

    @property
    def is_baseline(self) -> bool:
        return self.task in BASELINE_TASKS

    @property
    def method(self) -> str | None:
        """A classical run's method (run.json's ``classical.method``; tfidf-logreg in records
        older than methods), None for other runs."""
        if self.task != "classical":
            return None
        details = self.record.classical
        return (details.method if details else None) or "tfidf-logreg"

    @property
    def multi_label(self) -> bool:
        """Whether the run labels texts with several labels each: its metrics are the
        multi-label ones (the record does not keep data.multi_label)."""
        only = set(MULTI_LABEL_METRICS) - set(TASK_METRICS["classification"])
        return any(only & values.keys() for values in self.metrics.values())

    def value(self, split: str, metric: str) -> float | None:
        return metric_value(self.metrics, split, metric)

    def status_detail(self) -> str:
        """The status with what explains it: the step an interrupted run stopped at, the
        error a failed run ended with, the files that could not be read."""
        detail = self.status
        if self.status == "interrupted" and self.record.step is not None:
            detail += f" at step {self.record.step}"
        elif self.status == "pruned" and self.record.pruned_at:
            detail += f" at evaluation {self.record.pruned_at.get('rung')}"
            if self.record.step is not None:
                detail += f" (step {self.record.step})"
        elif self.status == "failed" and self.record.error:
            detail += f": {_clip(self.record.error, 160)}"
        if self.problems:
            detail += f" ({'; '.join(self.problems)})"
        return detail


def load_run(loc: RunLocation) -> RunView:
    """Read one run folder. Missing files leave their part empty; unreadable ones are noted."""
    folder = read_run(loc)
    problems = [folder.problem] if folder.problem else []
    metrics = _read(loc, METRICS, load_metrics, problems)
    history = _read(loc, HISTORY, load_history, problems)
    task = folder.record.task or _spec_task(loc)
    examples, source = _read_examples(loc, problems)
    return RunView(
        sweep=loc.sweep,
        run_id=loc.run_id,
        url=loc.url,
        record=folder.record,
        status=folder.status,
        task=task,
        metrics=folder.record.metrics if metrics is None else metrics,
        history=history or [],
        examples=examples,
        examples_from=source,
        problems=problems,
    )


_T = TypeVar("_T")


def _read(
    loc: RunLocation, name: str, load: Callable[[RunLocation], _T], problems: list[str]
) -> _T | None:
    """A run file, or None where it is absent or cannot be read (noted in problems)."""
    try:
        return load(loc)
    except NotFoundError:
        return None
    except UnreadableError:
        problems.append(f"{name} unreadable")
    except ForbiddenError:
        problems.append(f"{name} forbidden")
    return None


def _spec_task(loc: RunLocation) -> str | None:
    """The task from spec.yaml, for a run whose run.json is missing."""
    try:
        spec = yaml.safe_load(loc.store.read_text(loc.key("spec.yaml")))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    task = spec.get("task") if isinstance(spec, dict) else None
    return str(task) if task else None


def _read_examples(loc: RunLocation, problems: list[str]) -> tuple[list[Example], str | None]:
    """The first :data:`EXAMPLES` rows of the test predictions, else of the eval predictions."""
    for name in ("test_predictions.jsonl", "predictions.jsonl"):
        key = loc.key(name)
        if not loc.store.exists(key):
            continue
        try:
            text = loc.store.read_text(key)
        except UnicodeDecodeError:
            problems.append(f"{name} unreadable")
            continue
        rows: list[dict[str, Any]] = []
        for line in text.splitlines():
            if len(rows) == EXAMPLES:
                break
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                problems.append(f"{name} has unreadable lines")
                break
            if isinstance(row, dict):
                rows.append(row)
        return [to_example(row) for row in rows], name
    return [], None


def to_example(row: dict[str, Any]) -> Example:
    """A prediction row of any task as input, reference and prediction.

    Rows are recognised by their keys (the run-folder contract), not by the run's task: a
    zero-shot row and a classification row look alike.
    """
    if "tokens" in row and "tags" in row:  # ner
        tokens = [str(t) for t in row["tokens"]]
        gold = entities(tokens, [str(t) for t in row["tags"]])
        guess = entities(tokens, [str(t) for t in row.get("predicted") or []])
        return Example(_clip(" ".join(tokens)), _spans(gold), _spans(guess), correct=gold == guess)
    if "source" in row or "generated" in row:  # seq2seq
        return Example(
            _clip(str(row.get("source", ""))),
            _clip(str(row.get("reference", ""))),
            _clip(str(row.get("generated", ""))),
        )
    if "generation" in row or "prompt" in row or "perplexity" in row:  # causal-lm
        scored = _perplexity_note(row)
        if "generation" not in row:
            return Example(f"row {row.get('id', '?')}", MISSING, scored or MISSING)
        generation = _clip(str(row["generation"]))
        return Example(
            _clip(str(row.get("prompt", ""))),
            _clip(str(row.get("reference", ""))),
            f"{generation} [{scored}]" if scored else generation,
        )
    if "question" in row and "answer" in row:  # question-answering
        golds = [str(t) for t in (row.get("gold") or {}).get("text") or []]
        answer = str(row["answer"]) or "(no answer)"
        if _is_number(row.get("score")):
            answer += f" ({row['score']:.2f})"
        correct = (str(row["answer"]) in golds) if golds else row["answer"] == ""
        return Example(
            _clip(str(row["question"])),
            _clip(" | ".join(golds) or "(no answer)"),
            _clip(answer),
            correct=correct,
        )
    if "label" in row and "prediction" in row:  # classification, zero-shot, classical
        if isinstance(row["prediction"], list):  # multi-label
            return _labels_example(row)
        return _label_example(row)
    return Example(_clip(json.dumps(row, ensure_ascii=False)), MISSING, MISSING)


def _label_example(row: dict[str, Any]) -> Example:
    text = row.get("text")
    shown = f"id {row.get('id', '?')}" if text is None else str(text)
    if row.get("text_pair") is not None:
        shown += f" ‖ {row['text_pair']}"
    prediction = row["prediction"]
    answer = "(unparseable)" if prediction is None else str(prediction)
    score = row.get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        answer += f" ({score:.2f})"
    if row.get("output") is not None:  # generate: the completion the label was read from
        answer += f" ← {row['output']!r}"
    correct = prediction is not None and str(prediction) == str(row["label"])
    return Example(_clip(shown), _clip(str(row["label"])), _clip(answer), correct=correct)


def _labels_example(row: dict[str, Any]) -> Example:
    """A multi-label row: its gold labels, and every label over its threshold with its score.
    Right when the two sets are equal."""
    text = row.get("text")
    shown = f"id {row.get('id', '?')}" if text is None else str(text)
    gold = row["label"] if isinstance(row["label"], list) else [row["label"]]
    chosen = [p for p in row["prediction"] if isinstance(p, dict) and "label" in p]
    answer = ", ".join(
        f"{p['label']} ({p['score']:.2f})" if _is_number(p.get("score")) else str(p["label"])
        for p in chosen
    )
    correct = {str(p["label"]) for p in chosen} == {str(g) for g in gold}
    reference = ", ".join(str(g) for g in gold) or "(none)"
    return Example(_clip(shown), _clip(reference), _clip(answer or "(none)"), correct=correct)


def _perplexity_note(row: dict[str, Any]) -> str:
    ppl = row.get("perplexity")
    if not isinstance(ppl, (int, float)):
        return ""
    tokens = row.get("tokens")
    return f"perplexity {format_metric(ppl)}" + (
        f" over {tokens} tokens" if isinstance(tokens, int) else ""
    )


def entities(tokens: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """(text, type) of each BIO-tagged entity; an I- tag without its B- starts one."""
    found: list[tuple[str, list[str]]] = []
    open_type: str | None = None
    for token, tag in zip(tokens, tags, strict=False):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if kind is None:
            open_type = None
        elif tag.startswith("I-") and open_type == kind:
            found[-1][1].append(token)
        else:
            found.append((kind, [token]))
            open_type = kind
    return [(" ".join(words), kind) for kind, words in found]


def _spans(spans: list[tuple[str, str]]) -> str:
    return _clip("; ".join(f"{text} [{kind}]" for text, kind in spans)) if spans else "(none)"


# --- the page's content ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str
    #: CSS class in the HTML page: ``num`` (right-aligned) or ``status-<status>``.
    kind: str = ""


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    best: bool = False


@dataclass(frozen=True)
class Table:
    """A table both templates render alike."""

    id: str
    columns: list[str]
    rows: list[Row]
    numeric: list[bool]


@dataclass(frozen=True)
class Plot:
    """One figure: PNG bytes, embedded in the HTML and written beside the Markdown."""

    name: str
    title: str
    alt: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class RunExamples:
    run_id: str
    status: str
    source: str | None
    examples: list[Example]


@dataclass
class Sweep:
    """One sweep's section."""

    name: str
    anchor: str
    runs: list[RunView]
    metrics: list[str]
    headline: str | None
    split: str | None
    best: RunView | None
    table: Table | None = None
    curves: list[Plot] = field(default_factory=list)
    param_plots: list[Plot] = field(default_factory=list)
    examples: list[RunExamples] = field(default_factory=list)
    #: A driven sweep: how its search went (trials, pruning, compute, budget).
    search: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> str:
        return ", ".join(dict.fromkeys(r.task or "unknown task" for r in self.runs))

    @property
    def better(self) -> str:
        """How the headline metric improves: "lower" or "higher"."""
        if self.headline is None or higher_is_better(self.headline):
            return "higher"
        return "lower"

    def best_sentence(self) -> str | None:
        if self.best is None or self.headline is None or self.split is None:
            return None
        value = self.best.value(self.split, self.headline)
        ranked = self.ranked()
        among = (
            f"{'lowest' if self.better == 'lower' else 'highest'} of {ranked} runs"
            if ranked > 1
            else f"the only run with a {self.split} {self.headline}"
        )
        params = _params_text(self.best.params)
        return (
            f"Best run: {self.best.run_id}, {self.split} {self.headline} "
            f"{format_metric(value)} ({among})" + (f"; {params}" if params else "")
        )

    def ranked(self) -> int:
        assert self.headline is not None and self.split is not None
        return sum(r.value(self.split, self.headline) is not None for r in self.runs)


@dataclass
class Comparison:
    """Baselines beside fine-tuned runs scored on the same data."""

    title: str
    split: str
    metrics: list[str]
    runs: list[RunView]
    table: Table
    plot: Plot
    summary: str
    #: "Fine-tuning beat the cheap baseline by X points at Y× the cost", and its figures.
    verdict: str | None = None


@dataclass
class Page:
    title: str
    source: str
    generated: str
    overview: str
    best_table: Table | None
    comparisons: list[Comparison]
    sweeps: list[Sweep]

    def plots(self) -> list[Plot]:
        found = [c.plot for c in self.comparisons]
        for sweep in self.sweeps:
            found += sweep.curves + sweep.param_plots
        return found


class _Names:
    """File names for plots: numbered in page order, so they are unique and sort as shown."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *parts: str) -> str:
        self.count += 1
        return f"{self.count:02d}-{_slug('-'.join(parts))}.png"


def build_page(
    source: str, runs: list[RunView], searches: dict[str, SweepState] | None = None
) -> Page:
    """Everything the templates show, with plots drawn (``searches``: the summaries of the
    driven sweeps among them, from their sweep.json)."""
    names = _Names()
    by_sweep: dict[str, list[RunView]] = {}
    for run in runs:
        by_sweep.setdefault(run.sweep, []).append(run)
    sweeps = [make_sweep(name, members) for name, members in by_sweep.items()]
    comparisons = [c for group in baseline_groups(runs) if (c := compare(group, names))]
    for sweep in sweeps:
        sweep.table = metrics_table(sweep)
        sweep.curves = [p for p in (loss_plot(sweep, names), eval_plot(sweep, names)) if p]
        sweep.param_plots = [
            p for name in swept_params(sweep.runs) if (p := param_plot(sweep, name, names))
        ]
        sweep.examples = [
            RunExamples(r.run_id, r.status, r.examples_from, r.examples) for r in sweep.runs
        ]
        state = (searches or {}).get(sweep.name)
        if state is not None:
            sweep.search = search_lines(state)
    return Page(
        title=f"kubetune report: {_title(sweeps)}",
        source=source,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        overview=_overview(runs, sweeps),
        best_table=best_table(sweeps),
        comparisons=comparisons,
        sweeps=sweeps,
    )


def _title(sweeps: list[Sweep]) -> str:
    if len(sweeps) == 1:
        (sweep,) = sweeps
        return sweep.runs[0].run_id if len(sweep.runs) == 1 else sweep.name
    return f"{len(sweeps)} sweeps"


def _overview(runs: list[RunView], sweeps: list[Sweep]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{_plural(len(runs), 'run')} in {_plural(len(sweeps), 'sweep')}: {states}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def make_sweep(name: str, runs: list[RunView]) -> Sweep:
    """A sweep's metric columns, headline metric and split, and best run."""
    metrics = metric_columns(runs)
    headline = next((m for m in metrics if _has(runs, m, SPLITS)), None)
    split = None
    if headline is not None:
        split = "test" if _has(runs, headline, ("test",)) else "eval"
    return Sweep(
        name=name,
        anchor=f"sweep-{_slug(name)}",
        runs=runs,
        metrics=metrics,
        headline=headline,
        split=split,
        best=best_run(runs, headline, split),
    )


def search_lines(state: SweepState) -> list[str]:
    """A driven sweep in sentences: its method and trials, what pruning stopped and what
    that saved, the compute and budget, why launching stopped, the best trial."""
    counts = state.counts()
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [
        f"{state.method} sweep driven by kubetune ({state.driver or 'driver'}): "
        f"{_plural(len(state.trials), 'trial')} ({shown}), {state.parallelism} at a time, "
        f"objective eval {state.metric} ({state.direction})."
    ]
    own = [t for t in state.trials if t.same_as is None]
    full = [t for t in own if t.state == "completed"]
    pruned = [t for t in own if t.state == "pruned"]
    spent = sum(t.cpu_seconds for t in own)
    if pruned and full:
        mean_full = sum(t.cpu_seconds for t in full) / len(full)
        unpruned = spent + sum(max(0.0, mean_full - t.cpu_seconds) for t in pruned)
        lines.append(
            f"Pruning stopped {_plural(len(pruned), 'trial')} early: the trials used "
            f"{spent:.0f} CPU-seconds, about {spent / unpruned:.0%} of the ≈{unpruned:.0f} "
            "they would have used in full (at the mean of the trials that ran in full)."
        )
    elif own:
        lines.append(f"The trials used {spent:.0f} CPU-seconds.")
    lines.append(budget_line(state)[0].upper() + budget_line(state)[1:] + ".")
    best = state.best()
    if best is not None and best.value is not None:
        lines.append(
            f"Best trial: #{best.number} ({best.run_id}), eval {state.metric} "
            f"{format_metric(best.value)}."
        )
    return lines


def metric_columns(runs: list[RunView]) -> list[str]:
    """The task's metrics that some run has (all of them when no run has any yet)."""
    known: list[str] = []
    for task, multi, method in dict.fromkeys((r.task, r.multi_label, r.method) for r in runs):
        named = metrics_of(task, multi, method) if task in TASK_METRICS else ()
        known += [m for m in named if m not in known]
    present = [m for m in known if _has(runs, m, SPLITS)]
    if present:
        return present
    if known:
        return known
    return [m for m in RANKED if _has(runs, m, SPLITS)][:FALLBACK_COLUMNS]


def _has(runs: Iterable[RunView], metric: str, splits: Iterable[str]) -> bool:
    return any(r.value(s, metric) is not None for r in runs for s in splits)


def best_run(runs: list[RunView], metric: str | None, split: str | None) -> RunView | None:
    """The run with the best ``split`` ``metric``; ties go to the first run."""
    if metric is None or split is None:
        return None
    # A pruned run's metrics are from the evaluation it was stopped at: never the best.
    scored = [
        (value, r)
        for r in runs
        if r.status != "pruned" and (value := r.value(split, metric)) is not None
    ]
    if not scored:
        return None
    pick = max if higher_is_better(metric) else min
    return pick(scored, key=lambda pair: pair[0])[1]


def swept_params(runs: list[RunView]) -> list[str]:
    """Parameter names of the sweep, in the order the runs name them."""
    return list(dict.fromkeys(name for r in runs for name in r.params))


def metrics_table(sweep: Sweep) -> Table:
    # A swept task is the task column already.
    params = [p for p in swept_params(sweep.runs) if p != "task"]
    columns = ["run", "status", "task", *params]
    columns += [f"{split} {metric}" for split in SPLITS for metric in sweep.metrics]
    columns.append("time")
    numeric = [False] * (3 + len(params)) + [True] * (len(SPLITS) * len(sweep.metrics) + 1)
    rows = []
    for run in sweep.runs:
        best = run is sweep.best
        cells = [
            Cell(f"★ {run.run_id}" if best else run.run_id),
            Cell(run.status_detail(), f"status-{_slug(run.status)}"),
            Cell(run.task or MISSING),
            *[Cell(format_param(run.params[p]) if p in run.params else MISSING) for p in params],
            *[
                Cell(format_metric(run.value(split, metric)), "num")
                for split in SPLITS
                for metric in sweep.metrics
            ],
            Cell(format_seconds(_train_seconds(run)), "num"),
        ]
        rows.append(Row(cells, best=best))
    return Table(f"metrics-{_slug(sweep.name)}", columns, rows, numeric)


def best_table(sweeps: list[Sweep]) -> Table | None:
    rows = []
    for sweep in sweeps:
        if sweep.best is None or sweep.headline is None or sweep.split is None:
            continue
        run = sweep.best
        rows.append(
            Row(
                [
                    Cell(sweep.name),
                    Cell(run.run_id),
                    Cell(f"{sweep.split} {sweep.headline}"),
                    Cell(format_metric(run.value(sweep.split, sweep.headline)), "num"),
                    Cell(_params_text(run.params) or MISSING),
                ]
            )
        )
    if not rows:
        return None
    columns = ["sweep", "best run", "metric", "value", "parameters"]
    return Table("best-runs", columns, rows, [False, False, False, True, False])


def _train_seconds(run: RunView) -> float | None:
    """Training time where the run trained; the whole run for a baseline."""
    seconds = run.metrics.get("train", {}).get("train_runtime")
    if isinstance(seconds, (int, float)):
        return float(seconds)
    return _run_seconds(run)


# --- baselines against fine-tuned runs -------------------------------------------------------


def baseline_groups(runs: list[RunView]) -> list[list[RunView]]:
    """Runs scored on the same data (run.json's data fingerprint, else the same sweep) that
    hold both a baseline and a fine-tuned run with metrics."""
    groups: dict[str, list[RunView]] = {}
    for run in runs:
        if not run.metrics:
            continue
        fingerprint = run.record.data.fingerprint if run.record.data else None
        groups.setdefault(str(fingerprint or f"sweep:{run.sweep}"), []).append(run)
    return [
        members
        for members in groups.values()
        if any(r.is_baseline for r in members) and any(not r.is_baseline for r in members)
    ]


def compare(runs: list[RunView], names: _Names) -> Comparison | None:
    """The table and bar chart of one group of baselines and fine-tuned runs."""
    ordered = [r for r in runs if r.is_baseline] + [r for r in runs if not r.is_baseline]
    metrics = metric_columns(ordered)
    if not metrics:
        return None
    headline = metrics[0]
    split = "test" if _has(ordered, headline, ("test",)) else "eval"
    shown = [r for r in ordered if any(r.value(split, m) is not None for m in metrics)]
    sweeps = list(dict.fromkeys(r.sweep for r in shown))
    title = f"Baseline vs fine-tuned: {', '.join(sweeps)}"
    base = best_run([r for r in shown if r.is_baseline], headline, split)
    tuned = best_run([r for r in shown if not r.is_baseline], headline, split)
    if base is None or tuned is None:
        return None
    columns = ["run", "sweep", "kind", *[f"{s} {m}" for s in SPLITS for m in metrics]]
    rows = [
        Row(
            [
                Cell(run.run_id),
                Cell(run.sweep),
                Cell(run_kind(run)),
                *[Cell(format_metric(run.value(s, m)), "num") for s in SPLITS for m in metrics],
            ],
            best=run is tuned or run is base,
        )
        for run in shown
    ]
    table = Table(
        f"baseline-{_slug('-'.join(sweeps))}",
        columns,
        rows,
        [False] * 3 + [True] * (len(SPLITS) * len(metrics)),
    )
    gain = _gain(tuned, base, split, headline)
    summary = (
        f"Best fine-tuned run {tuned.run_id} ({run_kind(tuned)}) against the best baseline "
        f"{base.run_id} ({run_kind(base)}): {split} {headline} {gain}."
    )
    plot = baseline_plot(shown, split, metrics, title, names)
    baselines = [r for r in shown if r.is_baseline]
    return Comparison(
        title,
        split,
        metrics,
        shown,
        table,
        plot,
        summary,
        verdict(tuned, baselines, split, headline),
    )


def run_kind(run: RunView) -> str:
    """How a run was made: zero-shot (embedding), 8-shot (embedding), classical (TF-IDF +
    logistic regression), fine-tuned (ner, 0.3% trainable) where LoRA trained a share of the
    parameters."""
    if run.task == "classical":
        return CLASSICAL_KINDS.get(run.method or "", f"classical ({run.method})")
    if run.is_baseline:
        details = run.record.zero_shot
        shots = details.examples_per_class if details else 0
        kind = f"{shots}-shot" if shots else "zero-shot"
        return f"{kind} ({details.method})" if details and details.method else kind
    parameters = run.record.parameters
    lora = ""
    if parameters is not None and parameters.total:
        share = parameters.trainable / parameters.total
        lora = f", {100 * share:.1f}% trainable" if share < 1 else ""
    return f"fine-tuned ({run.task}{lora})"


def verdict(tuned: RunView, baselines: list[RunView], split: str, metric: str) -> str | None:
    """What fine-tuning bought over the cheap baseline, and at what cost: "Fine-tuning beat
    (or lost to, or tied with) the cheap baseline by X points at Y× the CPU time", then the
    figures it comes from.

    The cheap baseline is the best classical run where there is one (the baseline
    engineers fit first), else the best baseline of any kind, named. Points are hundredths
    of a 0–1 metric (accuracy 0.9731 → 0.9865 is 1.3 points), on ``split``'s ``metric``.
    The cost is the ratio of what :class:`~kubetune.store.record.Compute` recorded for each
    whole run (every attempt; setup and data included, since a baseline costs those too):
    CPU time where neither run used a GPU; where a run used GPUs, CPU time leaves out what
    they did, so wall-clock time, with the GPUs named; GPU time where both did. Records
    without compute fall back to wall-clock time from started to finished.
    """
    classical = [r for r in baselines if r.task == "classical"]
    base = best_run(classical, metric, split) or best_run(baselines, metric, split)
    new, old = tuned.value(split, metric), base.value(split, metric) if base else None
    if base is None or new is None or old is None:
        return None
    cheap = (
        "the cheap baseline"
        if base.task == "classical"
        else f"the best baseline, {run_kind(base)},"
    )
    scale = 100.0 if max(abs(new), abs(old)) <= 1 else 1.0
    gained = (new - old) if higher_is_better(metric) else (old - new)
    points = abs(gained) * scale
    shown = f"{points:.1f}" if points >= 0.1 or points == 0 else f"{points:.2g}"
    unit = "point" if shown == "1.0" else "points"
    if gained == 0:
        head = f"Fine-tuning tied with {cheap.rstrip(',')}"
    else:
        head = f"Fine-tuning {'beat' if gained > 0 else 'lost to'} {cheap} by {shown} {unit}"
    cost = compare_cost(tuned, base)
    if cost is not None:
        head += f" at {format_ratio(cost.ratio)} the {cost.measure}"
    figures = (
        f"{split} {metric} {format_metric(old)} → {format_metric(new)}; "
        f"baseline {base.run_id} ({run_kind(base)}), fine-tuned {tuned.run_id}"
    )
    if cost is None:
        figures += "; neither record says what its run cost"
    else:
        figures += (
            f"; {cost.measure} of each whole run: {format_seconds(cost.baseline)} against "
            f"{format_seconds(cost.tuned)}{cost.note}"
        )
    return f"{head} ({figures})."


#: How run_kind names a classical baseline, by its method.
CLASSICAL_KINDS = {
    "tfidf-logreg": "classical (TF-IDF + logistic regression)",
    "crf": "classical (CRF over word features)",
    "lead": "classical (lead sentence)",
}


@dataclass(frozen=True)
class Cost:
    """What two runs cost, in one measure: the fine-tuned run's over the baseline's."""

    measure: str
    tuned: float
    baseline: float
    #: What else a reader needs to weigh the ratio (GPUs used).
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.tuned / self.baseline


def compare_cost(tuned: RunView, base: RunView) -> Cost | None:
    """The fairest single measure of cost both runs recorded (see :func:`verdict`)."""
    spent, spent_base = tuned.record.compute, base.record.compute
    if spent is not None and spent_base is not None:
        gpus = spent.gpu_seconds > 0, spent_base.gpu_seconds > 0
        if all(gpus):
            return _cost("GPU time", spent.gpu_seconds, spent_base.gpu_seconds)
        if any(gpus):
            note = f"; {_gpu_note(spent, 'fine-tuned')}" if gpus[0] else ""
            note += f"; {_gpu_note(spent_base, 'baseline')}" if gpus[1] else ""
            return _cost("wall-clock time", spent.wall_seconds, spent_base.wall_seconds, note)
        return _cost("CPU time", spent.cpu_seconds, spent_base.cpu_seconds)
    return _cost("wall-clock time", _run_seconds(tuned), _run_seconds(base))


def _cost(measure: str, tuned: float | None, base: float | None, note: str = "") -> Cost | None:
    if tuned is None or base is None or tuned <= 0 or base <= 0:
        return None
    return Cost(measure, tuned, base, note)


def _gpu_note(spent: Compute, who: str) -> str:
    gpus = round(spent.gpu_seconds / spent.wall_seconds, 1) if spent.wall_seconds else 0.0
    held = f"{gpus:g} GPU{'' if gpus == 1 else 's'}"
    return f"the {who} run held {held} ({format_seconds(spent.gpu_seconds)} of GPU time)"


def format_ratio(ratio: float) -> str:
    """212×, 38×, 3.4×, 0.52×: whole above 10, two figures below."""
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2g}×"


def _run_seconds(run: RunView) -> float | None:
    """Wall-clock seconds from a finished run's start to its end."""
    started, finished = run.record.started_at, run.record.ended_at
    if started is None or finished is None or run.record.finished is None:
        return None
    return (finished - started).total_seconds()


def _gain(tuned: RunView, base: RunView, split: str, metric: str) -> str:
    new, old = tuned.value(split, metric), base.value(split, metric)
    assert new is not None and old is not None
    sign = "+" if new >= old else "−"
    return f"{format_metric(old)} → {format_metric(new)} ({sign}{format_metric(abs(new - old))})"


# --- plots ----------------------------------------------------------------------------------


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "kubetune report draws its plots with matplotlib: pip install 'kubetune[report]'"
        ) from exc


def _figure(width: float = 7.5, height: float = 3.8) -> Figure:
    # The Figure class alone, never pyplot: no backend is chosen, no display is looked for.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" stamp: the same runs draw byte-identical PNGs.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _legend(ax: Axes, count: int) -> None:
    if count:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _series(run: RunView, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` in the run's history, in step order."""
    points = sorted(
        (float(row["step"]), float(row[key]))
        for row in run.history
        if isinstance(row.get("step"), (int, float))
        and isinstance(row.get(key), (int, float))
        and not isinstance(row.get(key), bool)
    )
    return [p[0] for p in points], [p[1] for p in points]


def loss_plot(sweep: Sweep, names: _Names) -> Plot | None:
    """Training loss (solid) and eval loss (dashed) against step, every run of the sweep."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for index, run in enumerate(sweep.runs):
        steps, losses = _series(run, "loss")
        eval_steps, eval_losses = _series(run, "eval_loss")
        if not steps and not eval_steps:
            continue
        colour = _colour(index)
        if steps:
            ax.plot(steps, losses, color=colour, linewidth=1.4, label=run.label)
        if eval_steps:
            label = None if steps else f"{run.label} (eval)"
            ax.plot(eval_steps, eval_losses, "--o", color=colour, markersize=3, label=label)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{sweep.name}: training loss (solid), eval loss (dashed)", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend(ax, drawn)
    return Plot(
        names(sweep.name, "loss"),
        f"Loss by step: {sweep.name}",
        f"training and eval loss against step for {drawn} runs of {sweep.name}",
        _png(fig),
    )


def eval_plot(sweep: Sweep, names: _Names) -> Plot | None:
    """The headline eval metric against step, every run of the sweep."""
    metric = sweep.headline
    if metric is None:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for index, run in enumerate(sweep.runs):
        steps, values = _series(run, f"eval_{metric}")
        if not steps and metric == "perplexity":  # older histories: derive it from the loss
            steps, losses = _series(run, "eval_loss")
            values = [math.exp(v) if v < 700 else math.inf for v in losses]
        if not steps:
            continue
        ax.plot(steps, values, "-o", color=_colour(index), markersize=3, label=run.label)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(f"eval {metric}")
    ax.set_title(f"{sweep.name}: eval {metric} by step", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend(ax, drawn)
    return Plot(
        names(sweep.name, "eval", metric),
        f"Eval {metric} by step: {sweep.name}",
        f"eval {metric} against step for {drawn} runs of {sweep.name}",
        _png(fig),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def log_scale(param: str, values: Sequence[Any]) -> bool:
    """Whether a parameter reads better on a log axis: a learning rate or weight decay
    spanning a decade or more, or any positive parameter spanning three."""
    if not values or not all(_is_number(v) and v > 0 for v in values):
        return False
    span = max(values) / min(values)
    return span >= 1000 or (span >= 10 and _last(param) in LOG_SCALE_HINTS)


def param_plot(sweep: Sweep, param: str, names: _Names) -> Plot | None:
    """One swept parameter against the headline metric. Runs that share the other parameters'
    values form one line, so a grid shows one curve per setting of the rest."""
    metric, split = sweep.headline, sweep.split
    if metric is None or split is None:
        return None
    points = [
        (run, run.params[param], value)
        for run in sweep.runs
        if param in run.params and (value := run.value(split, metric)) is not None
    ]
    if len({json.dumps(p[1], sort_keys=True, default=str) for p in points}) < 2:
        return None
    numeric = all(_is_number(p[1]) for p in points)
    categories = list(dict.fromkeys(format_param(p[1]) for p in points))
    lines: dict[str, list[tuple[float, float]]] = {}
    for run, x, y in points:
        rest = ", ".join(
            f"{_last(k)}={format_param(v)}" for k, v in run.params.items() if k != param
        )
        position = float(x) if numeric else float(categories.index(format_param(x)))
        lines.setdefault(rest, []).append((position, y))
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot()
    for index, (rest, line) in enumerate(lines.items()):
        line.sort()
        ax.plot(
            [p[0] for p in line],
            [p[1] for p in line],
            "-o" if numeric else "o",
            color=_colour(index),
            label=rest or None,
        )
    if numeric and log_scale(param, [p[1] for p in points]):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(categories)), categories)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(param + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(f"{split} {metric}")
    better = "higher" if higher_is_better(metric) else "lower"
    ax.set_title(f"{sweep.name}: {split} {metric} by {param} ({better} is better)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, sum(1 for rest in lines if rest))
    return Plot(
        names(sweep.name, "param", param),
        f"{param} against {split} {metric}: {sweep.name}",
        f"{split} {metric} against {param} for {len(points)} runs of {sweep.name}",
        _png(fig),
    )


def baseline_plot(
    runs: list[RunView], split: str, metrics: list[str], title: str, names: _Names
) -> Plot:
    """Grouped bars: one group per metric, one bar per run, baselines grey."""
    fig = _figure(7.5, 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(runs)
    for index, run in enumerate(runs):
        values = [run.value(split, m) for m in metrics]
        xs = [i + (index - (len(runs) - 1) / 2) * width for i in range(len(metrics))]
        shade = BASELINE if run.is_baseline else TUNED
        alpha = 0.45 + 0.55 * (index + 1) / len(runs)
        bars = ax.bar(
            xs,
            [v if v is not None else 0.0 for v in values],
            width * 0.92,
            color=shade,
            alpha=alpha,
            label=f"{run.short}: {run_kind(run)}",
        )
        labels = [format_metric(v) if v is not None else "" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.set_xticks(range(len(metrics)), [f"{split} {m}" for m in metrics])
    scores = [v for r in runs for m in metrics if (v := r.value(split, m)) is not None]
    if scores and max(scores) <= 1:
        ax.set_ylim(0, 1.08)
    ax.set_title(title, fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(runs))
    return Plot(
        names("baseline", *dict.fromkeys(r.sweep for r in runs)),
        title,
        f"bar chart of {split} {', '.join(metrics)} for {len(runs)} baseline and fine-tuned runs",
        _png(fig),
    )


# --- formatting -----------------------------------------------------------------------------


def format_metric(value: float | None) -> str:
    """4 decimals on a 0–1 scale, fewer as numbers grow (ROUGE's 0–100, perplexity)."""
    if value is None:
        return MISSING
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def format_param(value: Any) -> str:
    """A parameter value as a spec would write it: 2e-05, 8, true, null, classification."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_param(v)}" for k, v in params.items())


def _last(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _clip(text: str, limit: int = FIELD_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- writing --------------------------------------------------------------------------------

#: Punctuation that would start emphasis, code, a link or a table cell anywhere in a line.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def markdown_escape(text: Any) -> str:
    """Text safe in a Markdown table cell: one line, punctuation escaped, and ``<``, ``>``,
    ``&`` as entities, so an input holding HTML shows as text instead of running."""
    flat = " ".join(str(text).split())
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", flat), quote=False)


def _template(name: str, *, autoescape: bool) -> jinja2.Template:
    env = jinja2.Environment(
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_escape
    source = resources.files("kubetune").joinpath(name).read_text(encoding="utf-8")
    return env.from_string(source)


def write_page(page: Page, out: Path, markdown: Path) -> None:
    """The HTML page, the Markdown beside it and the Markdown's plot files."""
    folder = out.with_name(f"{out.stem}_files")
    out.parent.mkdir(parents=True, exist_ok=True)
    if folder.is_dir():  # plots of an earlier report here; this one may draw fewer
        for stale in folder.glob("*.png"):
            stale.unlink()
    plots = page.plots()
    if plots:
        folder.mkdir(exist_ok=True)
        for plot in plots:
            (folder / plot.name).write_bytes(plot.png)
    elif folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    out.write_text(_template("report.html.j2", autoescape=True).render(page=page), encoding="utf-8")
    markdown.write_text(
        _template("report.md.j2", autoescape=False).render(page=page, folder=folder.name),
        encoding="utf-8",
    )
