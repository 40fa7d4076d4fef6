"""Stored runs as a user looks at them: ``kubetune runs list`` and ``kubetune runs show``.

Everything here reads the run-folder contract (``run.json`` first of all) and nothing else,
so a store filled by pods in a cluster reads the same as one filled by ``kubetune run``. A
record may be older than the contract or still being written: a missing key shows as "—",
a missing ``run.json`` as status ``starting``.

``run.json`` files are read by a thread pool: an S3 request spends its time waiting, and a
sweep of fifty runs should not cost fifty round trips in a row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

from kubetune._progress import _HEADLINE as HEADLINE
from kubetune._tables import add_id_column, add_value_column
from kubetune.errors import ConfigError
from kubetune.store import RunLocation, StoreError, check_uri, file_uri_path, find_runs
from kubetune.store.checkpoints import STATE_REMOVED

RECORD = "run.json"
#: run.json reads in flight at once.
READERS = 16
#: Packages whose versions ``runs show`` prints; run.json records more.
NOTABLE_PACKAGES = ("kubetune", "torch", "transformers", "peft", "accelerate", "datasets")
#: Final metrics that measure time or progress, not quality (suffixes of metric names).
TIMINGS = ("runtime", "samples_per_second", "steps_per_second", "_time", "epoch")
STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "starting": "cyan",
    "interrupted": "yellow",
    "failed": "red",
}
DASH = "—"


@dataclass(frozen=True)
class RunInfo:
    """A run folder and its record (``{}`` while run.json is not written yet)."""

    location: RunLocation
    record: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why run.json could not be read

    @property
    def run_id(self) -> str:
        return self.location.run_id

    @property
    def status(self) -> str:
        if self.problem is not None:
            return "unreadable"
        if not self.record:
            return "starting"
        return str(self.record.get("status") or DASH)

    @property
    def params(self) -> dict[str, Any]:
        return as_dict(self.record.get("params"))

    def metrics(self, split: str) -> dict[str, Any]:
        return as_dict(as_dict(self.record.get("metrics")).get(split))

    @property
    def started(self) -> datetime | None:
        return _time(self.record.get("started"))

    def duration(self, now: datetime) -> timedelta | None:
        """Start to end; for a run still going, start to ``now``."""
        if self.started is None:
            return None
        end = _time(self.record.get("finished") or self.record.get("stopped"))
        if end is None and self.status == "running":
            end = now
        return end - self.started if end is not None else None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``{}``: records may lack or garble any key."""
    return value if isinstance(value, dict) else {}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


def read(location: RunLocation) -> RunInfo:
    """A run's record; a missing run.json is a run that is starting, not an error."""
    key = location.key(RECORD)
    try:
        record = location.store.read_json(key)
    except StoreError as exc:
        if not location.store.exists(key):
            return RunInfo(location)
        return RunInfo(location, problem=str(exc))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return RunInfo(location, problem=f"{location.store.url(key)}: not JSON")
    if not isinstance(record, dict):
        return RunInfo(location, problem=f"{location.store.url(key)}: not a JSON object")
    return RunInfo(location, record)


def read_all(locations: Iterable[RunLocation], workers: int = READERS) -> list[RunInfo]:
    """Every record, read concurrently; in the order given."""
    locations = list(locations)
    if len(locations) <= 1:
        return [read(loc) for loc in locations]
    with ThreadPoolExecutor(max_workers=min(workers, len(locations))) as pool:
        return list(pool.map(read, locations))


# --- formatting ---------------------------------------------------------------------------


def is_timing(name: str) -> bool:
    """Whether a final metric measures time or progress rather than quality."""
    return name.endswith(TIMINGS)


def headline(infos: Iterable[RunInfo], count: int = 2) -> tuple[str, list[str]]:
    """The split (test where any run has one, else eval) and the first ``count`` metrics of
    :data:`HEADLINE` that any run reports there."""
    infos = list(infos)
    split = "test" if any(info.metrics("test") for info in infos) else "eval"
    names = [m for m in HEADLINE if any(m in _split_metrics(i, split)[1] for i in infos)]
    return split, names[:count]


def _split_metrics(info: RunInfo, split: str) -> tuple[str, dict[str, Any]]:
    """The run's metrics of ``split``, falling back to eval for a run without a test split."""
    metrics = info.metrics(split)
    if not metrics and split == "test":
        return "eval", info.metrics("eval")
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


def _status(info: RunInfo) -> str:
    style = STATUS_STYLE.get(info.status)
    return f"[{style}]{info.status}[/]" if style else escape(info.status)


def list_tables(infos: list[RunInfo], now: datetime | None = None) -> list[Table]:
    """One table per sweep: run id, task, the sweep's parameters, status, headline metrics of
    the test split (eval where a run has none), start and duration."""
    now = now or datetime.now(UTC)
    by_sweep: dict[str, list[RunInfo]] = {}
    for info in infos:
        by_sweep.setdefault(info.location.sweep, []).append(info)
    tables = []
    for sweep, group in by_sweep.items():
        params: list[str] = []
        for info in group:
            params += [p for p in info.params if p not in params]
        tasks = {str(info.record["task"]) for info in group if info.record.get("task")}
        split, names = headline(group)
        title = f"{sweep}: {len(group)} run{'s' if len(group) != 1 else ''}"
        cells = {p: [escape(fmt(info.params.get(p))) for info in group] for p in params}
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
                *([fmt(info.record.get("task"))] if len(tasks) > 1 else []),
                *(cells[p][i] for p in params),
                _status(info),
                *_headline_cells(info, split, names),
                fmt_time(info.started),
                fmt_duration(info.duration(now)),
            )
        tables.append(table)
    return tables


def _headline_cells(info: RunInfo, split: str, names: list[str]) -> list[str]:
    used, metrics = _split_metrics(info, split)
    mark = f" ({used})" if used != split else ""
    return [
        f"{metrics[n]:.4f}{mark}" if isinstance(metrics.get(n), (int, float)) else DASH
        for n in names
    ]


# --- one run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDetail:
    """One run with what ``runs show`` lists beyond its record."""

    info: RunInfo
    checkpoints: list[int]
    final: str | None  # URL of final/ when it is in the store
    adapter: str | None  # URL of adapter/ (LoRA) when it is in the store
    wandb_project: str | None


def detail(location: RunLocation) -> RunDetail:
    """Read one run: its record, complete checkpoints, final/ and adapter/."""
    store = location.store
    with ThreadPoolExecutor(max_workers=4) as pool:
        info = pool.submit(read, location)
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
    if info.params:
        params = Table(title="parameters", title_justify="left")
        params.add_column("path")
        params.add_column("value")
        for path, value in info.params.items():
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
    render = as_dict(record.get("render"))
    git = as_dict(record.get("git"))
    rows: list[tuple[str, str]] = [
        ("store", info.location.url),
        ("sweep", info.location.sweep),
        ("task", fmt(record.get("task"))),
        ("spec hash", fmt(record.get("spec_hash"))),
        ("seed", fmt(record.get("seed"))),
        ("image", fmt(record.get("image")) if record.get("image") else f"{DASH} (local run)"),
        ("chart", _chart(render)),
        ("git", _git(git)),
        ("hardware", _hardware(record.get("hardware"))),
        ("packages", _packages(record.get("packages"))),
        ("model", _model(record.get("model"))),
        ("started", _started(info, now)),
    ]
    if info.problem:
        rows.append(("problem", info.problem))
    if record.get("error"):
        rows.append(("error", str(record["error"])))
    if record.get("status") == "interrupted" and record.get("step") is not None:
        rows.append(("stopped at", f"step {record['step']}"))
    steps = run.checkpoints
    rows += [
        ("checkpoints", _checkpoints(steps, as_dict(record.get(STATE_REMOVED)))),
        ("final/", run.final or DASH),
    ]
    if run.adapter:
        rows.append(("adapter/", run.adapter))
    wandb = info.run_id + (f" (project {run.wandb_project})" if run.wandb_project else "")
    rows.append(("W&B run", wandb))
    for key, value in rows:
        grid.add_row(key, escape(value))
    return grid


def _checkpoints(steps: list[int], removed: dict[str, Any]) -> str:
    """``steps 25, 30`` and, for a completed run, the optimizer state removed from them."""
    if not steps:
        return DASH
    text = f"steps {', '.join(map(str, steps))}"
    freed = removed.get("bytes")
    if isinstance(freed, int) and not isinstance(freed, bool):
        text += f" (optimizer state removed at completion: {freed / 1e6:,.1f} MB freed)"
    return text


def _chart(render: dict[str, Any]) -> str:
    # pod_template (kubetune-job/<revision>) since the chart version left the pods.
    chart = render.get("pod_template") or render.get("chart")
    if not chart:
        return DASH
    namespace = render.get("namespace")
    return f"{chart}, namespace {namespace}" if namespace else f"{chart}, no namespace set"


def _git(git: dict[str, Any]) -> str:
    if not git.get("sha"):
        return DASH
    return f"{str(git['sha'])[:12]}{' (dirty)' if git.get('dirty') else ''}"


def _hardware(hardware: Any) -> str:
    if not isinstance(hardware, dict):
        return DASH
    gpus = hardware.get("gpus") or []
    counted: dict[str, int] = {}
    for gpu in gpus:
        counted[str(gpu)] = counted.get(str(gpu), 0) + 1
    parts = [", ".join(f"{n}× {name}" for name, n in counted.items()) or "no GPU"]
    if hardware.get("cuda"):
        parts.append(f"CUDA {hardware['cuda']}")
    if hardware.get("cpu_count"):
        parts.append(f"{hardware['cpu_count']} CPUs")
    if hardware.get("python"):
        parts.append(f"Python {hardware['python']}")
    if hardware.get("platform"):
        parts.append(str(hardware["platform"]))
    return ", ".join(parts)


def _packages(packages: Any) -> str:
    if not isinstance(packages, dict):
        return DASH
    shown = [f"{name} {packages[name]}" for name in NOTABLE_PACKAGES if packages.get(name)]
    return ", ".join(shown) or DASH


def _model(model: Any) -> str:
    if not isinstance(model, dict) or not model.get("name"):
        return DASH
    if model.get("revision"):
        return f"{model['name']} @ {model['revision']}"
    if model.get("files"):
        return f"{model['name']} ({len(model['files'])} files fingerprinted)"
    return str(model["name"])


def _started(info: RunInfo, now: datetime) -> str:
    if info.started is None:
        return DASH
    took = fmt_duration(info.duration(now))
    verb = "running for" if info.status == "running" else "took"
    return f"{fmt_time(info.started)} UTC, {verb} {took}"


def metrics_table(info: RunInfo) -> Table | None:
    """Final metrics: one row per metric, one column per split; quality metrics first."""
    splits = [s for s in ("train", "eval", "test") if info.metrics(s)]
    if not splits:
        return None
    names: list[str] = []
    for split in splits:
        names += [n for n in info.metrics(split) if n not in names]
    rank = {n: i for i, n in enumerate(HEADLINE)}
    names.sort(key=lambda n: (is_timing(n), rank.get(n, len(rank)), n))
    table = Table(title="final metrics", title_justify="left")
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(escape(name), *(fmt(info.metrics(s).get(name)) for s in splits))
    return table
