"""A batch job as Kubernetes objects: the chart's Job in Indexed mode, one completion per
shard, and its inputs staged like a training run's.

- ``completionMode: Indexed`` with ``completions: shards``: the Job controller runs each
  index until one of its pods succeeds and never runs a succeeded index again; each pod reads
  its index from the ``batch.kubernetes.io/job-completion-index`` annotation (as
  ``$KUBETUNE_SHARD``).
- ``backoffLimitPerIndex`` (Kubernetes ≥ 1.33, GA): a shard that keeps failing fails alone;
  the other shards go on. Evictions and preemptions do not count (the chart's pod failure
  policy), and a bad spec fails the whole Job at once (exit 2).
- A pod that does run a shard again (its node died after the upload) finds the shard's
  manifest and exits at once (:mod:`kubetune.predict.shards`).

This module imports no ML framework: the laptop path renders and submits batch jobs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune import launch
from kubetune.errors import ConfigError
from kubetune.predict.spec import HUB, BatchSpec, batch_id, dump

if TYPE_CHECKING:
    from kubetune.render import Rendered

#: What each pod runs: its shard of the batch spec the chart mounts.
COMMAND = ("python", "-m", "kubetune.predict", launch.SPEC_PATH)


@dataclass(frozen=True)
class BatchRun:
    """A batch job where the chart and ``kubetune submit`` expect a run: its id names the
    Job and ConfigMap, its spec hash tells a resubmitted Job from a changed one."""

    run_id: str
    sweep: str
    spec_hash: str
    batch: BatchSpec
    inputs: dict[str, dict[str, str]]


def batch_run(batch: BatchSpec, inputs: dict[str, dict[str, str]] | None = None) -> BatchRun:
    text = dump(batch)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return BatchRun(batch_id(batch), batch.name, digest, batch, dict(inputs or {}))


def local_inputs(batch: BatchSpec) -> list[tuple[str, str, Path]]:
    """(field, as written, path) of what the spec names on this machine: the corpus, and a
    model folder that is not in a store."""
    found = []
    if not batch.corpus.uri.startswith(("s3://", HUB)):
        found.append(("corpus.uri", batch.corpus.uri, Path(batch.corpus.uri).absolute()))
    if not batch.model.startswith(("s3://", "file://")):
        if batch.model.startswith("pkg:"):
            from kubetune.preflight import package_folder

            found.append(("model", batch.model, package_folder(batch.model, "model")))
        else:
            found.append(("model", batch.model, Path(batch.model).absolute()))
    return found


def check_renderable(batch: BatchSpec) -> None:
    """Refuse what a pod could not run.

    Raises:
        ConfigError: naming the field to change.
    """
    if batch.storage is None or not batch.storage.uri.startswith("s3://"):
        raise ConfigError(
            "storage.uri: a batch Job writes its shards to an s3:// store; add storage: "
            "{uri: s3://bucket/prefix, secret: <Secret name>}"
        )
    if batch.model.startswith("file://"):
        raise ConfigError(
            f"model: {batch.model} lives on this machine's disk; a pod reads runs from an "
            "s3:// store (kubetune reproduce --store copies a run there)"
        )
    for field, source, _ in local_inputs(batch):
        raise ConfigError(
            f"{field}: {source} is on this machine; kubetune submit (or render --stage) "
            "uploads it to the store first"
        )


def stage(batch: BatchSpec, upload: bool = True) -> tuple[BatchSpec, dict[str, dict[str, str]]]:
    """The spec with its local corpus and model uploaded into its store (content-addressed,
    as :mod:`kubetune.stage` does for runs), and what went where."""
    from kubetune.stage import LocalInput, Stager

    if batch.storage is None:
        check_renderable(batch)
    assert batch.storage is not None
    stager = Stager(upload=upload)
    data = batch.model_dump(mode="json")
    inputs: dict[str, dict[str, str]] = {}
    for field, source, path in local_inputs(batch):
        if not path.exists():
            raise ConfigError(f"{field}: {source}: no such file or folder")
        staged = stager.stage(LocalInput(field, source, path), batch.storage)
        inputs[field] = staged.as_dict()
        if field == "model":
            data["model"] = staged.uri
        else:
            data["corpus"]["uri"] = staged.uri
    return BatchSpec.model_validate(data), inputs


def values(
    batch: BatchSpec, namespace: str | None = None, *, gitops: bool = False
) -> dict[str, Any]:
    """The chart values of a batch job (see the chart's ``shards`` values)."""
    from kubetune.render import pod_values

    check_renderable(batch)
    assert batch.storage is not None
    run = batch_run(batch)
    return {
        "namespace": namespace or "",
        "run": {
            "id": run.run_id,
            "sweep": batch.name,
            "task": batch.kind,
            "specHash": run.spec_hash,
            "params": "{}",
            "inputs": "{}",
        },
        "spec": dump(batch),
        "command": list(COMMAND),
        "nodes": 1,
        "gang": "job",
        "shards": batch.shards,
        "shardParallelism": batch.parallelism or batch.shards,
        **pod_values(batch.resources, batch.storage, batch.image, gitops=gitops),
        "wandb": {"secret": ""},
    }


def render(
    batch: BatchSpec,
    namespace: str | None = None,
    chart: Path | None = None,
    *,
    gitops: bool = False,
) -> Rendered:
    """The objects of a batch job: its ConfigMap and Indexed Job (and its NetworkPolicy)."""
    from kubetune.render import Rendered, render_values

    chart_values = values(batch, namespace, gitops=gitops)
    return Rendered(batch_run(batch), chart_values, render_values(chart_values, chart))
