"""The runs of a sweep in a cluster: find them and watch them (logs: :mod:`kubetune.kube.logs`;
cancelling: :mod:`kubetune.kube.cancel`).

Everything is found by the labels the kubetune-job chart puts on every object
(``kubetune.io/sweep``, ``kubetune.io/run-id``, ``app.kubernetes.io/managed-by=kubetune``),
so a sweep needs no local state: a name, a run id or the job spec itself is enough. What
the objects mean is :mod:`kubetune.kube.status`; here is only how they are fetched.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.errors import ConfigError, KubetuneError
from kubetune.kube import client as kube
from kubetune.kube.errors import ClusterError
from kubetune.kube.names import MANAGED_SELECTOR, RUN_ID_LABEL, SWEEP_LABEL

#: A run id: ``<name>-<8 hex>``.
_RUN_ID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?-[0-9a-f]{8}$")
#: The Jobs and the pods of a sweep at one moment.
Snapshot = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def label_value(value: str) -> str:
    """A value as the chart writes it into a label: cut to 63 characters, no trailing '-'."""
    return value[:63].removesuffix("-")


@dataclass(frozen=True)
class Target:
    """What the user named: a sweep (by its spec or its name) or one run."""

    name: str
    selector: str
    #: From a spec: every run id it expands to, with its parameters (unsubmitted runs show).
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    is_run: bool = False

    @property
    def title(self) -> str:
        return f"run {self.name}" if self.is_run else f"sweep {self.name}"


def selector_for(key: str, value: str) -> str:
    return f"{MANAGED_SELECTOR},{key}={label_value(value)}"


def resolve(target: kube.Cluster, namespace: str, name: str) -> Target:
    """A job spec path (its sweep), a run id, or a sweep name.

    Raises:
        SpecError: a spec path whose spec is invalid.
        ConfigError: a ``.yaml`` path that does not exist.
    """
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from kubetune import spec as specmod
        from kubetune import sweep

        if not path.is_file():
            raise ConfigError(f"{name}: no such job spec file")
        job = specmod.load(path)
        runs = sweep.expand(job, str(path))  # none for a search: its driver asks for trials
        sweep_name = job.name
        return Target(
            sweep_name, selector_for(SWEEP_LABEL, sweep_name), {r.run_id: r.params for r in runs}
        )
    if _RUN_ID.match(name):
        jobs, _ = target.list_objects(kube.JOB, namespace, selector_for(RUN_ID_LABEL, name))
        if jobs:
            return Target(name, selector_for(RUN_ID_LABEL, name), is_run=True)
    return Target(name, selector_for(SWEEP_LABEL, name))


def snapshot(target: kube.Cluster, namespace: str, selector: str) -> Snapshot:
    """The Jobs and pods that match ``selector`` now."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = pool.submit(target.list_objects, kube.JOB, namespace, selector)
        pods = pool.submit(target.list_objects, kube.POD, namespace, selector)
        return jobs.result()[0], pods.result()[0]


def missing_config_maps(
    target: kube.Cluster, namespace: str, pods: list[dict[str, Any]]
) -> set[str]:
    """The ConfigMaps that pods waiting in ContainerCreating mount and that do not exist: such
    a pod waits for its volume forever (the kubelet says so only in the pod's events)."""
    from kubetune.kube.status import config_map_volumes, is_creating

    names = sorted({n for p in pods if is_creating(p) for n in config_map_volumes(p)})
    return {n for n in names if target.get(kube.CONFIG_MAP, namespace, n) is None}


# --- watching -----------------------------------------------------------------------------


def watch(
    target: kube.Cluster,
    namespace: str,
    selector: str,
    stop: threading.Event,
    *,
    timeout_s: int = 300,
    refresh_s: float = 5.0,
) -> Generator[Snapshot, None, None]:
    """Snapshots of the matching Jobs and pods: the current ones, then one after each burst
    of changes (and every ``refresh_s`` so ages move), until ``stop`` is set.

    Two threads follow the watch streams of Jobs and of pods; each lists first, then
    watches from the list's resourceVersion, resumes from the last event's version when the
    server ends a stream, and lists again when told its version is too old (410 Gone).

    Raises:
        KubetuneError: a stream failed in a way that resuming does not mend (RBAC, …).
    """
    events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
    streams: list[Any] = []
    followers = [
        threading.Thread(
            target=_follow,
            args=(target, kind, namespace, selector, events, stop, streams, timeout_s),
            name=f"kubetune-watch-{kind.plural}",
            daemon=True,
        )
        for kind in (kube.JOB, kube.POD)
    ]
    state: dict[str, dict[str, dict[str, Any]]] = {}
    for thread in followers:
        thread.start()
    try:
        while not stop.is_set():
            try:
                item = events.get(timeout=refresh_s)
            except queue.Empty:
                if len(state) == 2:
                    yield _current(state)
                continue
            _apply(state, item)
            while True:  # one snapshot per burst of events
                try:
                    _apply(state, events.get_nowait())
                except queue.Empty:
                    break
            if len(state) == 2:
                yield _current(state)
    finally:
        stop.set()
        for response in list(streams):
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                response.shutdown()  # unblocks a follower waiting for its next event


def _current(state: dict[str, dict[str, dict[str, Any]]]) -> Snapshot:
    return list(state[kube.JOB.kind].values()), list(state[kube.POD.kind].values())


def _apply(state: dict[str, dict[str, dict[str, Any]]], item: tuple[str, str, Any]) -> None:
    what, kind, payload = item
    if what == "error":
        raise payload
    if what == "sync":
        state[kind] = {_uid(o): o for o in payload}
        return
    event: kube.WatchEvent = payload
    objects = state.setdefault(kind, {})
    if event.type == "DELETED":
        objects.pop(_uid(event.object), None)
    elif event.type in ("ADDED", "MODIFIED"):
        objects[_uid(event.object)] = event.object


def _uid(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("uid") or metadata.get("name"))


def _follow(
    target: kube.Cluster,
    kind: kube.Kind,
    namespace: str,
    selector: str,
    events: queue.Queue[tuple[str, str, Any]],
    stop: threading.Event,
    streams: list[Any],
    timeout_s: int,
) -> None:
    """List, then watch from there, for as long as ``stop`` is not set (a thread's body)."""
    from urllib3.exceptions import HTTPError

    version = ""
    while not stop.is_set():
        try:
            if not version:
                items, version = target.list_objects(kind, namespace, selector)
                events.put(("sync", kind.kind, items))
            for event in target.watch(
                kind, namespace, selector, version, timeout_s=timeout_s, opened=streams.append
            ):
                if event.type == "ERROR":
                    version = _watch_error(event, kind, namespace)
                    break
                version = str((event.object.get("metadata") or {}).get("resourceVersion") or "")
                if event.type != "BOOKMARK":
                    events.put(("event", kind.kind, event))
        except KubetuneError as exc:
            if not stop.is_set():
                events.put(("error", kind.kind, exc))
            return
        except (HTTPError, OSError):
            # A dropped connection (or our own shutdown on stop): resume from `version`.
            if not stop.is_set():
                time.sleep(1.0)


def _watch_error(event: kube.WatchEvent, kind: kube.Kind, namespace: str) -> str:
    """The version to go on from after an ERROR event: none (list again) for 410 Gone."""
    if event.object.get("code") == 410:
        return ""
    message = event.object.get("message") or event.object.get("reason") or "error"
    raise ClusterError(f"watch of {kind.kind}s in {namespace}: {message}")


def managed_jobs(target: kube.Cluster, namespace: str) -> list[dict[str, Any]]:
    """Every Job kubetune made in ``namespace``."""
    jobs, _ = target.list_objects(kube.JOB, namespace, MANAGED_SELECTOR)
    return jobs
