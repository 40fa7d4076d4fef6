"""A fake Kubernetes API server over real HTTP (aiohttp), for tests and benchmarks.

It serves what kubetune asks of a cluster, answering as the real API server does:

- namespaced objects at their REST paths: GET, list with label and ``metadata.name`` field
  selectors and paging, watch streams (chunked JSON lines from a resourceVersion; ERROR 410
  for a version older than ``expired_below``), server-side apply (PATCH
  ``application/apply-patch+yaml``, with ``dryRun=All``), JSON merge patch (PATCH
  ``application/merge-patch+json``; 404 for a missing object), POST create (409 AlreadyExists),
  DELETE (``propagationPolicy`` from the DeleteOptions body);
- server-side apply's field ownership (see :mod:`ssa` below): each field manager owns the
  fields it applied (``managedFields``); applying a different value to a field another
  manager owns is a 409 Conflict unless ``force=true``, which takes the field over; fields a
  manager stops applying are removed;
- the validation of RBAC objects and service accounts that a real API server does
  (``pkg/apis/rbac/validation``; :func:`validate`): a Role's rules each need verbs, and
  resource rules apiGroups and resources; a namespaced rule may not name nonResourceURLs; a
  RoleBinding's roleRef is ``rbac.authorization.k8s.io`` Role or ClusterRole with a name,
  and cannot change; its subjects are ServiceAccount (apiGroup "", a DNS-1123 name), User
  or Group (apiGroup ``rbac.authorization.k8s.io``), each with a name;
- the validation of updates that a real API server does: a Job's pod template, selector,
  completions, completionMode, podFailurePolicy… are immutable (422 "field is immutable"),
  except the scheduling directives of a suspended Job that never started (Kubernetes ≥
  1.27); an ``immutable: true`` ConfigMap refuses data changes;
- the garbage collector: deleting an object with Background or Foreground propagation
  deletes every object whose ``ownerReferences`` name its uid (recursively), Orphan (the
  default for batch/v1 Jobs) strips those references; a Foreground deletion held with
  ``hold_deletion`` keeps the owner, with a deletionTimestamp, until ``finish_deletion``;
  ``expire`` deletes a Job as the TTL-after-finished controller does (Foreground);
- API discovery of the Kueue group (``GET /apis/kueue.x-k8s.io``) serving ``kueue_versions``;
- pod logs, whole or followed (a chunked stream that grows while the test writes to it);
- refusals as ``Status`` objects: RBAC 403 for a denied (verb, resource, namespace), quota
  403 when a namespace's Job quota is full, 404 for a missing namespace on create, 422 for
  a write to a path in ``refuse``, and a 404 for the Kueue API when ``kueue`` is off (or
  for a version it does not serve).

Tests run it on a thread (:func:`serve`) and change its state through the thread-safe
methods (``put``, ``append_log``…); benchmarks run it as a process:
``python tests/kubefake.py --port 8001 --latency-ms 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

#: plural → (API group, kind) of what the fake serves.
RESOURCES: dict[str, tuple[str, str]] = {
    "configmaps": ("", "ConfigMap"),
    "services": ("", "Service"),
    "pods": ("", "Pod"),
    "jobs": ("batch", "Job"),
    "networkpolicies": ("networking.k8s.io", "NetworkPolicy"),
    "localqueues": ("kueue.x-k8s.io", "LocalQueue"),
    "serviceaccounts": ("", "ServiceAccount"),
    "roles": ("rbac.authorization.k8s.io", "Role"),
    "rolebindings": ("rbac.authorization.k8s.io", "RoleBinding"),
}
RBAC_GROUP = "rbac.authorization.k8s.io"
KUEUE_GROUP = "kueue.x-k8s.io"
#: What Kueue ≥ 0.15 serves: v1beta2 (preferred) and v1beta1.
KUEUE_VERSIONS = ("v1beta2", "v1beta1")
#: A field's path in an object: ("spec", "template"), ("metadata", "labels", "app").
Path_ = tuple[str, ...]
#: Fields the server sets, never owned by a field manager.
_UNMANAGED = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
    ("metadata", "deletionTimestamp"),
    ("metadata", "finalizers"),
}
TOKEN = "t0ken-for-the-fake-api"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str
    body: str


@dataclass
class Watcher:
    key: tuple[str, str]  # (plural, namespace)
    selector: str
    queue: asyncio.Queue[dict[str, Any] | None]
    fields: str = ""

    def wants(self, plural: str, namespace: str, obj: dict[str, Any]) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return (
            self.key == (plural, namespace)
            and matches(self.selector, labels)
            and field_matches(self.fields, obj)
        )


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# --- server-side apply ----------------------------------------------------------------------
#
# A field is a leaf of the object: a scalar, a list (atomic here, where the real server merges
# lists such as containers by key) or an empty map. A manager owns the leaves it applied; an
# apply that sets a leaf another manager owns to another value conflicts (409) unless forced.


def leaves(obj: Any, prefix: Path_ = ()) -> dict[Path_, Any]:
    """Every field of ``obj`` with its value, status and server-set metadata left out."""
    if prefix == ("status",) or prefix in _UNMANAGED:
        return {}
    if isinstance(obj, dict) and obj:
        out: dict[Path_, Any] = {}
        for key, value in obj.items():
            out.update(leaves(value, (*prefix, str(key))))
        return out
    return {prefix: obj} if prefix else {}


def get_path(obj: Any, path: Path_) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def set_path(obj: dict[str, Any], path: Path_, value: Any) -> None:
    for key in path[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            child = obj[key] = {}
        obj = child
    obj[path[-1]] = value  # fresh from the request's parser: never shared


def drop_path(obj: dict[str, Any], path: Path_) -> None:
    """Remove a field, and the maps it leaves empty."""
    parents = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(parents) - 1, 0, -1):
        if not parents[depth]:
            parents[depth - 1].pop(path[depth - 1], None)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


UPDATE = "\tUpdate"


def manager_of(entry: str) -> str:
    """The field manager of an ownership entry (its applies, or its updates)."""
    return entry.removesuffix(UPDATE)


def dotted(path: Path_) -> str:
    return "".join(f".{key}" for key in path)


def fields_v1(paths: set[Path_]) -> dict[str, Any]:
    """The ``fieldsV1`` form of a set of paths: ``{"f:spec": {"f:suspend": {}}}``."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


_MISSING = object()


def immutable_job_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The Job spec fields an update may not change (the apiserver's ValidateJobSpecUpdate).

    Mutable: parallelism, activeDeadlineSeconds, backoffLimit, ttlSecondsAfterFinished,
    suspend, maxFailedIndexes… The pod template is immutable, except (Kubernetes ≥ 1.27) the
    scheduling directives of a Job that is suspended and never started: nodeSelector, node
    affinity, tolerations, schedulingGates and the template's labels and annotations.
    """
    before, after = old.get("spec") or {}, new.get("spec") or {}
    errors = []
    for name in (
        "selector",
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ):
        if before.get(name) != after.get(name):
            errors.append(
                f"spec.{name}: Invalid value: {json.dumps(after.get(name))}: field is immutable"
            )
    elastic = after.get("completionMode") == "Indexed" and after.get("completions") == after.get(
        "parallelism"
    )
    if before.get("completions") != after.get("completions") and not elastic:
        errors.append(
            f"spec.completions: Invalid value: {json.dumps(after.get('completions'))}: "
            "field is immutable"
        )
    template_before = json.loads(json.dumps(before.get("template") or {}))
    template_after = json.loads(json.dumps(after.get("template") or {}))
    never_started = before.get("suspend") and not (old.get("status") or {}).get("startTime")
    if never_started:
        for template in (template_before, template_after):
            metadata = template.setdefault("metadata", {})
            metadata.pop("labels", None)
            metadata.pop("annotations", None)
            pod = template.setdefault("spec", {})
            for key in ("nodeSelector", "tolerations", "schedulingGates"):
                pod.pop(key, None)
            (pod.get("affinity") or {}).pop("nodeAffinity", None)
            if pod.get("affinity") == {}:
                pod.pop("affinity")
    if template_before != template_after:
        errors.append("spec.template: Invalid value: core.PodTemplateSpec{…}: field is immutable")
    return errors


def immutable_config_map_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """A ConfigMap marked ``immutable: true`` keeps its data and its mark."""
    if not old.get("immutable"):
        return []
    forbidden = "Forbidden: field is immutable when `immutable` is set"
    errors = [f"immutable: {forbidden}"] if not new.get("immutable") else []
    for name in ("data", "binaryData"):
        if old.get(name) != new.get(name):
            errors.append(f"{name}: {forbidden}")
    return errors


def immutable_fields(plural: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a real API server refuses to change in ``old`` (Jobs, ConfigMaps, RoleBindings)."""
    if plural == "jobs":
        return immutable_job_fields(old, new)
    if plural == "configmaps":
        return immutable_config_map_fields(old, new)
    if plural == "rolebindings" and old.get("roleRef") != new.get("roleRef"):
        return [f"roleRef: Invalid value: {json.dumps(new.get('roleRef'))}: cannot change roleRef"]
    return []


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _unsupported(path: str, value: Any, supported: list[str]) -> str:
    listed = ", ".join(json.dumps(v) for v in supported)
    return f"{path}: Unsupported value: {json.dumps(value)}: supported values: {listed}"


def validate(plural: str, obj: dict[str, Any]) -> list[str]:
    """The errors a real API server finds in a new or updated object of these kinds (its
    ``ValidateRole``, ``ValidateRoleBinding``, ``ValidateServiceAccount``); [] for others."""
    errors: list[str] = []
    name = str((obj.get("metadata") or {}).get("name") or "")
    if plural == "serviceaccounts":
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            errors.append(
                f"metadata.name: Invalid value: {json.dumps(name)}: a lowercase RFC "
                "1123 subdomain must consist of lower case alphanumeric characters"
            )
        token = obj.get("automountServiceAccountToken")
        if token is not None and not isinstance(token, bool):
            errors.append("automountServiceAccountToken: Invalid value: must be a boolean")
    elif plural == "roles":
        if name in (".", "..") or "/" in name or "%" in name:
            errors.append(
                f"metadata.name: Invalid value: {json.dumps(name)}: may not contain "
                "'/' or '%', nor be '.' or '..'"
            )
        for i, rule in enumerate(obj.get("rules") or []):
            where = f"rules[{i}]"
            if not rule.get("verbs"):
                errors.append(
                    f"{where}.verbs: Required value: verbs must contain at least one value"
                )
            if rule.get("nonResourceURLs"):
                errors.append(
                    f"{where}.nonResourceURLs: Invalid value: "
                    f"{json.dumps(rule['nonResourceURLs'])}: namespaced rules cannot "
                    "apply to non-resource URLs"
                )
                continue
            if not rule.get("apiGroups"):
                errors.append(
                    f"{where}.apiGroups: Required value: resource rules must supply "
                    "at least one api group"
                )
            if not rule.get("resources"):
                errors.append(
                    f"{where}.resources: Required value: resource rules must supply "
                    "at least one resource"
                )
    elif plural == "rolebindings":
        ref = obj.get("roleRef") or {}
        if ref.get("apiGroup") != RBAC_GROUP:
            errors.append(_unsupported("roleRef.apiGroup", ref.get("apiGroup", ""), [RBAC_GROUP]))
        if ref.get("kind") not in ("Role", "ClusterRole"):
            errors.append(
                _unsupported("roleRef.kind", ref.get("kind", ""), ["Role", "ClusterRole"])
            )
        if not ref.get("name"):
            errors.append("roleRef.name: Required value")
        for i, subject in enumerate(obj.get("subjects") or []):
            where = f"subjects[{i}]"
            kind, group = subject.get("kind"), subject.get("apiGroup", "")
            subject_name = str(subject.get("name") or "")
            if not subject_name:
                errors.append(f"{where}.name: Required value")
            if kind == "ServiceAccount":
                if subject_name and not _DNS_SUBDOMAIN.match(subject_name):
                    errors.append(
                        f"{where}.name: Invalid value: {json.dumps(subject_name)}: "
                        "a lowercase RFC 1123 subdomain"
                    )
                if group:
                    errors.append(_unsupported(f"{where}.apiGroup", group, [""]))
            elif kind in ("User", "Group"):
                if group != RBAC_GROUP:
                    errors.append(_unsupported(f"{where}.apiGroup", group, [RBAC_GROUP]))
            else:
                errors.append(
                    _unsupported(f"{where}.kind", kind, ["ServiceAccount", "User", "Group"])
                )
    return errors


def invalid(plural: str, name: str, errors: list[str]) -> web.Response:
    """422 Invalid as the API server words it: ``Job.batch "x" is invalid: spec.template: …``
    (several errors in brackets, comma-separated)."""
    group, kind = RESOURCES[plural]
    qualified = f"{kind}.{group}" if group else kind
    detail = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
    return status(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {detail}',
        name=name,
        kind=kind,
        group=group,
    )


def field_matches(selector: str, obj: dict[str, Any]) -> bool:
    """Field selectors on ``metadata.name`` / ``metadata.namespace`` (``=`` or ``==``)."""
    metadata = obj.get("metadata") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _sep, value = term.replace("==", "=").partition("=")
        if str(metadata.get(key.removeprefix("metadata."), "")) != value:
            return False
    return True


def status(code: int, reason: str, message: str, **details: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return web.json_response(body, status=code)


@dataclass
class FakeKube:
    """The API server's state and its handlers. See the module docstring."""

    url: str = ""
    latency_s: float = 0.0
    user: str = "alice"
    namespaces: set[str] = field(default_factory=lambda: {"default", "team-a", "ml", "other"})
    requests: list[Request] = field(default_factory=list)
    #: (plural, namespace, name) → object
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: Paths answered 422 (an object the server rejects).
    refuse: set[str] = field(default_factory=set)
    #: (verb, resource, namespace) that RBAC denies; resource as RBAC names it: jobs.batch.
    denied: set[tuple[str, str, str]] = field(default_factory=set)
    #: namespace → most Jobs its ResourceQuota "compute-quota" admits.
    job_quota: dict[str, int] = field(default_factory=dict)
    kueue: bool = True
    #: The kueue.x-k8s.io versions served, the preferred one first.
    kueue_versions: list[str] = field(default_factory=lambda: list(KUEUE_VERSIONS))
    #: (plural, namespace, name) → manager → the field paths it owns (``ssa``). As in
    #: ``managedFields``, a manager's applies and its updates are separate entries: the
    #: updates as ``"<manager>\tUpdate"``.
    owners: dict[tuple[str, str, str], dict[str, set[Path_]]] = field(default_factory=dict)
    #: Objects whose Foreground deletion waits (deletionTimestamp set) for ``finish_deletion``.
    held: set[tuple[str, str, str]] = field(default_factory=set)
    #: Watches from a resourceVersion below this get ERROR 410 Gone.
    expired_below: int = 0
    #: (namespace, pod) → log chunks; a pod in ``open_logs`` is still writing.
    log_chunks: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    open_logs: set[tuple[str, str]] = field(default_factory=set)
    #: path → how many more times it answers 429 Too Many Requests (with Retry-After: 0).
    throttle: dict[str, int] = field(default_factory=dict)
    #: Most requests the server was handling at once.
    max_in_flight: int = 0
    in_flight: int = 0
    version: int = 0
    history: list[tuple[int, str, str, str, dict[str, Any]]] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    _uids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _log_changed: asyncio.Condition | None = None

    # --- thread-safe controls for tests ---------------------------------------------------

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and wait for it (state is the loop's)."""
        assert self.loop is not None

        async def call() -> Any:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=10)

    def put(self, obj: dict[str, Any], manager: str | None = None) -> dict[str, Any]:
        """Create or replace an object (as a controller would), with an ADDED/MODIFIED event.

        With ``manager``, the fields it changes become that manager's (an Update), as when
        Kueue's controller sets ``spec.suspend: false`` to admit a Job.
        """
        return dict(self.on_loop(self._put, obj, manager))

    def remove(self, plural: str, namespace: str, name: str) -> None:
        """Delete an object without the garbage collector (nothing it owns goes with it)."""
        self.on_loop(self._delete, plural, namespace, name)

    def expire(self, namespace: str, name: str) -> None:
        """Delete a finished Job as the TTL-after-finished controller does: Foreground
        propagation, so the garbage collector deletes what it owns."""
        self.on_loop(self._delete_tree, "jobs", namespace, name, "Foreground")

    def hold_deletion(self, plural: str, namespace: str, name: str) -> None:
        """A later Foreground deletion of this object waits for :meth:`finish_deletion` (as
        a Job waits for its pods to terminate)."""
        self.held.add((plural, namespace, name))

    def finish_deletion(self, plural: str, namespace: str, name: str) -> None:
        self.on_loop(self._finish_deletion, plural, namespace, name)

    def managers(self, plural: str, namespace: str, name: str) -> dict[str, set[str]]:
        """manager → the fields it owns, dotted: ``{"kubetune": {".spec.suspend", …}}``."""
        out: dict[str, set[str]] = {}
        for entry, paths in self.owners.get((plural, namespace, name), {}).items():
            out.setdefault(manager_of(entry), set()).update(dotted(p) for p in paths)
        return out

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, namespace, name))

    def append_log(self, namespace: str, pod: str, text: str, *, done: bool = False) -> None:
        self.on_loop(self._append_log, namespace, pod, text.encode(), done)

    def reset(self) -> None:
        """Back to an empty cluster with default settings."""
        self.on_loop(self._reset)

    def _reset(self) -> None:
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)
        self.requests.clear()
        self.objects.clear()
        self.refuse.clear()
        self.denied.clear()
        self.job_quota.clear()
        self.throttle.clear()
        self.max_in_flight = 0
        self._uids = itertools.count(1)
        self.version = 0
        self.latency_s = 0.0
        self.kueue = True
        self.kueue_versions = list(KUEUE_VERSIONS)
        self.owners.clear()
        self.held.clear()
        self.expired_below = 0
        self.log_chunks.clear()
        self.open_logs.clear()
        self.history.clear()
        self.watchers.clear()
        self.namespaces = {"default", "team-a", "ml", "other"}

    # --- state ----------------------------------------------------------------------------

    def _put(self, obj: dict[str, Any], manager: str | None) -> dict[str, Any]:
        if manager:
            plural = next(p for p, (_g, k) in RESOURCES.items() if k == obj["kind"])
            metadata = obj.setdefault("metadata", {})
            key = (plural, metadata.setdefault("namespace", "default"), metadata["name"])
            self._own(key, manager, self.objects.get(key) or {}, obj)
        return self._store(obj)

    def _own(
        self, key: tuple[str, str, str], manager: str, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        """An Update by ``manager``: the fields it changed become its own, and no one else's."""
        before, after = leaves(old), leaves(new)
        changed = {p for p in after if before.get(p, _MISSING) != after[p]}
        owned = self.owners.setdefault(key, {})
        for paths in owned.values():
            paths -= changed
        owned.setdefault(f"{manager}{UPDATE}", set()).update(changed)

    def _store(self, obj: dict[str, Any], event: str | None = None) -> dict[str, Any]:
        plural = next(p for p, (_g, k) in RESOURCES.items() if k == obj["kind"])
        metadata = obj.setdefault("metadata", {})
        namespace = metadata.setdefault("namespace", "default")
        key = (plural, namespace, metadata["name"])
        old = self.objects.get(key)
        metadata.setdefault("uid", (old or {}).get("metadata", {}).get("uid") or self._uid())
        metadata.setdefault(
            "creationTimestamp",
            (old or {}).get("metadata", {}).get("creationTimestamp") or "2026-01-02T03:04:05Z",
        )
        owned = {m: paths for m, paths in self.owners.get(key, {}).items() if paths}
        if owned:
            metadata["managedFields"] = [
                {
                    "manager": manager_of(entry),
                    "operation": "Update" if entry.endswith(UPDATE) else "Apply",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(paths),
                }
                for entry, paths in sorted(owned.items())
            ]
        self.version += 1
        metadata["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        self._notify(event or ("MODIFIED" if old else "ADDED"), plural, namespace, obj)
        return obj

    def _uid(self) -> str:
        return f"uid-{next(self._uids)}"

    def _delete(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((plural, namespace, name), None)
        self.owners.pop((plural, namespace, name), None)
        self.held.discard((plural, namespace, name))
        if obj is not None:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._notify("DELETED", plural, namespace, obj)
        return obj

    def _delete_tree(
        self, plural: str, namespace: str, name: str, propagation: str
    ) -> dict[str, Any] | None:
        """Delete an object as the API server and garbage collector do: Background and
        Foreground delete its dependents (objects whose ownerReferences name its uid) and
        theirs; Orphan removes the reference from them. A held Foreground deletion keeps the
        owner, marked deleted, until :meth:`finish_deletion`."""
        key = (plural, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            return None
        uid = obj["metadata"]["uid"]
        for (p, ns, n), dependent in list(self.objects.items()):
            refs = dependent["metadata"].get("ownerReferences") or []
            if ns != namespace or not any(r.get("uid") == uid for r in refs):
                continue
            if propagation == "Orphan":
                kept = [r for r in refs if r.get("uid") != uid]
                dependent["metadata"]["ownerReferences"] = kept
                if not kept:
                    del dependent["metadata"]["ownerReferences"]
                self._store(dependent)
            else:
                self._delete_tree(p, ns, n, "Background")
        if propagation == "Foreground" and key in self.held:
            obj["metadata"]["deletionTimestamp"] = "2026-01-02T04:00:00Z"
            obj["metadata"]["finalizers"] = ["foregroundDeletion"]
            return self._store(obj)
        return self._delete(plural, namespace, name)

    def _finish_deletion(self, plural: str, namespace: str, name: str) -> None:
        self.held.discard((plural, namespace, name))
        if (plural, namespace, name) in self.objects:
            self._delete(plural, namespace, name)

    def _notify(self, kind: str, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        snapshot = json.loads(json.dumps(obj))
        self.history.append((self.version, kind, plural, namespace, snapshot))
        for watcher in self.watchers:
            if watcher.wants(plural, namespace, snapshot):
                watcher.queue.put_nowait({"type": kind, "object": snapshot})

    async def _append_log(self, namespace: str, pod: str, data: bytes, done: bool) -> None:
        self.log_chunks.setdefault((namespace, pod), []).append(data)
        if done:
            self.open_logs.discard((namespace, pod))
        else:
            self.open_logs.add((namespace, pod))
        assert self._log_changed is not None
        async with self._log_changed:
            self._log_changed.notify_all()

    # --- HTTP -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        self.requests.append(
            Request(
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Content-Type", ""),
                request.headers.get("Authorization", ""),
                body,
            )
        )
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.throttle.get(request.path):
            self.throttle[request.path] -= 1
            return web.Response(
                status=429,
                text="Too many requests, please try again later.",
                headers={"Retry-After": "0"},
            )
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["apis", KUEUE_GROUP]:
            served = self.kueue_versions if self.kueue else []
            if not served or (len(parts) > 2 and parts[2] not in served):
                return status(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 2:
                return web.json_response(self._api_group(KUEUE_GROUP, served))
        # /api/v1/namespaces/NS/PLURAL[/NAME[/log]]  or  /apis/G/V/namespaces/NS/PLURAL[/NAME]
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in RESOURCES:
            return web.Response(status=404, text="404 page not found")
        namespace, plural = rest[1], rest[2]
        name = rest[3] if len(rest) > 3 else ""
        if len(rest) == 5 and rest[4] == "log" and plural == "pods":
            return await self._log(request, namespace, name)
        refusal = self._rbac(self._verb(request, name), plural, namespace, name)
        if refusal is not None:
            return refusal
        if request.path in self.refuse and request.method != "GET":
            return self._invalid(plural, name)
        if request.method == "GET" and name:
            return self._get(plural, namespace, name)
        if request.method == "GET":
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, plural, namespace)
            return self._list(request, plural, namespace)
        if request.method == "PATCH":
            return self._apply(request, body, plural, namespace, name)
        if request.method == "POST":
            return self._create(request, body, plural, namespace)
        if request.method == "DELETE":
            return self._delete_request(body, plural, namespace, name)
        return status(405, "MethodNotAllowed", f"{request.method} is not supported")

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> dict[str, Any]:
        """API discovery's APIGroup: every served version, the preferred one first."""
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": listed,
            "preferredVersion": listed[0],
        }

    @staticmethod
    def _verb(request: web.Request, name: str) -> str:
        if request.method == "GET":
            return "get" if name else ("watch" if request.query.get("watch") else "list")
        return {"PATCH": "patch", "POST": "create", "DELETE": "delete"}.get(request.method, "?")

    def _rbac(self, verb: str, plural: str, namespace: str, name: str) -> web.Response | None:
        """RBAC's 403 if ``denied`` holds (verb, resource, namespace); ``plural`` may name a
        subresource: ``pods/log``."""
        base = plural.split("/")[0]
        group = RESOURCES[base][0]
        resource = f"{plural}.{group}" if group else plural
        if (verb, resource, namespace) not in self.denied:
            return None
        base_resource = f"{base}.{group}" if group else base
        subject = f'{base_resource} "{name}"' if name else base_resource
        return status(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{plural}" '
            f'in API group "{group}" in the namespace "{namespace}"',
            name=name,
            group=group,
            kind=base,
        )

    @staticmethod
    def _invalid(plural: str, name: str) -> web.Response:
        group, kind = RESOURCES[plural]
        return status(
            422,
            "Invalid",
            f'{kind}.{group or "core"} "{name}" is invalid: spec.template: Invalid value:\n'
            "field is immutable",
            name=name,
            kind=kind,
        )

    def _get(self, plural: str, namespace: str, name: str) -> web.Response:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return self._not_found(plural, name)
        return web.json_response(obj)

    def _not_found(self, plural: str, name: str) -> web.Response:
        group, _kind = RESOURCES[plural]
        resource = f"{plural}.{group}" if group else plural
        return status(
            404, "NotFound", f'{resource} "{name}" not found', name=name, group=group, kind=plural
        )

    def _list(self, request: web.Request, plural: str, namespace: str) -> web.Response:
        selector = request.query.get("labelSelector", "")
        fields = request.query.get("fieldSelector", "")
        items = [
            obj
            for (p, ns, _n), obj in sorted(self.objects.items())
            if p == plural
            and ns == namespace
            and matches(selector, obj["metadata"].get("labels") or {})
            and field_matches(fields, obj)
        ]
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        page = items[start : start + limit]
        more = start + limit < len(items)
        kind = RESOURCES[plural][1]
        return web.json_response(
            {
                "kind": f"{kind}List",
                "metadata": {
                    "resourceVersion": str(self.version),
                    **({"continue": str(start + limit)} if more else {}),
                },
                "items": page,
            }
        )

    async def _watch(self, request: web.Request, plural: str, namespace: str) -> web.StreamResponse:
        selector = request.query.get("labelSelector", "")
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 300)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if since and since < self.expired_below:
            expired = {
                "kind": "Status",
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": f"too old resource version: {since} ({self.expired_below})",
            }
            await response.write(json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n")
            return response
        watcher = Watcher(
            (plural, namespace), selector, asyncio.Queue(), request.query.get("fieldSelector", "")
        )
        for version, kind, p, ns, obj in self.history:
            if version > since and watcher.wants(p, ns, obj):
                watcher.queue.put_nowait({"type": kind, "object": obj})
        self.watchers.append(watcher)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), left)
                except TimeoutError:
                    break
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if watcher in self.watchers:
                self.watchers.remove(watcher)
        return response

    def _admit(self, plural: str, namespace: str, name: str, creating: bool) -> web.Response | None:
        """The refusals of a write: missing namespace, full quota."""
        if namespace not in self.namespaces:
            return status(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )
        if plural == "jobs" and creating and namespace in self.job_quota:
            used = sum(1 for (p, ns, _n) in self.objects if p == "jobs" and ns == namespace)
            limit = self.job_quota[namespace]
            if used >= limit:
                return status(
                    403,
                    "Forbidden",
                    f'jobs.batch "{name}" is forbidden: exceeded quota: compute-quota, requested: '
                    f"count/jobs.batch=1, used: count/jobs.batch={used}, limited: "
                    f"count/jobs.batch={limit}",
                    name=name,
                    group="batch",
                    kind="jobs",
                )
        return None

    def _merge_patch(
        self, request: web.Request, body: str, plural: str, namespace: str, name: str
    ) -> web.Response:
        """A JSON merge patch (RFC 7386): an Update by ``fieldManager``; 404 for a missing
        object (a patch never creates one)."""
        old = self.objects.get((plural, namespace, name))
        if old is None:
            return self._not_found(plural, name)
        merged = merge(json.loads(json.dumps(old)), json.loads(body))
        errors = validate(plural, merged) + immutable_fields(plural, old, merged)
        if errors:
            return invalid(plural, name, errors)
        if request.query.get("dryRun") == "All":
            return web.json_response(merged)
        manager = request.query.get("fieldManager", "unknown")
        self._own((plural, namespace, name), manager, old, merged)
        return web.json_response(self._store(merged))

    def _apply(
        self, request: web.Request, body: str, plural: str, namespace: str, name: str
    ) -> web.Response:
        if request.content_type == "application/merge-patch+json":
            return self._merge_patch(request, body, plural, namespace, name)
        if request.content_type != "application/apply-patch+yaml":
            return status(415, "UnsupportedMediaType", f"{request.content_type} is not served")
        if "fieldManager" not in request.query:
            return status(422, "Invalid", "fieldManager is required for apply patch")
        old = self.objects.get((plural, namespace, name))
        # Server-side apply of a new object needs create as well as patch.
        refusal = self._rbac("create", plural, namespace, name) if old is None else None
        refusal = refusal or self._admit(plural, namespace, name, creating=old is None)
        if refusal is not None:
            return refusal
        applied = yaml.load(body, Loader=_Loader)  # YAML, or JSON (which is YAML)
        manager = request.query["fieldManager"]
        force = request.query.get("force") in ("true", "1")
        key = (plural, namespace, name)
        owned = {m: set(paths) for m, paths in self.owners.get(key, {}).items()}
        live = json.loads(json.dumps(old)) if old is not None else {}
        mine = leaves(applied)
        conflicts = sorted(
            (other, path)
            for path, value in mine.items()
            if get_path(live, path) is not _MISSING and get_path(live, path) != value
            for other, paths in owned.items()
            if other != manager and path in paths
        )
        if conflicts and not force:
            return self._conflict(conflicts)
        merged = live
        # Fields this manager applied before and no longer does go, unless another owns them.
        for path in owned.get(manager, set()) - set(mine):
            if not any(path in paths for m, paths in owned.items() if m != manager):
                drop_path(merged, path)
        for path, value in mine.items():
            set_path(merged, path, value)
        for other, path in conflicts:
            owned[other].discard(path)
        owned[manager] = set(mine)
        merged["apiVersion"], merged["kind"] = applied.get("apiVersion"), applied.get("kind")
        merged.setdefault("metadata", {}).update(name=name, namespace=namespace)
        errors = validate(plural, merged)
        if old is not None:
            errors += immutable_fields(plural, old, merged)
        if errors:
            return invalid(plural, name, errors)
        if request.query.get("dryRun") == "All":
            merged["metadata"].setdefault("uid", "dry-run")
            return web.json_response(merged)
        self.owners[key] = owned
        return web.json_response(self._store(merged), status=200 if old else 201)

    def _conflict(self, conflicts: list[tuple[str, Path_]]) -> web.Response:
        """409 as server-side apply words it: ``Apply failed with 1 conflict: conflict with
        "kueue-controller-manager": .spec.suspend``."""
        n = len(conflicts)
        if n == 1:
            ((entry, path),) = conflicts
            detail = f'conflict with "{manager_of(entry)}": {dotted(path)}'
        else:
            detail = "conflicts with " + ", ".join(
                f'"{manager_of(m)}": {dotted(p)}' for m, p in conflicts
            )
        return status(
            409, "Conflict", f"Apply failed with {n} conflict{'s' if n > 1 else ''}: {detail}"
        )

    def _create(self, request: web.Request, body: str, plural: str, namespace: str) -> web.Response:
        obj = json.loads(body)
        name = obj["metadata"]["name"]
        refusal = self._admit(plural, namespace, name, creating=True)
        if refusal is not None:
            return refusal
        if (plural, namespace, name) in self.objects:
            group = RESOURCES[plural][0]
            resource = f"{plural}.{group}" if group else plural
            return status(
                409,
                "AlreadyExists",
                f'{resource} "{name}" already exists',
                name=name,
                group=group,
                kind=plural,
            )
        obj["metadata"]["namespace"] = namespace
        errors = validate(plural, obj)
        if errors:
            return invalid(plural, name, errors)
        if request.query.get("dryRun") == "All":
            return web.json_response(obj, status=201)
        self._own((plural, namespace, name), request.query.get("fieldManager", "unknown"), {}, obj)
        return web.json_response(self._store(obj), status=201)

    def _delete_request(self, body: str, plural: str, namespace: str, name: str) -> web.Response:
        options = json.loads(body) if body else {}
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return self._not_found(plural, name)
        uid = ((options.get("preconditions") or {}).get("uid")) or obj["metadata"]["uid"]
        if uid != obj["metadata"]["uid"]:
            return status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {plural} "{name}": Precondition failed: '
                f"UID in precondition: {uid}, UID in object meta: {obj['metadata']['uid']}",
            )
        # batch/v1 Jobs orphan their dependents unless told otherwise (kubectl says Background).
        default = "Orphan" if plural == "jobs" else "Background"
        gone = self._delete_tree(
            plural, namespace, name, options.get("propagationPolicy") or default
        )
        return web.json_response(gone)

    async def _log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        refusal = self._rbac("get", "pods/log", namespace, name)
        if refusal is not None:
            return refusal
        pod = self.objects.get(("pods", namespace, name))
        if pod is None:
            return self._not_found("pods", name)
        container = request.query.get("container", "")
        waiting = _waiting_reason(pod, container)
        if waiting:
            return status(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {waiting}',
            )
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        key = (namespace, name)
        sent = 0
        follow = request.query.get("follow") == "true"
        assert self._log_changed is not None
        while True:
            chunks = self.log_chunks.get(key, [])
            for chunk in chunks[sent:]:
                await response.write(chunk)
            sent = len(chunks)
            if not follow or key not in self.open_logs:
                break
            async with self._log_changed:
                await self._log_changed.wait()
        return response


def _waiting_reason(pod: dict[str, Any], container: str) -> str:
    for item in (pod.get("status") or {}).get("containerStatuses") or []:
        if item.get("name") == container:
            return str(((item.get("state") or {}).get("waiting") or {}).get("reason") or "")
    return ""


def write_kubeconfig(
    path: Path,
    server: str,
    namespace: str | None = "team-a",
    *,
    token: str = TOKEN,
    others: dict[str, tuple[str, str | None, str]] | None = None,
) -> Path:
    """A kubeconfig whose current context "fake" reaches ``server`` with ``token``;
    ``others`` adds contexts: name → (server, namespace, token)."""
    contexts = {"fake": (server, namespace, token), **(others or {})}
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s}} for n, (s, _ns, _t) in contexts.items()],
        "users": [{"name": n, "user": {"token": t}} for n, (_s, _ns, t) in contexts.items()],
        "contexts": [
            {
                "name": n,
                "context": {"cluster": n, "user": n, **({"namespace": ns} if ns else {})},
            }
            for n, (_s, ns, _t) in contexts.items()
        ],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def application(fake: FakeKube) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    return app


@contextmanager
def serve(fake: FakeKube | None = None, port: int = 0) -> Iterator[FakeKube]:
    """Run a fake API server on a thread of its own; yields it with ``url`` set."""
    fake = fake or FakeKube()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(application(fake), shutdown_timeout=0.1)

    async def start() -> int:
        fake.loop = asyncio.get_running_loop()
        fake._log_changed = asyncio.Condition()
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server) and server.sockets
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    bound = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, name="kubefake", daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{bound}"
    try:
        yield fake
    finally:
        fake.on_loop(fake._reset)  # ends open watch streams
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@dataclass
class Ran:
    """What ``kubetune …`` did, run in-process: exit code, output, one-line errors."""

    code: int
    stdout: str
    stderr: str
    errors: list[str]


def kubetune(*args: str) -> Ran:
    """Run the CLI in-process (typer's CliRunner); a kubetune error becomes the exit code and
    the error lines that ``kubetune.cli.main`` would print."""
    from typer.testing import CliRunner

    from kubetune import cli
    from kubetune.errors import KubetuneError

    result = CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "300"})
    error = result.exception
    if isinstance(error, KubetuneError):
        return Ran(error.exit_code, result.stdout, result.stderr, error.lines())
    if error is not None and not isinstance(error, SystemExit):
        raise error
    return Ran(result.exit_code, result.stdout, result.stderr, [])


def table(text: str) -> dict[str, list[str]]:
    """The body rows of a rich table printed by the CLI: first cell → the other cells."""
    out = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            out[cells[0]] = cells[1:]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=10.0,
        help="Added to every request: a stand-in for a real API server's round trip.",
    )
    parser.add_argument("--namespace", action="append", default=[], help="Namespaces that exist.")
    args = parser.parse_args()
    fake = FakeKube(latency_s=args.latency_ms / 1000)
    fake.namespaces |= set(args.namespace)

    async def setup() -> web.Application:
        fake.loop = asyncio.get_running_loop()
        fake._log_changed = asyncio.Condition()
        return application(fake)

    web.run_app(setup(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
