"""Cancelling runs: a driven sweep's driver first (so it launches nothing more), then the
Jobs (each trainer gets SIGTERM and stores a checkpoint), then the ConfigMaps, Services and
NetworkPolicies they used, and the driver's ServiceAccount, Role and RoleBinding."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubetune.kube import client as kube
from kubetune.kube.names import COMPONENT_LABEL, DRIVER_COMPONENT

#: Deletion order: stop the trainers first, then what they used; the driver's rights last.
CANCEL_KINDS = (
    kube.JOB,
    kube.CONFIG_MAP,
    kube.SERVICE,
    kube.NETWORK_POLICY,
    kube.ROLE_BINDING,
    kube.ROLE,
    kube.SERVICE_ACCOUNT,
)
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
    NetworkPolicies. A driven sweep's driver Job goes first, alone, so that it launches no
    trial meanwhile (its trials would go with it anyway: they are its dependents); its
    ServiceAccount, Role and RoleBinding go last. Objects already gone are skipped; what
    was deleted is returned."""
    deleted: list[Deleted] = []
    drivers, _ = target.list_objects(
        kube.JOB, namespace, f"{selector},{COMPONENT_LABEL}={DRIVER_COMPONENT}"
    )
    for job in drivers:
        name = str((job.get("metadata") or {}).get("name"))
        if target.delete(kube.JOB, namespace, name, "Background"):
            deleted.append(Deleted(kube.JOB.kind, namespace, name))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for kind in CANCEL_KINDS:
            objects, _ = target.list_objects(kind, namespace, selector)
            names = sorted(str((o.get("metadata") or {}).get("name")) for o in objects)
            if kind is kube.JOB:
                names = [n for n in names if Deleted(kind.kind, namespace, n) not in deleted]
            propagation = "Background" if kind is kube.JOB else None
            gone = pool.map(
                lambda name, k=kind, p=propagation: target.delete(k, namespace, name, p), names
            )
            deleted += [
                Deleted(kind.kind, namespace, n) for n, ok in zip(names, gone, strict=True) if ok
            ]
    return deleted
