"""The Kubernetes API, through the ``kubernetes`` client: server-side apply of rendered manifests.

:func:`apply` sends each document as a server-side apply patch (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=kubetune``, ``force=true``), so applying the
same manifests twice changes nothing, and kubetune owns the fields it writes, as
``kubectl apply --server-side --force-conflicts`` would. The kinds are the ones the
kubetune-job chart renders; each has a fixed resource path, so no discovery round trips.

Where to connect comes from the kubeconfig (``$KUBECONFIG``, else ``~/.kube/config``) and its
current context, as kubectl does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.errors import ConfigError, WorldError

#: (apiVersion, kind) → the resource path of one named object in a namespace.
RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "/api/v1/namespaces/{namespace}/configmaps/{name}",
    ("v1", "Service"): "/api/v1/namespaces/{namespace}/services/{name}",
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    ),
}
APPLY_PATCH = "application/apply-patch+yaml"
#: Seconds to wait for the API server to answer (connect, read).
TIMEOUT = (10, 60)


class ClusterError(WorldError):
    """The Kubernetes API refused a request or could not be reached."""


@dataclass(frozen=True)
class Cluster:
    """A connection to the API server of one kubeconfig context."""

    client: Any  # kubernetes.client.ApiClient
    namespace: str | None  # the context's namespace, if it names one

    @property
    def host(self) -> str:
        host: str = self.client.configuration.host
        return host


@dataclass(frozen=True)
class Applied:
    """One object as the API server stored it."""

    kind: str
    name: str
    namespace: str
    uid: str | None

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def connect(context: str | None = None) -> Cluster:
    """A client for the current (or named) context of the kubeconfig.

    Raises:
        ConfigError: no kubeconfig, or one that cannot be used.
    """
    from kubernetes import client, config

    path = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration
        )
        contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=path
        )
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"Kubernetes config {path}: {reason}; set KUBECONFIG to a kubeconfig whose current "
            "context reaches your cluster"
        ) from None
    if context is not None:
        current = next((c for c in contexts if c.get("name") == context), current)
    namespace = (current or {}).get("context", {}).get("namespace") or None
    return Cluster(client.ApiClient(configuration), namespace)


def apply(
    documents: Iterable[Mapping[str, Any]],
    namespace: str | None = None,
    field_manager: str = "kubetune",
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
    paths = [_path_template(doc) for doc in docs]
    cluster = cluster or connect()
    fallback = namespace or cluster.namespace or "default"
    applied = []
    for doc, template in zip(docs, paths, strict=True):
        metadata = doc.get("metadata") or {}
        ns = metadata.get("namespace") or fallback
        path = template.format(namespace=ns, name=metadata["name"])
        stored = _patch(cluster, path, doc, field_manager, f"{doc['kind']} {ns}/{metadata['name']}")
        uid = (stored.get("metadata") or {}).get("uid")
        applied.append(Applied(doc["kind"], metadata["name"], ns, uid))
    return applied


def _path_template(doc: Mapping[str, Any]) -> str:
    kind, version = doc.get("kind"), doc.get("apiVersion")
    name = (doc.get("metadata") or {}).get("name")
    template = RESOURCES.get((str(version), str(kind)))
    if template is None:
        known = ", ".join(k for _v, k in RESOURCES)
        raise ConfigError(f"{version} {kind} {name}: kubetune applies only {known}")
    if not name:
        raise ConfigError(f"{kind}: a manifest without metadata.name cannot be applied")
    return template


def _patch(cluster: Cluster, path: str, doc: Mapping[str, Any], manager: str, what: str) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = cluster.client
    request = api.param_serialize(
        method="PATCH",
        resource_path=path,
        query_params=[("fieldManager", manager), ("force", "true")],
        header_params={"Content-Type": APPLY_PATCH, "Accept": "application/json"},
        # JSON is YAML: the server reads the manifest exactly as written.
        body=json.dumps(doc),
        auth_settings=["BearerToken"],
    )
    try:
        response = api.call_api(*request, _request_timeout=TIMEOUT)
        body = response.read()
    except ApiException as exc:
        raise ClusterError(f"{what}: {_api_error(exc.status, exc.reason, exc.body)}") from None
    except HTTPError as exc:
        raise ClusterError(
            f"{what}: cannot reach the Kubernetes API at {cluster.host}: {_reason(exc)}"
        ) from None
    text = body.decode("utf-8", errors="replace") if body else ""
    if not 200 <= response.status < 300:
        raise ClusterError(f"{what}: {_api_error(response.status, response.reason, text)}")
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def _api_error(status: int | None, reason: str | None, body: Any) -> str:
    """``422 Unprocessable Entity: Job.batch "x" is invalid: …`` on one line."""
    message = ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            message = str(json.loads(body).get("message") or "")
        except (json.JSONDecodeError, AttributeError):
            message = body.strip()
    line = f"{status} {reason or ''}".strip()
    if message:
        line += f": {message}"
    return " ".join(line.split())


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())
