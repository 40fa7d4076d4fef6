"""Stored runs as a user looks at them: ``kubetune runs list`` and ``kubetune runs show``.

Everything here reads the run-folder contract (``run.json`` first of all, through
:func:`kubetune.store.record.read_run`) and nothing else, so a store filled by pods in a
cluster reads the same as one filled by ``kubetune run``. A record may be older than the
contract or still being written: a missing field shows as "—", a missing ``run.json`` as
status ``starting``, one that cannot be read as ``unreadable`` or ``forbidden``.

``run.json`` files are read by a thread pool: an S3 request spends its time waiting, and a
sweep of fifty runs should not cost fifty round trips in a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

from kubetune._tables import add_id_column, add_value_column
from kubetune.errors import ConfigError
from kubetune.headline import RANKED
from kubetune.store import RunLocation, check_uri, file_uri_path, find_runs
from kubetune.store.record import (
    FORBIDDEN,
    STARTING,
    UNREADABLE,
    Git,
    Hardware,
    ModelIdentity,
    Render,
    RunFolder,
    StateRemoved,
    read_run,
)

#: run.json reads in flight at once.
READERS = 16
#: Packages whose versions ``runs show`` prints; run.json records more.
NOTABLE_PACKAGES = ("kubetune", "torch", "transformers", "peft", "accelerate", "datasets")
#: Final metrics that measure time or progress, not quality (suffixes of metric names).
TIMINGS = ("runtime", "samples_per_second", "steps_per_second", "_time", "epoch")
STATUS_STYLE = {
    "completed": "green",
    "pruned": "blue",
    "running": "cyan",
    STARTING: "cyan",
    "interrupted": "yellow",
    "failed": "red",
    UNREADABLE: "red",
    FORBIDDEN: "red",
}
DASH = "—"


def duration(info: RunFolder, now: datetime) -> timedelta | None:
    """Start to end; for a run still going, start to ``now``."""
    started = info.record.started_at
    if started is None:
        return None
    end = info.record.ended_at
    if end is None and info.status == "running":
        end = now
    return end - started if end is not None else None


# --- finding and reading ------------------------------------------------------------------


def find(uri: str) -> list[RunLocation]:
    """Every run at or under ``uri`` (a store, ``<store>/<sweep>`` or a run).

    Raises:
        ConfigError: ``uri`` is not a store URI, or a file:// folder that does not exist.
    """
    uri = uri.rstrip("/")
    if check_uri(uri) == "file" and not file_uri_path(uri).is_dir():
        raise ConfigError(f"{uri}: no such folder")
    return find_runs(uri)


def locate(uri: str) -> RunLocation:
    """The one run at ``uri`` (``<store>/<sweep>/<run-id>``).

    Raises:
        ConfigError: ``uri`` holds no run, or several (a store or a sweep).
    """
    uri = uri.rstrip("/")
    found = find(uri)
    if len(found) == 1 and found[0].url == uri:
        return found[0]
    if not found:
        raise ConfigError(
            f"{uri}: no run here; pass a run folder, <store>/<sweep>/<run-id> "
            "(kubetune runs list <store> shows them)"
        )
    held = f"{len(found)} run{'s' if len(found) != 1 else ''}"
    raise ConfigError(
        f"{uri} holds {held}; pass one run folder, <store>/<sweep>/<run-id>, e.g. "
        f"{found[0].url} (kubetune runs list {uri} shows them all)"
    )


def read_all(locations: Iterable[RunLocation], workers: int = READERS) -> list[RunFolder]:
    """Every record, read concurrently; in the order given."""
    locations = list(locations)
    if len(locations) <= 1:
        return [read_run(loc) for loc in locations]
    with ThreadPoolExecutor(max_workers=min(workers, len(locations))) as pool:
        return list(pool.map(read_run, locations))


# --- formatting ---------------------------------------------------------------------------


def is_timing(name: str) -> bool:
    """Whether a final metric measures time or progress rather than quality."""
    return name.endswith(TIMINGS)


def metric_columns(infos: Iterable[RunFolder], count: int = 2) -> tuple[str, list[str]]:
    """The split (test where any run has one, else eval) and the first ``count`` metrics of
    :data:`~kubetune.headline.RANKED` that any run reports there."""
    infos = list(infos)
    split = "test" if any(info.record.metrics.get("test") for info in infos) else "eval"
    names = [m for m in RANKED if any(m in _split_metrics(i, split)[1] for i in infos)]
    return split, names[:count]


def _split_metrics(info: RunFolder, split: str) -> tuple[str, dict[str, Any]]:
    """The run's metrics of ``split``, falling back to eval for a run without a test split."""
    metrics = info.record.metrics.get(split, {})
    if not metrics and split == "test":
        return "eval", info.record.metrics.get("eval", {})
    return split, metrics


def fmt(value: Any) -> str:
    """A value for a table cell."""
    if value is None or value == "" or value == [] or value == {}:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def fmt_duration(delta: timedelta | None) -> str:
    """6s, 3m12s, 1h02m, 2d03h."""
    if delta is None:
        return DASH
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def fmt_time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else DASH


def _status(info: RunFolder) -> str:
    style = STATUS_STYLE.get(info.status)
    return f"[{style}]{info.status}[/]" if style else escape(info.status)


def list_tables(infos: list[RunFolder], now: datetime | None = None) -> list[Table]:
    """One table per sweep: run id, task, the sweep's parameters, status, headline metrics of
    the test split (eval where a run has none), start and duration."""
    now = now or datetime.now(UTC)
    by_sweep: dict[str, list[RunFolder]] = {}
    for info in infos:
        by_sweep.setdefault(info.location.sweep, []).append(info)
    tables = []
    for sweep, group in by_sweep.items():
        params: list[str] = []
        for info in group:
            params += [p for p in info.record.params if p not in params]
        tasks = {info.record.task for info in group if info.record.task}
        split, names = metric_columns(group)
        title = f"{sweep}: {len(group)} run{'s' if len(group) != 1 else ''}"
        cells = {p: [escape(fmt(info.record.params.get(p))) for info in group] for p in params}
        table = Table(title=f"{title} ({next(iter(tasks))})" if len(tasks) == 1 else title)
        add_id_column(table, "run id", [info.run_id for info in group])
        if len(tasks) > 1:
            table.add_column("task")
        for param in params:
            add_value_column(table, param, cells[param])
        table.add_column("status", no_wrap=True)
        for name in names:
            table.add_column(f"{split}\n{name}", justify="right", no_wrap=True)
        table.add_column("started (UTC)", no_wrap=True)
        table.add_column("took", justify="right", no_wrap=True)
        for i, info in enumerate(group):
            table.add_row(
                info.run_id,
                *([fmt(info.record.task)] if len(tasks) > 1 else []),
                *(cells[p][i] for p in params),
                _status(info),
                *_headline_cells(info, split, names),
                fmt_time(info.record.started_at),
                fmt_duration(duration(info, now)),
            )
        tables.append(table)
    return tables


def _headline_cells(info: RunFolder, split: str, names: list[str]) -> list[str]:
    used, metrics = _split_metrics(info, split)
    mark = f" ({used})" if used != split else ""
    return [
        f"{metrics[n]:.4f}{mark}" if isinstance(metrics.get(n), int | float) else DASH
        for n in names
    ]


# --- one run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDetail:
    """One run with what ``runs show`` lists beyond its record."""

    info: RunFolder
    checkpoints: list[int]
    final: str | None  # URL of final/ when it is in the store
    adapter: str | None  # URL of adapter/ (LoRA) when it is in the store
    wandb_project: str | None


def detail(location: RunLocation) -> RunDetail:
    """Read one run: its record, complete checkpoints, final/ and adapter/."""
    store = location.store
    with ThreadPoolExecutor(max_workers=4) as pool:
        info = pool.submit(read_run, location)
        checkpoints = pool.submit(location.checkpoints)
        final = pool.submit(store.list_keys, location.key("final"))
        adapter = pool.submit(store.list_keys, location.key("adapter"))
        project = pool.submit(_wandb_project, location)
        return RunDetail(
            info.result(),
            checkpoints.result(),
            store.url(location.key("final")) if final.result() else None,
            store.url(location.key("adapter")) if adapter.result() else None,
            project.result(),
        )


def _wandb_project(location: RunLocation) -> str | None:
    """The W&B project the run logs to (the spec's, else its name), from spec.yaml."""
    from kubetune import spec as specmod
    from kubetune.errors import KubetuneError

    try:
        spec = specmod.loads(location.store.read_text(location.key("spec.yaml")))
    except (KubetuneError, UnicodeDecodeError):
        return None
    wandb = spec.tracking.wandb
    if wandb.mode == "disabled":
        return None
    project = wandb.project or spec.name
    return f"{wandb.entity}/{project}" if wandb.entity else project


def show(run: RunDetail, now: datetime | None = None) -> RenderableType:
    """Identity, parameters, final metrics per split, and where the outputs are."""
    info = run.info
    parts: list[RenderableType] = [
        f"[bold cyan]{escape(info.run_id)}[/]  {_status(info)}",
        _identity(run, now or datetime.now(UTC)),
    ]
    if info.record.params:
        params = Table(title="parameters", title_justify="left")
        params.add_column("path")
        params.add_column("value")
        for path, value in info.record.params.items():
            params.add_row(escape(path), escape(fmt(value)))
        parts.append(params)
    metrics = metrics_table(info)
    if metrics is not None:
        parts.append(metrics)
    return Group(*parts)


def _identity(run: RunDetail, now: datetime) -> Table:
    info, record = run.info, run.info.record
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("store", info.location.url),
        ("sweep", info.location.sweep),
        ("task", fmt(record.task)),
        ("spec hash", fmt(record.spec_hash)),
        ("seed", fmt(record.seed)),
        ("image", record.image or f"{DASH} (local run)"),
        ("chart", _chart(record.render)),
        ("git", _git(record.git)),
        ("hardware", _hardware(record.hardware)),
        ("packages", _packages(record.packages)),
        ("model", _model(record.model)),
        ("started", _started(info, now)),
    ]
    if info.problem:
        rows.append(("problem", info.problem))
    if record.error:
        rows.append(("error", record.error))
    if record.status == "interrupted" and record.step is not None:
        rows.append(("stopped at", f"step {record.step}"))
    if record.compute is not None:
        spent = record.compute
        gpu = f", {spent.gpu_seconds / 3600:.2f} GPU-hours" if spent.gpu_seconds else ""
        rows.append(("compute", f"{spent.cpu_seconds:.0f} CPU-seconds{gpu}"))
    if record.status == "pruned" and record.pruned_at:
        at = record.pruned_at
        rows.append(("pruned at", f"evaluation {at.get('rung')}, step {record.step}"))
    steps = run.checkpoints
    rows += [
        ("checkpoints", _checkpoints(steps, record.optimizer_state_removed)),
        ("final/", run.final or DASH),
    ]
    if run.adapter:
        rows.append(("adapter/", run.adapter))
    wandb = info.run_id + (f" (project {run.wandb_project})" if run.wandb_project else "")
    rows.append(("W&B run", wandb))
    for key, value in rows:
        grid.add_row(key, escape(value))
    return grid


def _checkpoints(steps: list[int], removed: StateRemoved | None) -> str:
    """``steps 25, 30`` and, for a completed run, the optimizer state removed from them."""
    if not steps:
        return DASH
    text = f"steps {', '.join(map(str, steps))}"
    if removed is not None:
        text += f" (optimizer state removed at completion: {removed.bytes / 1e6:,.1f} MB freed)"
    return text


def _chart(render: Render) -> str:
    # pod_template (kubetune-job/<revision>) since the chart version left the pods.
    chart = render.pod_template or render.chart
    if not chart:
        return DASH
    namespace = render.namespace
    return f"{chart}, namespace {namespace}" if namespace else f"{chart}, no namespace set"


def _git(git: Git | None) -> str:
    if git is None or not git.sha:
        return DASH
    return f"{git.sha[:12]}{' (dirty)' if git.dirty else ''}"


def _hardware(hardware: Hardware | None) -> str:
    if hardware is None:
        return DASH
    counted: dict[str, int] = {}
    for gpu in hardware.gpus:
        counted[gpu] = counted.get(gpu, 0) + 1
    parts = [", ".join(f"{n}× {name}" for name, n in counted.items()) or "no GPU"]
    if hardware.cuda:
        parts.append(f"CUDA {hardware.cuda}")
    if hardware.cpu_count:
        parts.append(f"{hardware.cpu_count} CPUs")
    if hardware.python:
        parts.append(f"Python {hardware.python}")
    if hardware.platform:
        parts.append(hardware.platform)
    return ", ".join(parts)


def _packages(packages: dict[str, str | None]) -> str:
    shown = [f"{name} {packages[name]}" for name in NOTABLE_PACKAGES if packages.get(name)]
    return ", ".join(shown) or DASH


def _model(model: ModelIdentity | None) -> str:
    if model is None or not model.name:
        return DASH
    if model.revision:
        return f"{model.name} @ {model.revision}"
    if model.files:
        return f"{model.name} ({len(model.files)} files fingerprinted)"
    return model.name


def _started(info: RunFolder, now: datetime) -> str:
    started = info.record.started_at
    if started is None:
        return DASH
    took = fmt_duration(duration(info, now))
    verb = "running for" if info.status == "running" else "took"
    return f"{fmt_time(started)} UTC, {verb} {took}"


def metrics_table(info: RunFolder) -> Table | None:
    """Final metrics: one row per metric, one column per split; quality metrics first."""
    metrics = info.record.metrics
    splits = [s for s in ("train", "eval", "test") if metrics.get(s)]
    if not splits:
        return None
    names: list[str] = []
    for split in splits:
        names += [n for n in metrics[split] if n not in names]
    rank = {n: i for i, n in enumerate(RANKED)}
    names.sort(key=lambda n: (is_timing(n), rank.get(n, len(rank)), n))
    table = Table(title="final metrics", title_justify="left")
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(escape(name), *(fmt(metrics[s].get(name)) for s in splits))
    return table
