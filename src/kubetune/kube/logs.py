"""A run's trainer log: which pod holds it (by machine rank) and its text, followed or not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kubetune.errors import ConfigError
from kubetune.kube import client as kube
from kubetune.kube.errors import ClusterError
from kubetune.kube.names import CONTAINER, INDEX_LABEL, RUN_ID_LABEL
from kubetune.kube.status import (
    job_phase,
    newest,
    pod_index,
    pod_state,
)
from kubetune.kube.watch import selector_for


def log_pod(target: kube.Cluster, namespace: str, run_id: str, rank: int = 0) -> dict[str, Any]:
    """The newest pod of ``run_id`` with completion index ``rank`` (its machine rank).

    Raises:
        ConfigError: no such run, no pod yet, or no such rank.
    """
    selector = selector_for(RUN_ID_LABEL, run_id)
    pods, _ = target.list_objects(kube.POD, namespace, selector)
    if not pods:
        jobs, _ = target.list_objects(kube.JOB, namespace, selector)
        if not jobs:
            raise ConfigError(
                f"no run {run_id} in namespace {namespace}; kubetune list shows the sweeps there"
            )
        raise ConfigError(
            f"run {run_id} has no pod yet ({job_phase(jobs[0])}); kubetune status {run_id} says why"
        )
    indexed = any(INDEX_LABEL in (p.get("metadata") or {}).get("labels", {}) for p in pods)
    if not indexed and rank != 0:
        raise ConfigError(f"--rank {rank}: run {run_id} runs on one node; its pod is rank 0")
    mine = [p for p in pods if pod_index(p) == rank]
    if not mine:
        ranks = sorted({pod_index(p) for p in pods})
        raise ConfigError(
            f"--rank {rank}: run {run_id} has pods of ranks {', '.join(map(str, ranks))}"
        )
    pod = newest(mine)
    assert pod is not None
    return pod


def logs(
    target: kube.Cluster, namespace: str, pod: dict[str, Any], *, follow: bool = False
) -> Iterator[bytes]:
    """The trainer's log of ``pod``; with ``follow``, as it is written, until it ends.

    Raises:
        ConfigError: the container has not started yet.
    """
    name = str((pod.get("metadata") or {}).get("name"))
    try:
        yield from target.logs(namespace, name, CONTAINER, follow=follow)
    except ClusterError as exc:
        if exc.status == 400 and "waiting to start" in str(exc):
            raise ConfigError(
                f"pod {namespace}/{name} has not started its trainer yet ({pod_state(pod)}); "
                "kubetune status shows why, try again once it runs"
            ) from exc
        raise
