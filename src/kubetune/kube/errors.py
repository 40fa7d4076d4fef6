"""What a refusal of the Kubernetes API means, as one line that says what to do.

The API server answers a refused request with a ``Status`` object (``code``, ``reason``,
``message``, ``details``); :func:`explain` turns it into one of these::

    ClusterError (WorldError, exit 1)   the API refused a request or could not be reached
    ├── UnreachableError                     no answer: wrong context, cluster down, network
    ├── UnauthorizedError                    401: the context's credentials were not accepted
    ├── ForbiddenError                       403 from RBAC: names the verb, resource and namespace
    ├── QuotaExceededError                   403 from a ResourceQuota: names the quota
    ├── NotFoundError                        404 of one object
    └── RejectedError                        anything else (409, 422, a webhook's denial, 5xx)
    NamespaceMissingError (ConfigError, exit 2)  404 on a create: the namespace does not exist

Every message starts with what was asked (``Job ml/bbc-topic-1c0ffee1``) so a line read alone
in a long log still says which object it is about.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kubetune.errors import ConfigError, KubetuneError, WorldError

#: The Role of charts/kubetune-job that grants what kubetune's commands need.
SUBMITTER_ROLE = "kubetune-submitter"
ROLE_HINT = (
    f"ask a cluster admin to bind the {SUBMITTER_ROLE} Role of charts/kubetune-job "
    "(helm template … --set rbac.create=true) to you in that namespace"
)

#: RBAC's denial: ``jobs.batch "x" is forbidden: User "alice" cannot patch resource "jobs"
#: in API group "batch" in the namespace "ml"``.
_RBAC = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)" '
    r'in API group "(?P<group>[^"]*)"(?: in the namespace "(?P<namespace>[^"]+)")?'
)
#: A ResourceQuota's: ``… is forbidden: exceeded quota: q, requested: …, used: …, limited: …``.
_QUOTA = re.compile(
    r"exceeded quota: (?P<name>[^,]+), requested: (?P<requested>.*?), "
    r"used: (?P<used>.*?), limited: (?P<limited>.*)$"
)


class ClusterError(WorldError):
    """The Kubernetes API refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnreachableError(ClusterError):
    """No answer from the API server."""


class UnauthorizedError(ClusterError):
    """The API server did not accept the context's credentials (401)."""


class ForbiddenError(ClusterError):
    """RBAC denied the request (403)."""


class QuotaExceededError(ClusterError):
    """A ResourceQuota of the namespace has no room for the object (403)."""


class NotFoundError(ClusterError):
    """The object does not exist (404)."""


class RejectedError(ClusterError):
    """Any other refusal: conflict, invalid object, admission webhook, server error."""


class NamespaceMissingError(ConfigError):
    """A create in a namespace that does not exist (404 naming the namespace)."""


@dataclass(frozen=True)
class Action:
    """What a request asked: enough to say which object and which permission.

    ``resource`` is RBAC's name for it: ``jobs.batch``, ``configmaps``, ``pods/log``.
    """

    verb: str
    resource: str
    namespace: str | None
    what: str  # "Job ml/bbc-topic-1c0ffee1", "Pods in ml"


@dataclass(frozen=True)
class Status:
    """The parts of a refusal that matter: HTTP code and reason, the Status body."""

    code: int
    reason: str
    message: str = ""
    api_reason: str = ""  # Status.reason: NotFoundError, ForbiddenError, AlreadyExists, Expired…
    kind: str = ""  # Status.details.kind: the resource the server could not find, …
    name: str = ""  # Status.details.name


def parse_status(code: int, reason: str | None, body: Any) -> Status:
    """The Status the API server sent (or whatever text it sent instead)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    text = body if isinstance(body, str) else ""
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return Status(code, reason or "", " ".join(text.split()))
    details = data.get("details")
    if not isinstance(details, dict):
        details = {}
    return Status(
        code,
        reason or "",
        " ".join(str(data.get("message") or "").split()),
        str(data.get("reason") or ""),
        str(details.get("kind") or ""),
        str(details.get("name") or ""),
    )


def explain(status: Status, action: Action) -> KubetuneError:
    """The error to raise for a refused request, its message one line that says what to do."""
    if status.code == 401:
        return UnauthorizedError(
            f"{action.what}: 401 UnauthorizedError: the API server did not accept this kube "
            "context's credentials; log in again (refresh the token in your kubeconfig) "
            "or pass --context",
            401,
        )
    if status.code == 403:
        return _forbidden(status, action)
    if status.code == 404 and status.kind == "namespaces" and action.verb in ("create", "patch"):
        namespace = status.name or action.namespace
        return NamespaceMissingError(
            f"namespace {namespace} does not exist: kubectl create namespace {namespace} or pass -n"
        )
    if status.code == 404:
        return NotFoundError(f"{action.what}: not found", 404)
    if status.code == 409 and status.api_reason == "AlreadyExists":
        return RejectedError(f"{action.what}: already exists", 409)
    return RejectedError(f"{action.what}: {one_line(status)}", status.code)


def _forbidden(status: Status, action: Action) -> ClusterError:
    quota = _QUOTA.search(status.message)
    if quota:
        return QuotaExceededError(
            f"{action.what}: ResourceQuota {quota['name'].strip()} in namespace "
            f"{action.namespace} is used up (requested {quota['requested']}, used "
            f"{quota['used']}, limited {quota['limited']}); wait for runs to finish, "
            "kubetune cancel some, or ask for a larger quota",
            403,
        )
    rbac = _RBAC.search(status.message)
    if rbac is None:
        # Not RBAC: an admission webhook or policy engine said no, in its own words.
        return RejectedError(f"{action.what}: {one_line(status)}", 403)
    resource = rbac["resource"] + (f".{rbac['group']}" if rbac["group"] else "")
    namespace = rbac["namespace"] or action.namespace
    where = f" in namespace {namespace}" if namespace else ""
    who = f"{rbac['user']} " if rbac["user"] else ""
    return ForbiddenError(
        f"{action.what}: forbidden: {who}may not {rbac['verb']} {resource}{where}; {ROLE_HINT}",
        403,
    )


def one_line(status: Status) -> str:
    """``422 Unprocessable Entity: Job.batch "x" is invalid: …`` on one line."""
    line = f"{status.code} {status.reason}".strip()
    if status.message:
        line += f": {status.message}"
    return " ".join(line.split())
