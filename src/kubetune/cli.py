"""The ``kubetune`` command: parse, call the library, print.

Users see one red line per problem and exit 2 for their mistakes, 1 for the world's failures;
``KUBETUNE_DEBUG=1`` shows the traceback. Everything heavy is imported inside the commands so
``kubetune --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from kubetune.kube.client import Cluster
    from kubetune.kube.submit import Outcome, Stored
    from kubetune.render import Rendered
    from kubetune.reproduce import Comparison, Recorded
    from kubetune.spec import JobSpec
    from kubetune.sweep import ResolvedRun


class _Commands(TyperGroup):
    """kubetune's command group: Ctrl-C anywhere in parsing or a command (a subgroup's too)
    becomes :class:`~kubetune.errors.Interrupted`, which :func:`main` reports in one line.

    Typer turns a KeyboardInterrupt that reaches it into a silent exit 130, which
    :func:`main` could not tell from a command's own ``typer.Exit(130)``; so it is caught
    here first. An ``Abort`` (Ctrl-C or Ctrl-D at a prompt) is the same stop. (The
    contexts are typed ``Any``: their class lives in typer's private copy of click.)
    """

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _on_interrupt():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _on_interrupt():
            return super().invoke(ctx)


@contextmanager
def _on_interrupt(state: str = "") -> Iterator[None]:
    """Ctrl-C inside the block ends the command: exit 130, ``interrupted: <state>``."""
    from kubetune.errors import Interrupted

    try:
        yield
    except (KeyboardInterrupt, typer.Abort) as exc:
        raise Interrupted(state) from exc


app = typer.Typer(
    cls=_Commands,
    name="kubetune",
    help="Fine-tune transformers on Kubernetes from one YAML job spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SpecArg = Annotated[Path, typer.Argument(help="Job spec YAML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a spec field: --set train.learning_rate=2e-5 (repeatable)."
    ),
]


def _console(stderr: bool = True) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _load(
    path: Path, overrides: list[str] | None = None, only: str | None = None
) -> tuple[JobSpec, list[ResolvedRun]]:
    """Load, override, validate and expand one spec (keeping only run ``only`` if given)."""
    from kubetune import _yaml, sweep
    from kubetune import spec as specmod
    from kubetune.errors import ConfigError, Issue, SpecError

    data, lines = specmod.load_raw(path)
    issues = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        problem = "write --set path=value" if not sep or not key else specmod.check_path(key)
        if problem:
            issues.append(Issue(f"--set {item}", problem))
        else:
            specmod.set_path(data, key, _yaml.parse_scalar(raw))
    if issues:
        raise SpecError(issues)
    spec = specmod.validate(data, str(path), lines)
    runs = sweep.expand(spec, str(path))
    if only is not None:
        runs = [r for r in runs if r.run_id == only]
        if not runs:
            raise ConfigError(
                f"--run {only}: no such run in {path}; list them with kubetune sweep {path}"
            )
    return spec, runs


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Job spec files.")],
    inputs: Annotated[
        bool,
        typer.Option(
            "--inputs",
            help="Also check what each run reads: data files, columns and labels, the model "
            "and max_length against it (what kubetune run checks before it starts).",
        ),
    ] = False,
) -> None:
    """Check job specs (and every sweep point); report every problem at once."""
    from kubetune import preflight
    from kubetune.errors import KubetuneError

    console = _console()
    failed: KubetuneError | None = None
    for path in specs:
        try:
            spec, runs = _load(path)
            if inputs:
                preflight.check_runs(runs, str(path))
        except KubetuneError as exc:
            _report(exc)
            failed = exc
            continue
        what = f"{len(runs)} runs" if spec.sweep else "1 run"
        if spec.sweep is not None and not runs:
            ends = f"up to {spec.sweep.max_runs} trials" if spec.sweep.max_runs else "a budget"
            what = f"{spec.sweep.method} search, {ends}"
        checked = "; data and model checked" if inputs else ""
        console.print(f"[green]✓[/] {path}: {spec.name} ({spec.task}, {what}{checked})")
    if failed is not None:
        raise typer.Exit(failed.exit_code)


@app.command("sweep")
def sweep_cmd(spec: SpecArg, set_: SetOpt = None) -> None:
    """List the runs a spec expands to: run id and parameter values."""
    from rich.markup import escape
    from rich.table import Table

    from kubetune._tables import add_id_column, add_value_column

    job, runs = _load(spec, set_)
    if job.sweep is not None and not runs:
        from kubetune.search.board import space_table

        _console(stderr=False).print(space_table(job.name, job.sweep))
        return
    columns: list[str] = []
    for run in runs:
        columns += [p for p in run.params if p not in columns]
    cells = {c: [escape(_param(run.params, c)) for run in runs] for c in columns}
    table = Table(title=f"{job.name}: {len(runs)} run{'s' if len(runs) != 1 else ''}")
    table.add_column("#", justify="right", no_wrap=True, min_width=len(str(len(runs) - 1)))
    add_id_column(table, "run id", [run.run_id for run in runs])
    for column in columns:
        add_value_column(table, column, cells[column])
    for i, run in enumerate(runs):
        table.add_row(str(run.index), run.run_id, *(cells[c][i] for c in columns))
    _console(stderr=False).print(table)


def _param(params: dict[str, Any], name: str) -> str:
    """A run's value of a sweep parameter: "null" where it sets null, "—" where nothing."""
    from kubetune._tables import format_value

    if name not in params:
        return "—"
    return "null" if params[name] is None else format_value(params[name])


@app.command()
def render(
    spec: SpecArg,
    set_: SetOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write one manifest + values file per run here (for GitOps)."),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Render only this run id.")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace to write into the manifests.")
    ] = None,
    stage: Annotated[
        bool,
        typer.Option(
            "--stage",
            help="Upload local data and model folders to the run's store (content-addressed) "
            "and name them in the manifests.",
        ),
    ] = False,
) -> None:
    """Render each run as Kubernetes manifests with the real Helm engine.

    Without --out the manifests go to stdout: kubetune render job.yaml | kubectl apply -f -
    A spec naming files on this machine needs --stage (or s3:// inputs).
    """
    from kubetune import render as rendermod
    from kubetune import stage as stagemod
    from kubetune import sweep as sweepmod
    from kubetune.predict import commands as batchcmd
    from kubetune.predict.spec import is_batch

    if is_batch(spec):
        batchcmd.render(batchcmd.load(spec, set_), out, namespace, stage, _console())
        return
    job, runs = _load(spec, set_, only=run)
    if job.sweep is not None and job.sweep.driven and run is None:
        # The driver's objects: it creates the trials (owned by its Job) in the cluster.
        if not stage:
            stagemod.refuse_local([sweepmod.base_run(job)])
        sweep, inputs = _staged_sweep(job, upload=True)
        driver = rendermod.render_driver(sweep, namespace, inputs=inputs, gitops=out is not None)
        rendered = [driver]
    else:
        for item in runs:
            rendermod.check_renderable(item)
        if stage:
            runs = _stage(runs)
        else:
            stagemod.refuse_local(runs)
        rendered = rendermod.render(runs, namespace, gitops=out is not None)
    if out is None:
        sys.stdout.write(rendermod.stream(rendered))
        return
    rendermod.write_dir(rendered, out)
    what = (
        f"sweep driver {rendered[0].run.run_id} (its RBAC, ConfigMap and Job; the trials are "
        "created by the driver, not in this folder)"
        if job.sweep is not None and job.sweep.driven and run is None
        else f"{len(rendered)} run{'s' if len(rendered) != 1 else ''}"
    )
    _console().print(f"[green]✓[/] {what} → {out}/ (apply with kubectl apply -k {out})")


@app.command("run")
def run_cmd(
    spec: SpecArg,
    set_: SetOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Run only this run id.")] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Where runs go (default file://./runs, or $KUBETUNE_STORE)."),
    ] = None,
) -> None:
    """Train every run of a spec on this machine, each in a subprocess (accelerate launch).

    Ctrl-C stops after saving a checkpoint; running the same command again resumes it, and a
    finished run is not trained twice.
    """
    from kubetune import local, preflight
    from kubetune import sweep as sweepmod
    from kubetune.errors import EXIT_USER, EXIT_WORLD
    from kubetune.kube import names
    from kubetune.predict.spec import is_batch
    from kubetune.store import DEFAULT_STORE

    uri = store or os.environ.get(names.STORE_ENV) or DEFAULT_STORE
    if is_batch(spec):
        from kubetune.predict import commands as batchcmd

        batchcmd.run_here(batchcmd.load(spec, set_), uri, _console())
        return
    job, runs = _load(spec, set_, only=run)
    driven = job.sweep is not None and job.sweep.driven and run is None
    # Every run's data, model and store, before the first trainer's start-up is paid for.
    preflight.check_runs(runs or [sweepmod.base_run(job)], str(spec), uri)
    if driven:
        _drive_here(job, uri)
        return
    from kubetune._progress import display_for

    display = display_for(_console(), _console(stderr=False))
    outcomes = []
    for item in runs:
        outcome = local.run_one(item, uri, display)
        outcomes.append(outcome)
        if outcome.status == "interrupted":
            break
    display.summary(outcomes)
    statuses = {o.status for o in outcomes}
    if "interrupted" in statuses:
        raise typer.Exit(130)
    if "config-error" in statuses:
        raise typer.Exit(EXIT_USER)
    if "failed" in statuses:
        raise typer.Exit(EXIT_WORLD)


def _drive_here(job: JobSpec, uri: str) -> None:
    """``kubetune run`` of a driven sweep: the sweep driver, with trials as subprocesses
    here; the leaderboard is printed each time a trial ends."""
    from rich.markup import escape

    from kubetune import local
    from kubetune._progress import PlainDisplay, display_for
    from kubetune.errors import EXIT_INTERRUPTED, EXIT_USER, EXIT_WORLD
    from kubetune.search import board, driver
    from kubetune.search.local import LocalExecutor
    from kubetune.search.state import SweepState, TrialRow
    from kubetune.store import open_store

    assert job.sweep is not None
    console, results = _console(), _console(stderr=False)
    gpus = local.local_gpus()
    parallelism = driver.parallelism_for(job, cluster=False, gpus_here=gpus)
    shared = display_for(console, results)
    executor = LocalExecutor(
        uri,
        (lambda: shared) if parallelism == 1 else (lambda: PlainDisplay(console, results)),
        gpus_here=gpus,
        gpus_per_trial=job.resources.gpus,
    )

    def changed(state: SweepState, row: TrialRow | None) -> None:
        if row is not None and row.state != "running":
            results.print(board.leaderboard(state))

    console.print(
        f"[bold]{job.name}[/]: {job.sweep.method} sweep, {parallelism} trial"
        f"{'s' if parallelism != 1 else ''} at once, state in {uri.rstrip('/')}/{job.name}/"
    )
    drive = driver.Driver(
        job, open_store(uri), executor, parallelism=parallelism, on_change=changed
    )
    result = drive.run()
    state = result.state
    results.print(board.leaderboard(state))
    console.print(board.budget_line(state))
    if result.interrupted:
        console.print(
            "[bold yellow]interrupted[/]: the trials stored checkpoints; run the same command "
            "again to resume the sweep"
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    best = state.best()
    if best is not None:
        console.print(
            f"[green]✓[/] best: trial {best.number} ({best.run_id}), {state.metric} "
            f"{best.value:.4f} → {uri.rstrip('/')}/{job.name}/{best.run_id}"
        )
    if any(t.refused for t in state.trials):
        for trial in state.trials:
            if trial.refused:
                console.print(
                    f"[bold red]error:[/] trial {trial.number}: {escape(trial.error or '')}"
                )
        raise typer.Exit(EXIT_USER)
    if state.counts().get("failed"):
        raise typer.Exit(EXIT_WORLD)


data_app = typer.Typer(help="Prepare the example datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    name: Annotated[
        str,
        typer.Argument(
            help="Dataset: bbc-news, bbc-retrieval, wnut16, aclsum or squad.", show_default=False
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Folder for train/validation/test.jsonl.")],
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    validation: Annotated[float, typer.Option(help="Share held out for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="Share held out for test.")] = 0.1,
) -> None:
    """Convert a packaged example dataset into seeded train/validation/test JSON lines."""
    from kubetune import prepare

    result = prepare.prepare(name, out, seed=seed, validation=validation, test=test)
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    labels = f"; {len(result.labels)} labels" if result.labels else ""
    _console().print(f"[green]✓[/] {name} → {out}/ ({counts}{labels})")
    for note in result.notes:
        _console().print(f"  note: {note}")


StoreUriArg = Annotated[
    str,
    typer.Argument(
        help="A store (file://./runs, s3://bucket/prefix), <store>/<sweep> or one run.",
        show_default=False,
    ),
]
RunUriArg = Annotated[
    str, typer.Argument(help="One run: <store>/<sweep>/<run-id>.", show_default=False)
]

runs_app = typer.Typer(help="Look at stored runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(uri: StoreUriArg) -> None:
    """Every run at or under URI: status, sweep parameters, headline metrics, time."""
    from kubetune import runs

    infos = runs.read_all(runs.find(uri))
    if not infos:
        _console().print(f"no runs in {uri}")
        return
    console = _console(stderr=False)
    for table in runs.list_tables(infos):
        console.print(table)


@runs_app.command("show")
def runs_show(uri: RunUriArg) -> None:
    """One run: identity, parameters, final metrics, checkpoints, final/ and W&B."""
    from kubetune import runs

    _console(stderr=False).print(runs.show(runs.detail(runs.locate(uri))))


@app.command()
def reproduce(
    uri: RunUriArg,
    render_: Annotated[
        bool, typer.Option("--render", help="Print (or --out) the run's manifests again.")
    ] = False,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit",
            help="Create the run's objects in the current context, unless its Job is there.",
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="--submit: delete a failed Job of the run, or one with another pod "
            "(--image/--store), wait until it is gone, then create.",
        ),
    ] = False,
    local_: Annotated[
        bool,
        typer.Option("--local", help="Re-run here and compare final metrics with the record."),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="--render: write a GitOps folder here.")
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="--render/--submit: namespace (default: the recorded one)."
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", help="--render/--submit: pin the image, REF@sha256:…"),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Where the rerun writes: --local default file://./reproductions; "
            "--render/--submit an s3:// store instead of the recorded one.",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="--render/--submit: S3 endpoint of --store (MinIO)."),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance", help="--local: largest relative difference (spec reproduce.tolerance)."
        ),
    ] = None,
) -> None:
    """Reproduce a stored run from its spec and record: --render, --submit or --local."""
    from kubetune import reproduce as repro
    from kubetune.errors import ConfigError

    modes = [
        name for name, on in (("render", render_), ("submit", submit), ("local", local_)) if on
    ]
    if len(modes) != 1:
        raise ConfigError("choose one of --render, --submit or --local")
    _check_options(
        modes[0],
        out=out,
        namespace=namespace,
        image=image,
        store=store,
        endpoint=endpoint,
        tolerance=tolerance,
        replace=replace or None,
    )
    recorded = repro.load(uri)
    if local_:
        _reproduce_local(recorded, store or repro.DEFAULT_STORE, tolerance)
    elif submit:
        _reproduce_submit(recorded, namespace, image, store, endpoint, replace)
    else:
        _reproduce_render(recorded, namespace, image, out, store, endpoint)


def _check_options(mode: str, **given: Any) -> None:
    """Refuse options that the chosen reproduce mode would ignore."""
    from kubetune.errors import ConfigError

    allowed = {
        "render": {"out", "namespace", "image", "store", "endpoint"},
        "submit": {"namespace", "image", "store", "endpoint", "replace"},
        "local": {"store", "tolerance"},
    }[mode]
    for name, value in given.items():
        if value is not None and name not in allowed:
            raise ConfigError(f"--{name} does not apply to --{mode}; drop it")


def _warn(lines: list[str]) -> None:
    from rich.markup import escape

    console = _console()
    for line in lines:
        console.print(f"[bold yellow]warning:[/] {escape(line)}")


def _reproduce_render(
    recorded: Recorded,
    namespace: str | None,
    image: str | None,
    out: Path | None,
    store: str | None,
    endpoint: str | None,
) -> None:
    from kubetune import render as rendermod
    from kubetune import reproduce as repro

    rendered, warnings = repro.render(recorded, namespace, image, store, endpoint)
    _warn(warnings)
    if out is None:
        sys.stdout.write(rendermod.stream(rendered))
        return
    rendermod.write_dir(rendered, out)
    _console().print(
        f"[green]✓[/] {recorded.run.run_id} → {out}/ (apply with kubectl apply -k {out})"
    )


def _reproduce_submit(
    recorded: Recorded,
    namespace: str | None,
    image: str | None,
    store: str | None,
    endpoint: str | None,
    replace: bool,
) -> None:
    from rich.markup import escape

    from kubetune import reproduce as repro
    from kubetune.kube import client

    caution = repro.check_submit(recorded, store)
    rendered, warnings = repro.render(recorded, namespace, image, store, endpoint)
    target = client.connect()
    _warn(warnings + ([caution] if caution else []))
    done = repro.submit(rendered, namespace, target, replace=replace)
    console = _console()
    for item in done.objects:
        console.print(f"  [dim]{escape(item)}[/]")
    mark = "[green]✓[/]" if done.action in (repro.CREATED, repro.REPLACED) else "[cyan]•[/]"
    console.print(f"{mark} {escape(done.message)}")


def _reproduce_local(recorded: Recorded, store: str, tolerance: float | None) -> None:
    from rich.markup import escape

    from kubetune import reproduce as repro
    from kubetune._progress import display_for
    from kubetune.errors import EXIT_INTERRUPTED, EXIT_USER, EXIT_WORLD

    plan = repro.plan_local(recorded, store, tolerance)
    _warn(repro.environment_differences(recorded.record))
    console = _console()
    result = repro.run_local(plan, display_for(console, _console(stderr=False)))
    status = result.outcome.status
    if status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
    if status == "config-error":
        raise typer.Exit(EXIT_USER)
    if not result.completed:
        raise typer.Exit(EXIT_WORLD)
    if status == "already-completed":
        console.print(
            f"  compared with the reproduction already at {escape(result.outcome.url)} "
            "(remove it to run again)"
        )
    _console(stderr=False).print(_comparison_table(result.comparisons))
    outside = result.outside
    limit = f"{plan.tolerance:.2%}"
    if outside:
        names = ", ".join(f"{c.split} {c.metric} ({_difference(c)})" for c in outside)
        console.print(f"[bold red]error:[/] not reproduced within {limit}: {escape(names)}")
        raise typer.Exit(EXIT_WORLD)
    console.print(
        f"[green]✓[/] reproduced: {len(result.comparisons)} metrics within {limit} "
        f"→ {escape(result.outcome.url)}"
    )


def _difference(comparison: Comparison) -> str:
    difference = comparison.difference
    if difference is None:
        return "missing"
    return f"{difference:.2%}" if comparison.recorded else f"{difference:.4f} abs."


def _comparison_table(comparisons: list[Comparison]) -> Any:
    from rich.table import Table

    table = Table(title="recorded vs reproduced")
    table.add_column("split")
    table.add_column("metric")
    for name in ("recorded", "reproduced", "difference"):
        table.add_column(name, justify="right")
    table.add_column("")
    for c in comparisons:
        reproduced = "—" if c.reproduced is None else f"{c.reproduced:.6g}"
        mark = "[green]✓ within[/]" if c.ok else "[bold red]✗ outside[/]"
        table.add_row(c.split, c.metric, f"{c.recorded:.6g}", reproduced, _difference(c), mark)
    return table


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="A stored run: <store>/<sweep>/<run-id>.")],
    corpus: Annotated[
        str,
        typer.Argument(
            help="A .jsonl/.csv/.parquet file or folder, an s3:// prefix, or hub:<dataset>."
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", help="Job name: output goes to <store>/<name>/…")
    ] = "predict",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write every row here (.jsonl or .parquet)."),
    ] = None,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    id_column: Annotated[str, typer.Option("--id-column", help="Kept on each output row.")] = "id",
    max_length: Annotated[int | None, typer.Option("--max-length", min=8)] = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="Quantize Linear layers to int8 (CPU): ~2× faster.")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="Where output goes (default file://./runs, or $KUBETUNE_STORE)."
        ),
    ] = None,
) -> None:
    """Apply a stored run's model to a corpus here: one output row per input row, ids kept,
    rows/s printed. A spec with kind: predict does the same, sharded, on a cluster."""
    from kubetune.kube import names
    from kubetune.predict import batch as batchmod
    from kubetune.predict import commands as batchcmd
    from kubetune.predict import spec as batchspec
    from kubetune.store import DEFAULT_STORE

    fmt = "parquet" if out is not None and out.suffix == ".parquet" else "jsonl"
    job = batchspec.validate(
        {
            "kind": "predict",
            "name": name,
            "model": model,
            "corpus": {"uri": corpus, "text_column": text_column, "id_column": id_column},
            "max_length": max_length,
            "int8": int8,
            "output": {"format": fmt},
        },
        "kubetune predict",
    )
    uri = store or os.environ.get(names.STORE_ENV) or DEFAULT_STORE
    batchcmd.run_here(job, uri, _console())
    if out is not None:
        rows = batchmod.gather(job, batchmod.output_for(job, uri))
        batchcmd.export(rows, out)
        _console().print(f"  {len(rows)} rows → {out}")


@app.command()
def search(
    index: Annotated[
        str, typer.Argument(help="An index job's folder (<store>/<name>/<batch-id>) or index/.")
    ],
    query: Annotated[
        str | None,
        typer.Argument(help="What to look for; without it, one query per line of stdin."),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="Hits to show.")] = 10,
    mode: Annotated[str, typer.Option("--mode", help="dense, bm25 or hybrid (RRF).")] = "dense",
) -> None:
    """Search a stored index: its encoder on the query, then FAISS (or BM25, or both fused).
    The index and its encoder are fetched once into ~/.cache/kubetune; without QUERY, each
    line of stdin is a query, all answered by one loaded index."""
    from rich.markup import escape
    from rich.table import Table

    from kubetune.predict.lookup import Searcher

    searcher = Searcher.load(index)
    queries = [query] if query is not None else (line.strip() for line in sys.stdin)
    for text in queries:
        if not text:
            continue
        hits, seconds = searcher.search(text, k, mode)
        table = Table(box=None, pad_edge=False, title=None if query else escape(text))
        for column in ("#", "score", "id", "text"):
            table.add_column(column, justify="right" if column in ("#", "score") else "left")
        for rank, (ident, score) in enumerate(hits, 1):
            snippet = " ".join(searcher.index.doc(ident).text.split())
            table.add_row(str(rank), f"{score:.3f}", escape(ident), escape(snippet[:100]))
        _console(stderr=False).print(table)
        _console().print(
            f"{len(hits)} hits of {len(searcher.index)} documents ({mode}) in "
            f"{seconds * 1000:.0f} ms"
        )


@app.command()
def serve(
    uri: Annotated[
        str,
        typer.Argument(help="A stored run (<store>/<sweep>/<run-id>) or an index job's folder."),
    ],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Texts per model call, at most.")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="How long a batch waits to fill.")
    ] = 5.0,
    int8: Annotated[bool, typer.Option("--int8", help="int8 Linear layers (CPU).")] = False,
) -> None:
    """Serve a stored run (POST /v1/predict, or /v1/embed for an encoder) or an index
    (/v1/search, /v1/embed) over HTTP; GET /healthz and /readyz. The model loads once."""
    from kubetune.predict import lookup
    from kubetune.serve.app import serve as run_server

    target = lookup.served_target(uri)
    run_server(
        **target, host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, int8=int8
    )


@app.command()
def report(
    uri: StoreUriArg,
    out: Annotated[
        Path, typer.Option("--out", help="The HTML report; a Markdown twin goes beside it.")
    ] = Path("report.html"),
) -> None:
    """Write an HTML (and Markdown) report of the runs at or under URI."""
    from kubetune.report import build_report

    result = build_report(uri, out)
    plural = "s" if result.runs != 1 else ""
    _console().print(
        f"[green]✓[/] report of {result.runs} run{plural} → {result.html} (and {result.markdown})"
    )


# --- the cluster: submit, status, logs, cancel, list ----------------------------------------

ContextOpt = Annotated[
    str | None,
    typer.Option("--context", help="Kube context to use (default: the kubeconfig's current one)."),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", help="Namespace (default: the context's namespace, else default)."
    ),
]
RunsArg = Annotated[
    str,
    typer.Argument(help="A job spec file, a sweep name or a run id.", show_default=False),
]


@app.command()
def submit(
    spec: SpecArg,
    set_: SetOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Submit only this run id.")] = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Have the API server check every object; store nothing."),
    ] = False,
) -> None:
    """Create each run of a spec as a Kubernetes Job (server-side apply), concurrently.

    A run whose Job already exists with the same spec is left alone, so submitting again is
    safe; a sweep submitted again resumes (a run completed in the store is not created again,
    one whose Job failed is replaced and resumes from its checkpoint). A sweep's estimated
    cost is printed first. A driven sweep (tpe, cmaes, a pruner, a budget) creates its driver
    instead, a Job that launches the trials. Exit 0 when every run is created, unchanged,
    resumed or completed, 1 otherwise.
    """
    from kubetune import render as rendermod
    from kubetune.errors import EXIT_WORLD
    from kubetune.kube import client
    from kubetune.kube import submit as submitmod
    from kubetune.predict.spec import is_batch

    if is_batch(spec):
        from kubetune.predict import commands as batchcmd

        if not batchcmd.submit(batchcmd.load(spec, set_), context, namespace, dry_run, _console()):
            raise typer.Exit(EXIT_WORLD)
        return
    job, runs = _load(spec, set_, only=run)
    if job.sweep is not None and job.sweep.driven and run is None:
        _submit_driver(job, context, namespace, dry_run)
        return
    for item in runs:
        rendermod.check_renderable(item)
    target = client.connect(context)
    ns = target.namespace_for(namespace)
    runs = _stage(runs, upload=not dry_run)
    rendered = rendermod.render(runs, ns)
    submitmod.check_queues(target, ns, [r.spec.resources.queue for r in runs])
    view = submitmod.StoreView(runs) if job.sweep is not None else None
    if view is not None:
        _console().print(submitmod.cost_line(runs, view.finished_compute(job.name)))
    outcomes = _submit_with_progress(
        rendered, target, ns, dry_run, view.stored if view is not None else None
    )
    _console(stderr=False).print(_submit_table(outcomes, ns, dry_run))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.result] = counts.get(outcome.result, 0) + 1
    summary = ", ".join(f"{n} {result}" for result, n in counts.items())
    plural = "s" if len(outcomes) != 1 else ""
    ok = all(o.ok for o in outcomes)
    mark = "[green]✓[/]" if ok else "[bold red]✗[/]"
    _console().print(f"{mark} {len(outcomes)} run{plural} in {ns}: {summary}")
    if not ok:
        raise typer.Exit(EXIT_WORLD)


def _staged_sweep(job: JobSpec, upload: bool) -> tuple[JobSpec, dict[str, dict[str, str]]]:
    """A driven sweep's spec with its local inputs staged (the driver's spec names the staged
    URIs, and every trial's run.json records them), and those inputs."""
    from kubetune import render as rendermod
    from kubetune import stage as stagemod

    base = stagemod.sweep_base(job)
    rendermod.check_renderable(base)
    (staged,) = _stage([base], upload=upload)
    return stagemod.with_staged(job, staged.inputs), staged.inputs


def _submit_driver(job: JobSpec, context: str | None, namespace: str | None, dry_run: bool) -> None:
    """``kubetune submit`` of a driven sweep: the driver's objects (its Job runs ``kubetune
    drive``, which creates the trials); idempotent, as a run's submit is."""
    from rich.markup import escape

    from kubetune import render as rendermod
    from kubetune.errors import EXIT_WORLD
    from kubetune.kube import client
    from kubetune.kube import submit as submitmod

    target = client.connect(context)
    ns = target.namespace_for(namespace)
    sweep, inputs = _staged_sweep(job, upload=not dry_run)
    rendered = rendermod.render_driver(sweep, ns, inputs=inputs)
    submitmod.check_queues(target, ns, [sweep.resources.queue])
    (outcome,) = submitmod.submit([rendered], target, ns, dry_run=dry_run)
    name, console = rendered.run.run_id, _console()
    where = f"sweep driver {name} in {ns}"
    if outcome.result == submitmod.CREATED:
        done = "checked by the API server (dry run, nothing stored)" if dry_run else "created"
        console.print(
            f"[green]✓[/] {escape(where)} {done}; it launches the trials: "
            f"kubetune status {escape(job.name)} shows the leaderboard"
        )
        return
    if outcome.result == submitmod.UNCHANGED:
        console.print(
            f"[green]✓[/] {escape(where)} is already there ({escape(outcome.detail)}); "
            f"kubetune status {escape(job.name)} shows the leaderboard"
        )
        return
    detail = outcome.detail.replace(f"kubetune cancel {name}", f"kubetune cancel {job.name}")
    console.print(f"[bold red]✗[/] {escape(where)}: {escape(detail)}")
    raise typer.Exit(EXIT_WORLD)


def _stage(runs: list[ResolvedRun], upload: bool = True) -> list[ResolvedRun]:
    """Stage the runs' local inputs with a progress bar; one summary line when any."""
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from kubetune import stage as stagemod

    if not any(stagemod.find_local(run.spec) for run in runs):
        return runs
    total = stagemod.plan_bytes(runs)
    console = _console()
    with Progress(
        TextColumn("staging inputs (sha256)" if upload else "hashing inputs (dry run)"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("inputs", total=total)
        staged = stagemod.stage_runs(
            runs, upload=upload, advance=lambda n: progress.advance(task, n)
        )
    t = staged.totals
    stores = sorted(
        {r.spec.storage.uri.rstrip("/") for r in staged.runs if r.inputs and r.spec.storage}
    )
    where = ", ".join(f"{s}/{stagemod.PREFIX}/" for s in stores)
    sent = "would upload" if not upload else "uploaded"
    console.print(
        f"[green]✓[/] staged {t.inputs} input{'s' if t.inputs != 1 else ''} ({t.files} files) "
        f"→ {escape(where)}: {sent} {stagemod.human_bytes(t.uploaded)}, "
        f"{stagemod.human_bytes(t.stored)} already stored"
    )
    return staged.runs


def _submit_with_progress(
    rendered: list[Rendered],
    target: Cluster,
    namespace: str,
    dry_run: bool,
    stored: Callable[[ResolvedRun], Stored] | None = None,
) -> list[Outcome]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kubetune.kube import submit as submitmod

    console = _console()
    with Progress(
        TextColumn("submitting" if not dry_run else "checking (dry run)"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("runs", total=len(rendered))
        return submitmod.submit(
            rendered,
            target,
            namespace,
            dry_run=dry_run,
            progress=lambda _outcome: progress.advance(task),
            stored=stored,
        )


def _submit_table(outcomes: list[Outcome], namespace: str, dry_run: bool) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from kubetune._tables import add_id_column

    title = (
        f"dry run in {namespace}: checked by the API server, nothing stored"
        if dry_run
        else f"submitted to {namespace}"
    )
    styles = {
        "created": "green",
        "unchanged": "green",
        "resumed": "green",
        "completed": "green",
        "conflict": "yellow",
        "failed": "red",
    }
    table = Table(title=escape(title))
    add_id_column(table, "run id", [o.run_id for o in outcomes])
    table.add_column("result")
    table.add_column("detail")
    for o in outcomes:
        table.add_row(o.run_id, f"[{styles[o.result]}]{o.result}[/]", escape(o.detail) or "—")
    return table


@app.command()
def status(
    name: RunsArg,
    namespace: NamespaceOpt = None,
    context: ContextOpt = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Keep the table up to date until Ctrl-C, which exits 130 as kubectl get "
            "--watch does; the runs go on. Not on a terminal: the whole table at each change.",
        ),
    ] = False,
) -> None:
    """Show the runs of a sweep (or one run) in the cluster, with their stored metric.

    A row per run: its parameters, Job phase, pod state, restarts, node, age, and the headline
    metric of its run.json in the store ("—" where it cannot be read). A driven sweep shows
    its driver's row first, and under the table the leaderboard and budget from the store.
    """
    from kubetune.errors import ConfigError
    from kubetune.kube import client
    from kubetune.kube import status as job_status
    from kubetune.kube import watch as finder

    target = client.connect(context)
    ns = target.namespace_for(namespace)
    found = finder.resolve(target, ns, name)
    metrics = job_status.Metrics()
    title = f"{found.title} in {ns}"

    def table(
        jobs: list[dict[str, Any]], pods: list[dict[str, Any]], missing: set[str] | None = None
    ) -> Any:
        from rich.console import Group
        from rich.markup import escape

        from kubetune.search import board

        values = metrics.read(jobs)
        rows = job_status.rows(
            jobs,
            pods,
            found.expected,
            values,
            missing_config_maps=missing or (),
            pruned=metrics.pruned(jobs),
        )
        problems = [
            f"[bold yellow]stuck:[/] {escape(line)}" for line in job_status.problem_lines(rows)
        ]
        parts: list[Any] = [job_status.status_table(title, rows), *problems]
        drivers = [j for j in jobs if job_status.is_driver(j)]
        if drivers:
            state, problem = metrics.sweep_state(drivers[0])
            if state is None:
                parts.append(f"[yellow]leaderboard:[/] {escape(problem)}")
            else:
                parts += [board.leaderboard(state), escape(board.budget_line(state))]
        return Group(*parts)

    if watch:
        _watch(target, ns, found.selector, table)
        return
    jobs, pods = finder.snapshot(target, ns, found.selector)
    if not jobs and not found.expected:
        raise ConfigError(
            f"no sweep or run {name} in namespace {ns}; kubetune list shows what is there"
        )
    missing = finder.missing_config_maps(target, ns, pods)
    _console(stderr=False).print(table(jobs, pods, missing))


def _watch(target: Cluster, namespace: str, selector: str, table: Any) -> None:
    """Show the status table at every change until Ctrl-C (exit 130: a watch never ends by
    itself, so 0 would claim an end that did not happen).

    On a terminal the table is redrawn in place. Elsewhere (a pipe, a CI log) each change
    prints the whole table again, and a refresh that changed nothing prints nothing.
    """
    import threading
    from contextlib import closing

    from rich.live import Live

    from kubetune.kube import watch

    console = _console(stderr=False)
    stop = threading.Event()
    updates = watch.watch(target, namespace, selector, stop)
    with _on_interrupt("stopped watching; the runs go on in the cluster"), closing(updates):
        if console.is_terminal:
            with Live(console=console, auto_refresh=False) as live:
                for jobs, pods in updates:
                    live.update(table(jobs, pods), refresh=True)
            return
        shown = None
        for snapshot in updates:
            if snapshot != shown:
                console.print(table(*snapshot))
                shown = snapshot


@app.command()
def logs(
    run: Annotated[str, typer.Argument(help="A run id.", show_default=False)],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing as the trainer logs: exit 0 when the log ends, 130 on Ctrl-C "
            "(the run goes on).",
        ),
    ] = False,
    rank: Annotated[
        int, typer.Option("--rank", min=0, help="Machine rank of a multi-node run.")
    ] = 0,
    namespace: NamespaceOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print the trainer's log of a run: its newest pod (of machine rank --rank)."""
    from rich.markup import escape

    from kubetune.kube import client
    from kubetune.kube import logs as kube_logs
    from kubetune.kube.status import pod_state

    target = client.connect(context)
    ns = target.namespace_for(namespace)
    pod = kube_logs.log_pod(target, ns, run, rank)
    name = pod["metadata"]["name"]
    _console().print(f"[dim]pod {escape(name)} ({escape(pod_state(pod))})[/]")
    out = getattr(sys.stdout, "buffer", None)
    stopped = "stopped following the log; the run goes on in the cluster" if follow else ""
    with _on_interrupt(stopped):
        for chunk in kube_logs.logs(target, ns, pod, follow=follow):
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))


@app.command()
def cancel(name: RunsArg, namespace: NamespaceOpt = None, context: ContextOpt = None) -> None:
    """Delete the Jobs of a sweep (or one run) and their ConfigMaps, Services, NetworkPolicies.

    A driven sweep's driver goes first (it launches nothing more), then its trials, its
    ConfigMap, ServiceAccount, Role and RoleBinding. Each trainer gets SIGTERM and stores a
    checkpoint before it stops; submitting again resumes it.
    """
    from rich.markup import escape

    from kubetune.kube import cancel as kube_cancel
    from kubetune.kube import client, watch

    target = client.connect(context)
    ns = target.namespace_for(namespace)
    found = watch.resolve(target, ns, name)
    with _on_interrupt(f"some objects may be deleted already; kubetune cancel {name} again "
                       "deletes the rest"):  # fmt: skip
        deleted = kube_cancel.cancel(target, ns, found.selector)
    console = _console()
    if not deleted:
        console.print(f"nothing to cancel: no objects of {escape(found.title)} in {ns}")
        return
    for item in deleted:
        console.print(f"[green]✓[/] deleted {escape(str(item))}")


@app.command("list")
def list_cmd(namespace: NamespaceOpt = None, context: ContextOpt = None) -> None:
    """List the sweeps in a namespace, with how many runs are in each phase; driven sweeps
    are marked, with their pruned trials counted (from the store's sweep.json)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from kubetune.kube import client, watch
    from kubetune.kube import status as job_status
    from kubetune.kube.names import SWEEP_LABEL

    target = client.connect(context)
    ns = target.namespace_for(namespace)
    jobs = watch.managed_jobs(target, ns)
    summaries = job_status.sweeps(jobs)
    metrics = job_status.Metrics()
    for i, summary in enumerate(summaries):
        driver = next(
            (j for j in jobs if job_status.is_driver(j)
             and job_status.labels(j).get(SWEEP_LABEL) == summary.sweep),
            None,
        )  # fmt: skip
        if driver is not None:
            state, _problem = metrics.sweep_state(driver)
            pruned = state.counts().get("pruned", 0) if state is not None else None
            summaries[i] = replace(summary, pruned=pruned)
    if not summaries:
        _console().print(f"no kubetune runs in namespace {ns}")
        return
    _console(stderr=False).print(job_status.sweeps_table(ns, summaries, datetime.now(UTC)))


@app.command(hidden=True)
def drive(spec: SpecArg) -> None:
    """Drive a driven sweep from inside the cluster: the command of the sweep driver's pod.

    Reads the sweep's spec (the driver's ConfigMap), connects with the pod's service account,
    and runs the sweep driver with trials as Jobs owned by the driver's Job
    (``KUBETUNE_DRIVER_JOB``). SIGTERM exits 130 at once: everything is in the store, and
    the next pod resumes the sweep.
    """
    import json
    import signal

    from kubetune import spec as specmod
    from kubetune.errors import ConfigError
    from kubetune.kube import client, names
    from kubetune.search import board, driver
    from kubetune.search.cluster import JobExecutor, owner_of
    from kubetune.store import endpoint_here, open_store

    job = specmod.load(spec)
    if job.sweep is None or not job.sweep.driven or job.storage is None:
        raise ConfigError(
            f"{spec}: kubetune drive runs a driven sweep (sweep.method tpe or cmaes, a pruner, "
            "a budget or a parallelism) with an s3:// store; kubetune submit renders its pod"
        )
    job_name = os.environ.get(names.DRIVER_JOB_ENV)
    if not job_name:
        raise ConfigError(f"{names.DRIVER_JOB_ENV} is not set: kubetune drive runs in the "
                          "sweep driver's pod, whose manifest sets it")  # fmt: skip
    target = client.connect_in_cluster(os.environ.get(names.NAMESPACE_ENV) or None)
    ns = target.namespace_for(None)
    inputs = json.loads(os.environ.get(names.INPUTS_ENV) or "{}")
    executor = JobExecutor(target, ns, owner=owner_of(target, ns, job_name), inputs=inputs)
    storage = job.storage
    store = open_store(storage.uri, endpoint=endpoint_here(storage.endpoint), region=storage.region)
    pod = os.environ.get(names.POD_NAME_ENV) or job_name
    console = _console(stderr=False)

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, stop)
    parallelism = driver.parallelism_for(job, cluster=True)
    console.print(f"{job.name}: {job.sweep.method} sweep, {parallelism} trials at once, in {ns}")

    def changed(state: Any, row: Any) -> None:
        if row is not None and row.state != "running":
            console.print(board.leaderboard(state))

    drive_ = driver.Driver(
        job, store, executor, parallelism=parallelism, where=f"pod {pod}", on_change=changed
    )
    result = drive_.run()
    console.print(board.leaderboard(result.state))
    console.print(board.budget_line(result.state))


@app.command()
def schema() -> None:
    """Print the JSON Schema of a job spec (for editor completion and CI checks)."""
    import json

    from kubetune import spec as specmod

    sys.stdout.write(json.dumps(specmod.json_schema(), indent=2, ensure_ascii=False) + "\n")


def _report(exc: Exception) -> None:
    from rich.markup import escape

    from kubetune.errors import Interrupted

    console = _console()
    if isinstance(exc, Interrupted):
        state = f": {escape(exc.state)}" if exc.state else ""
        console.print(f"[bold yellow]interrupted[/]{state}")
        return
    lines = exc.lines() if hasattr(exc, "lines") else [str(exc)]
    for line in lines:
        console.print(f"[bold red]error:[/] {escape(line)}")


def main() -> None:
    """Console-script entry point: run the app, turn kubetune errors into one-line reports.

    Typer handles usage errors itself (printed as it prints them, exit 2) and ``typer.Exit``
    codes. Ctrl-C is :class:`~kubetune.errors.Interrupted` by the time it leaves a command
    (see :class:`_Commands`): one line, exit 130. Anything else unexpected is one line too.
    ``KUBETUNE_DEBUG=1`` prints the traceback, with its cause chain, instead of the line;
    the exit code stays the same.
    """
    from kubetune.errors import DEBUG, EXIT_WORLD, Interrupted, KubetuneError

    try:
        try:
            app()
        except KeyboardInterrupt as exc:  # between typer's parts, outside any command
            raise Interrupted() from exc
    except KubetuneError as exc:
        _fail(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get(DEBUG):
            _fail(exc)
        else:
            _console().print(
                f"[bold red]error:[/] {type(exc).__name__}: {exc} "
                "(KUBETUNE_DEBUG=1 shows the traceback)"
            )
        sys.exit(EXIT_WORLD)


def _fail(exc: Exception) -> None:
    """The one-line report, or with ``KUBETUNE_DEBUG`` set the whole traceback and causes."""
    from kubetune.errors import DEBUG

    if os.environ.get(DEBUG):
        import traceback

        traceback.print_exception(exc)
    else:
        _report(exc)


if __name__ == "__main__":
    main()
