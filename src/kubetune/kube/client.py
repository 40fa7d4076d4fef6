"""The Kubernetes API, through the ``kubernetes`` client: server-side apply, get, list, watch,
logs and delete of the objects the kubetune-job chart renders.

Requests go through the client's ``ApiClient`` (its kubeconfig handling: tokens, client
certificates, exec plugins, TLS) to fixed resource paths, so there are no discovery round
trips, and objects stay plain dicts: kubetune reads a few fields and writes manifests it
already has as YAML. One :class:`Cluster` is safe to share between threads; its connection
pool holds :data:`POOL` connections, enough for ``kubetune submit``'s workers.

:func:`apply` sends each document as a server-side apply patch (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=kubetune``, ``force=true``), so applying the
same manifests twice changes nothing, and kubetune owns the fields it writes, as
``kubectl apply --server-side --force-conflicts`` would. Forcing takes over fields that
another manager owns (Kueue's controller owns an admitted Job's ``spec.suspend``), so kubetune
never applies over a Job that exists (:mod:`kubetune.kube.submit` looks first), and applies a new
Job with ``force=False``: a Job that appeared meanwhile is then a 409, not a take-over.

Where to connect comes from the kubeconfig (``$KUBECONFIG``, else ``~/.kube/config``) and its
current context, or the one ``--context`` names, as kubectl does. Refusals become the
one-line errors of :mod:`kubetune.kube.errors`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.errors import ConfigError
from kubetune.kube.errors import (
    Action,
    ClusterError,
    NotFoundError,
    UnreachableError,
    explain,
    parse_status,
)

__all__ = ["Action", "Applied", "Cluster", "ClusterError", "Kind", "apply", "connect"]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "kubetune"
#: Seconds to wait for the API server to answer (connect, read).
TIMEOUT = (10, 60)
#: Connections kept per API server: at least as many as threads that share a Cluster.
POOL = 32
#: Objects per page of a list.
PAGE = 500
#: Tries of a request the API server answered 429 (API Priority and Fairness) or 5xx.
ATTEMPTS = 5
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Kind:
    """A kind of namespaced object and where the API serves it."""

    kind: str
    api_version: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def resource(self) -> str:
        """RBAC's name of the resource: ``jobs.batch``, ``configmaps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str, name: str | None = None) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        collection = f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{collection}/{name}" if name else collection


NETWORK_POLICY = Kind("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies")
CONFIG_MAP = Kind("ConfigMap", "v1", "configmaps")
SERVICE = Kind("Service", "v1", "services")
JOB = Kind("Job", "batch/v1", "jobs")
POD = Kind("Pod", "v1", "pods")
#: A sweep driver's identity and its rights over its trials (the chart's driver-rbac.yaml).
SERVICE_ACCOUNT = Kind("ServiceAccount", "v1", "serviceaccounts")
ROLE = Kind("Role", "rbac.authorization.k8s.io/v1", "roles")
ROLE_BINDING = Kind("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings")
KUEUE_GROUP = "kueue.x-k8s.io"
#: Kueue's API versions kubetune knows, newest first (v1beta2 since Kueue 0.15; v1beta1 is
#: being withdrawn).
KUEUE_VERSIONS = ("v1beta2", "v1beta1")


def local_queue(version: str) -> Kind:
    """Kueue's LocalQueue as ``kueue.x-k8s.io/<version>`` serves it."""
    return Kind("LocalQueue", f"{KUEUE_GROUP}/{version}", "localqueues")


#: The kinds the kubetune-job chart renders, by (apiVersion, kind).
APPLIED_KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (NETWORK_POLICY, CONFIG_MAP, SERVICE, JOB, SERVICE_ACCOUNT, ROLE, ROLE_BINDING)
}


@dataclass(frozen=True)
class Applied:
    """One object as the API server stored it."""

    kind: str
    name: str
    namespace: str
    uid: str | None

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class WatchEvent:
    """One line of a watch stream: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""

    type: str
    object: dict[str, Any]


@dataclass(frozen=True)
class Cluster:
    """A connection to the API server of one kubeconfig context."""

    client: Any  # kubernetes.client.ApiClient
    namespace: str | None  # the context's namespace, if it names one
    context: str | None = None

    @property
    def host(self) -> str:
        host: str = self.client.configuration.host
        return host

    def namespace_for(self, namespace: str | None) -> str:
        """``-n``, else the context's namespace, else ``default``: as kubectl chooses."""
        return namespace or self.namespace or "default"

    # --- requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        action: Action,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        timeout: tuple[float, float | None] = TIMEOUT,
    ) -> dict[str, Any]:
        """One request; the JSON object it answered (``{}`` for none)."""
        response = self.open(
            method, path, action, query=query, body=body, content_type=content_type, timeout=timeout
        )
        data = response.data
        try:
            parsed = json.loads(data) if data else {}
        except json.JSONDecodeError:
            parsed = {}
        return parsed if isinstance(parsed, dict) else {}

    def open(
        self,
        method: str,
        path: str,
        action: Action,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        timeout: tuple[float, float | None] = TIMEOUT,
    ) -> Any:
        """One request; urllib3's response with its body not yet read (for streams).

        429 and 5xx answers are retried (honouring Retry-After), except for POST, which may
        have been carried out. Any other refusal raises :func:`kube_errors.explain`'s error.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        api = self.client
        for attempt in range(1, ATTEMPTS + 1):
            headers = {"Accept": "application/json"}
            if content_type:
                headers["Content-Type"] = content_type
            request = api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            try:
                response = api.call_api(*request, _request_timeout=timeout)
            except (HTTPError, ApiException) as exc:
                raise UnreachableError(
                    f"{action.what}: cannot reach the Kubernetes API at {self.host}: "
                    f"{_reason(exc)}; is the cluster up, and is this the right context "
                    "(--context)?"
                ) from exc
            if 200 <= response.status < 300:
                return response.response
            data = response.read()
            if response.status in _RETRY_STATUS and method != "POST" and attempt < ATTEMPTS:
                time.sleep(_backoff(response.getheader("Retry-After"), attempt))
                continue
            raise explain(parse_status(response.status, response.reason, data), action)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # --- objects --------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if there is none of that name."""
        action = Action("get", kind.resource, namespace, f"{kind.kind} {namespace}/{name}")
        try:
            return self.request("GET", kind.path(namespace, name), action)
        except NotFoundError:
            return None

    def api_group(self, group: str) -> dict[str, Any] | None:
        """API discovery of one group (``GET /apis/<group>``): its ``APIGroup``, with the
        served ``versions`` and the ``preferredVersion``; None where the group is not served.
        Discovery is open to every authenticated user (the ``system:discovery`` role)."""
        action = Action("get", group, None, f"the {group} API")
        try:
            return self.request("GET", f"/apis/{group}", action)
        except NotFoundError:
            return None

    def list_objects(
        self, kind: Kind, namespace: str, selector: str = "", *, fields: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object matching the label selector (and field selector, such as
        ``metadata.name=x``), and the list's resourceVersion (where a watch starts). Pages of
        :data:`PAGE` objects."""
        action = Action("list", kind.resource, namespace, f"{kind.kind}s in {namespace}")
        items: list[dict[str, Any]] = []
        version = ""
        token = ""
        while True:
            query = [("limit", str(PAGE))]
            if selector:
                query.append(("labelSelector", selector))
            if fields:
                query.append(("fieldSelector", fields))
            if token:
                query.append(("continue", token))
            page = self.request("GET", kind.path(namespace), action, query=query)
            metadata = page.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            items += [i for i in page.get("items") or [] if isinstance(i, dict)]
            token = str(metadata.get("continue") or "")
            if not token:
                return items, version

    def apply(
        self,
        doc: Mapping[str, Any],
        namespace: str,
        *,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """Server-side apply one manifest of a kind in :data:`APPLIED_KINDS`."""
        kind = kind_of(doc)
        # JSON is YAML: the server reads the manifest exactly as written.
        return self.apply_text(
            kind,
            doc["metadata"]["name"],
            namespace,
            json.dumps(doc),
            dry_run=dry_run,
            field_manager=field_manager,
        )

    def apply_text(
        self,
        kind: Kind,
        name: str,
        namespace: str,
        manifest: str,
        *,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
        force: bool = True,
    ) -> dict[str, Any]:
        """Server-side apply one manifest given as YAML (or JSON) text, sent as it is.

        Without ``force`` a field that another field manager owns and this manifest sets to
        another value is a 409 Conflict (raised as ``RejectedError``), not taken over.
        """
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        action = Action("patch", kind.resource, namespace, f"{kind.kind} {namespace}/{name}")
        return self.request(
            "PATCH",
            kind.path(namespace, name),
            action,
            query=query,
            body=manifest,
            content_type=APPLY_PATCH,
        )

    def merge_patch(
        self,
        kind: Kind,
        name: str,
        namespace: str,
        patch: Mapping[str, Any],
        *,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of one object: maps merge, lists are replaced whole.
        Unlike an apply it never creates the object: a missing one raises NotFoundError."""
        action = Action("patch", kind.resource, namespace, f"{kind.kind} {namespace}/{name}")
        return self.request(
            "PATCH",
            kind.path(namespace, name),
            action,
            query=[("fieldManager", field_manager)],
            body=dict(patch),
            content_type=MERGE_PATCH,
        )

    def create(self, doc: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """Create one object (``POST``); an existing one is a 409, raised as ``RejectedError``."""
        kind = kind_of(doc)
        name = doc["metadata"]["name"]
        action = Action("create", kind.resource, namespace, f"{kind.kind} {namespace}/{name}")
        return self.request(
            "POST", kind.path(namespace), action, body=dict(doc), content_type="application/json"
        )

    def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        propagation: str | None = None,
        *,
        uid: str | None = None,
    ) -> bool:
        """Delete one object; False if it was already gone.

        ``propagation`` (``Background``, ``Foreground``, ``Orphan``) says what becomes of what
        the object owns: a Job's pods, and the ConfigMap, Service and NetworkPolicy kubetune
        gives it. ``uid`` deletes only that object (a precondition), not one made since under
        the same name.
        """
        action = Action("delete", kind.resource, namespace, f"{kind.kind} {namespace}/{name}")
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            options["propagationPolicy"] = propagation
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self.request(
                "DELETE",
                kind.path(namespace, name),
                action,
                body=options,
                content_type="application/json",
            )
        except NotFoundError:
            return False
        return True

    def wait_deleted(self, kind: Kind, namespace: str, name: str, uid: str, timeout_s: int) -> None:
        """Return once the object ``uid`` of that name is gone (its DELETED event, or a list
        without it).

        Raises:
            ClusterError: it is still there after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        fields = f"metadata.name={name}"
        while True:
            items, version = self.list_objects(kind, namespace, fields=fields)
            if not any((i.get("metadata") or {}).get("uid") == uid for i in items):
                return
            left = int(deadline - time.monotonic())
            if left <= 0:
                raise ClusterError(
                    f"{kind.kind} {namespace}/{name} is still being deleted after {timeout_s} s; "
                    "try again once it is gone"
                )
            for event in self.watch(
                kind, namespace, "", version, timeout_s=min(left, 300), fields=fields
            ):
                if event.type == "ERROR":
                    break  # 410 Gone: list again
                if event.type == "DELETED" and event.object.get("metadata", {}).get("uid") == uid:
                    return

    def watch(
        self,
        kind: Kind,
        namespace: str,
        selector: str,
        resource_version: str,
        *,
        timeout_s: int = 300,
        opened: Any = None,
        fields: str = "",
    ) -> Generator[WatchEvent, None, None]:
        """The changes to matching objects after ``resource_version``, as they happen.

        The stream ends after ``timeout_s`` (the server's, so a quiet stream is not taken for
        a dead one); watch again from the last event's resourceVersion. An ERROR event with
        code 410 means that version is too old: list again. ``opened`` is called with the
        raw response, so another thread can ``shutdown()`` it.
        """
        action = Action("watch", kind.resource, namespace, f"{kind.kind}s in {namespace}")
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
        ]
        if selector:
            query.append(("labelSelector", selector))
        if fields:
            query.append(("fieldSelector", fields))
        if resource_version:
            query.append(("resourceVersion", resource_version))
        response = self.open(
            "GET", kind.path(namespace), action, query=query, timeout=(10, timeout_s + 30)
        )
        if opened is not None:
            opened(response)
        try:
            for line in _lines(response):
                event = json.loads(line)
                if isinstance(event, dict) and isinstance(event.get("object"), dict):
                    yield WatchEvent(str(event.get("type") or ""), event["object"])
        except json.JSONDecodeError as exc:
            raise ClusterError(f"{action.what}: the watch stream sent {exc.doc[:80]!r}") from exc
        finally:
            _finish(response)

    def logs(
        self, namespace: str, pod: str, container: str, *, follow: bool = False
    ) -> Iterator[bytes]:
        """A container's log as it arrives; with ``follow`` until the container ends."""
        action = Action("get", "pods/log", namespace, f"log of pod {namespace}/{pod}")
        query = [("container", container)]
        if follow:
            query.append(("follow", "true"))
        # No read timeout while following: a trainer may print nothing for minutes.
        timeout = (10.0, None) if follow else TIMEOUT
        response = self.open(
            "GET", f"{POD.path(namespace, pod)}/log", action, query=query, timeout=timeout
        )
        try:
            yield from response.stream(64 * 1024, decode_content=True)
        finally:
            _finish(response)


def kind_of(doc: Mapping[str, Any]) -> Kind:
    """The kind of a manifest kubetune applies.

    Raises:
        ConfigError: a kind kubetune does not apply, or a manifest without a name.
    """
    kind, version = doc.get("kind"), doc.get("apiVersion")
    name = (doc.get("metadata") or {}).get("name")
    found = APPLIED_KINDS.get((str(version), str(kind)))
    if found is None:
        known = ", ".join(k for _v, k in APPLIED_KINDS)
        raise ConfigError(f"{version} {kind} {name}: kubetune applies only {known}")
    if not name:
        raise ConfigError(f"{kind}: a manifest without metadata.name cannot be applied")
    return found


def _finish(response: Any) -> None:
    """Close a stream, read or not, and give its (closed) connection back to the pool: a
    half-read connection must never serve the next request."""
    response.close()
    response.release_conn()


def _lines(response: Any) -> Iterator[bytes]:
    """Whole lines of a chunked stream, each as soon as its newline arrives."""
    pending = b""
    for chunk in response.stream(64 * 1024, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def _backoff(retry_after: str | None, attempt: int) -> float:
    try:
        return min(10.0, max(0.0, float(retry_after or "")))
    except ValueError:
        return min(10.0, 0.25 * 2.0**attempt)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())


# --- connecting ---------------------------------------------------------------------------


def kubeconfig_path() -> str:
    """``$KUBECONFIG`` (one path or several joined by ``:``), else ``~/.kube/config``."""
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def connect(context: str | None = None) -> Cluster:
    """A client for the current (or named) context of the kubeconfig. Reads files only; the
    first request is the first contact with the API server.

    Raises:
        ConfigError: no kubeconfig, no such context, or one that cannot be used.
    """
    import yaml
    from kubernetes import client, config
    from kubernetes.config import kube_config

    path = kubeconfig_path()
    if not any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p):
        raise ConfigError(
            f"Kubernetes config {path}: no such file; set KUBECONFIG to a kubeconfig whose "
            "current context reaches your cluster (or pass --context)"
        )
    configuration = client.Configuration()
    try:
        # One loader gives the connection and the active context's namespace; the public
        # helpers parse the file twice and insist on a current-context even with --context.
        loader = kube_config._get_kube_config_loader(  # type: ignore[no-untyped-call]
            filename=path, active_context=context, persist_config=True
        )
        loader.load_and_set(configuration)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}: {getattr(exc, 'problem', '')})" if mark else ""
        raise ConfigError(
            f"Kubernetes config {path}: not valid YAML{where}; fix it, or set KUBECONFIG to "
            "another kubeconfig"
        ) from exc
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        raise ConfigError(_config_problem(path, context, exc)) from exc
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL)
    active = loader.current_context or {}
    namespace = (active.get("context") or {}).get("namespace") or None
    return Cluster(client.ApiClient(configuration), namespace, active.get("name") or context)


#: Where a pod finds its service account's token, CA and namespace (the kubelet mounts them).
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def connect_in_cluster(namespace: str | None = None) -> Cluster:
    """A client for the API server of the cluster this pod runs in: its service account's
    token (re-read as the kubelet rotates it) and CA, the address from
    ``KUBERNETES_SERVICE_HOST``/``_PORT``. The namespace is ``namespace``, else the service
    account's.

    Raises:
        ConfigError: not in a pod (no service account token or no service address).
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise ConfigError(
            f"no in-cluster Kubernetes config ({exc}); kubetune drive runs in the sweep "
            "driver's pod, whose service account token is mounted"
        ) from exc
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL)
    if namespace is None:
        try:
            namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text(encoding="utf-8").strip()
        except OSError:
            namespace = None
    return Cluster(client.ApiClient(configuration), namespace or None, None)


def _config_problem(path: str, context: str | None, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if context and f"name {context} " in text + " ":
        return (
            f"Kubernetes config {path}: no context named {context}; "
            "kubectl config get-contexts lists them (pass one to --context)"
        )
    if "current-context" in text:
        return (
            f"Kubernetes config {path}: no current context; pass --context NAME or run "
            "kubectl config use-context NAME"
        )
    reason = text or type(exc).__name__
    return (
        f"Kubernetes config {path}: {reason}; set KUBECONFIG to a kubeconfig whose current "
        "context reaches your cluster (or pass --context)"
    )


# --- applying manifests -------------------------------------------------------------------


def apply(
    documents: Iterable[Mapping[str, Any]],
    namespace: str | None = None,
    field_manager: str = FIELD_MANAGER,
    *,
    cluster: Cluster | None = None,
) -> list[Applied]:
    """Server-side apply every document, in order; returns what the server stored.

    An object's namespace is its manifest's, else ``namespace``, else the context's, else
    ``default``. Every document is checked before the first request, so an unsupported kind
    applies nothing.

    Raises:
        ConfigError: a document of a kind kubetune does not apply, or without a name.
        ClusterError: the API server refused a document or could not be reached.
    """
    docs = [dict(d) for d in documents if d]
    for doc in docs:
        kind_of(doc)
    cluster = cluster or connect()
    fallback = cluster.namespace_for(namespace)
    applied = []
    for doc in docs:
        metadata = doc.get("metadata") or {}
        ns = metadata.get("namespace") or fallback
        stored = cluster.apply(doc, ns, field_manager=field_manager)
        uid = (stored.get("metadata") or {}).get("uid")
        applied.append(Applied(doc["kind"], metadata["name"], ns, uid))
    return applied
