"""What ``kubetune run``, ``render``, ``submit`` and ``predict`` do with a batch spec.

The CLI hands a spec here when its file has a top-level ``kind`` (:func:`spec.is_batch`);
everything that is not a training run's lives in this module, so cli.py only dispatches.
Loading, rendering and submitting import no ML framework.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kubetune.errors import Issue, SpecError
from kubetune.predict.spec import BatchSpec


def load(path: Path, overrides: list[str] | None = None) -> BatchSpec:
    """Load a batch spec with ``--set path=value`` overrides, every problem at once."""
    from kubetune import _yaml
    from kubetune import spec as specmod
    from kubetune.predict import spec as batchspec

    data, lines = specmod.load_raw(path)
    issues = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            issues.append(Issue(f"--set {item}", "write --set path=value"))
        else:
            specmod.set_path(data, key, _yaml.parse_scalar(raw))
    if issues:
        raise SpecError(issues)
    batch = batchspec.validate(data, str(path), lines)
    if batch.kind == "index" and batch.index is None:
        batch = batch.model_copy(update={"index": batchspec.IndexSpec()})
    return batch


def run_here(batch: BatchSpec, store: str, console: Any) -> None:
    """``kubetune run`` of a batch spec: every pending shard here, rows/s as they finish."""
    from kubetune.predict import batch as batchmod

    def shown(result: batchmod.ShardResult) -> None:
        console.print(
            f"  shard {result.shard + 1}/{batch.shards}: {result.rows} rows in "
            f"{result.seconds:.1f} s ({result.rows_per_second:.1f} rows/s)"
        )

    summary = batchmod.run_here(batch, store, progress=shown)
    skipped = sum(1 for r in summary.results if r.skipped)
    if skipped:
        console.print(f"  {skipped} shard{'s' if skipped != 1 else ''} done before: not redone")
    rows = f"{summary.rows} rows" if summary.rows else "nothing new"
    speed = f" at {summary.rows_per_second:.1f} rows/s" if summary.rows else ""
    console.print(f"[green]✓[/] {batch.kind} {batch.name}: {rows}{speed} → {summary.output.url}/")
    if summary.index is not None:
        console.print(
            f"  index: {summary.index['count']} vectors, {summary.index['kind']}, "
            f"dim {summary.index['dim']} → {summary.output.url}/index/ "
            f'(kubetune search {summary.output.url} "query")'
        )


def rendered(batch: BatchSpec, namespace: str | None, *, stage: bool, gitops: bool) -> Any:
    """The batch job's objects, its local inputs staged first with ``stage``."""
    from kubetune.predict import chart

    if stage:
        batch, _inputs = chart.stage(batch)
    return chart.render(batch, namespace, gitops=gitops)


def render(
    batch: BatchSpec, out: Path | None, namespace: str | None, stage: bool, console: Any
) -> None:
    from kubetune import render as rendermod

    item = rendered(batch, namespace, stage=stage, gitops=out is not None)
    if out is None:
        sys.stdout.write(rendermod.stream([item]))
        return
    rendermod.write_dir([item], out)
    console.print(
        f"[green]✓[/] {batch.kind} job {item.run.run_id} ({batch.shards} shards) → {out}/ "
        f"(apply with kubectl apply -k {out})"
    )


def submit(
    batch: BatchSpec, context: str | None, namespace: str | None, dry_run: bool, console: Any
) -> bool:
    """Create the batch job's Indexed Job; True when it is created or unchanged."""
    from kubetune.kube import client
    from kubetune.kube import submit as submitmod

    target = client.connect(context)
    ns = target.namespace_for(namespace)
    item = rendered(batch, ns, stage=not dry_run, gitops=False) if not dry_run else None
    if item is None:
        from kubetune.predict import chart

        staged, _ = chart.stage(batch, upload=False)
        item = chart.render(staged, ns)
    submitmod.check_queues(target, ns, [batch.resources.queue])
    (outcome,) = submitmod.submit([item], target, ns, dry_run=dry_run)
    mark = "[green]✓[/]" if outcome.ok else "[bold red]✗[/]"
    note = f" ({outcome.detail})" if outcome.detail else ""
    console.print(
        f"{mark} {batch.kind} job {outcome.run_id} in {ns}: {outcome.result}{note}; "
        f"{batch.shards} shard{'s' if batch.shards != 1 else ''}, output in "
        f"{batch.storage.uri if batch.storage else '?'}/{batch.name}/{item.run.run_id}/"
    )
    return outcome.ok


def export(rows: list[dict[str, Any]], out: Path) -> None:
    """Rows to one local file: parquet for a .parquet name, JSON lines otherwise."""
    from kubetune import atomic
    from kubetune.predict.shards import jsonl

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        atomic.write_atomic(out, buffer.getvalue())
    else:
        atomic.write_atomic(out, jsonl(rows))
