"""Cancelling runs: their Jobs first (each trainer gets SIGTERM and stores a checkpoint), then
the ConfigMaps, Services and NetworkPolicies they used."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubetune.kube import client as kube

#: Deletion order: stop the trainers first, then what they used.
CANCEL_KINDS = (kube.JOB, kube.CONFIG_MAP, kube.SERVICE, kube.NETWORK_POLICY)
WORKERS = 16


@dataclass(frozen=True)
class Deleted:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def cancel(target: kube.Cluster, namespace: str, selector: str) -> list[Deleted]:
    """Delete the matching Jobs (their pods go with them, in the background: each trainer
    gets SIGTERM and stores a checkpoint) and then their ConfigMaps, Services and
    NetworkPolicies. Objects already gone are skipped; what was deleted is returned."""
    deleted: list[Deleted] = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for kind in CANCEL_KINDS:
            objects, _ = target.list_objects(kind, namespace, selector)
            names = sorted(str((o.get("metadata") or {}).get("name")) for o in objects)
            propagation = "Background" if kind is kube.JOB else None
            gone = pool.map(
                lambda name, k=kind, p=propagation: target.delete(k, namespace, name, p), names
            )
            deleted += [
                Deleted(kind.kind, namespace, n) for n, ok in zip(names, gone, strict=True) if ok
            ]
    return deleted
