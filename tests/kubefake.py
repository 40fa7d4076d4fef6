"""A fake Kubernetes API server over real HTTP (aiohttp), for tests and benchmarks.

It serves what kubetune asks of a cluster, answering as the real API server does:

- namespaced objects at their REST paths: GET, list with label selectors and paging,
  watch streams (chunked JSON lines from a resourceVersion; ERROR 410 for a version older
  than ``expired_below``), server-side apply (PATCH ``application/apply-patch+yaml``, with
  ``dryRun=All``), POST create (409 AlreadyExists), DELETE (``propagationPolicy`` from the
  DeleteOptions body; Background and Foreground take a Job's pods with it);
- pod logs, whole or followed (a chunked stream that grows while the test writes to it);
- refusals as ``Status`` objects: RBAC 403 for a denied (verb, resource, namespace), quota
  403 when a namespace's Job quota is full, 404 for a missing namespace on create, 422 for
  a path in ``refuse``, and a 404 for the Kueue API when ``kueue`` is off.

Tests run it on a thread (:func:`serve`) and change its state through the thread-safe
methods (``put``, ``append_log``…); benchmarks run it as a process:
``python tests/kubefake.py --port 8001 --latency-ms 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
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
}
KUEUE_GROUP = "kueue.x-k8s.io"
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

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (as a controller would), with an ADDED/MODIFIED event."""
        return dict(self.on_loop(self._store, obj))

    def remove(self, plural: str, namespace: str, name: str) -> None:
        self.on_loop(self._delete, plural, namespace, name)

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
        self.expired_below = 0
        self.log_chunks.clear()
        self.open_logs.clear()
        self.history.clear()
        self.watchers.clear()
        self.namespaces = {"default", "team-a", "ml", "other"}

    # --- state ----------------------------------------------------------------------------

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
        self.version += 1
        metadata["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        self._notify(event or ("MODIFIED" if old else "ADDED"), plural, namespace, obj)
        return obj

    def _uid(self) -> str:
        return f"uid-{next(self._uids)}"

    def _delete(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((plural, namespace, name), None)
        if obj is not None:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._notify("DELETED", plural, namespace, obj)
        return obj

    def _notify(self, kind: str, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        snapshot = json.loads(json.dumps(obj))
        self.history.append((self.version, kind, plural, namespace, snapshot))
        for watcher in self.watchers:
            labels = snapshot["metadata"].get("labels") or {}
            if watcher.key == (plural, namespace) and matches(watcher.selector, labels):
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
        if parts[:2] == ["apis", KUEUE_GROUP] and (not self.kueue or len(parts) == 2):
            if not self.kueue:
                return status(404, "NotFound", "the server could not find the requested resource")
            return web.json_response({"kind": "APIGroup", "name": KUEUE_GROUP})
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
        if request.path in self.refuse:
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
        items = [
            obj
            for (p, ns, _n), obj in sorted(self.objects.items())
            if p == plural
            and ns == namespace
            and matches(selector, obj["metadata"].get("labels") or {})
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
        watcher = Watcher((plural, namespace), selector, asyncio.Queue())
        for version, kind, p, ns, obj in self.history:
            labels = obj["metadata"].get("labels") or {}
            if version > since and (p, ns) == (plural, namespace) and matches(selector, labels):
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

    def _apply(
        self, request: web.Request, body: str, plural: str, namespace: str, name: str
    ) -> web.Response:
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
        obj = yaml.load(body, Loader=_Loader)  # YAML, or JSON (which is YAML)
        if old is not None and plural == "jobs" and old.get("spec") != obj.get("spec"):
            return status(
                422, "Invalid", f'Job.batch "{name}" is invalid: spec: field is immutable'
            )
        obj.setdefault("metadata", {})["namespace"] = namespace
        if old is not None:
            obj["metadata"]["uid"] = old["metadata"]["uid"]
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            if "status" in old:
                obj["status"] = old["status"]
        if request.query.get("dryRun") == "All":
            obj["metadata"].setdefault("uid", "dry-run")
            return web.json_response(obj)
        return web.json_response(self._store(obj), status=200 if old else 201)

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
        if request.query.get("dryRun") == "All":
            return web.json_response(obj, status=201)
        return web.json_response(self._store(obj), status=201)

    def _delete_request(self, body: str, plural: str, namespace: str, name: str) -> web.Response:
        options = json.loads(body) if body else {}
        obj = self._delete(plural, namespace, name)
        if obj is None:
            return self._not_found(plural, name)
        if plural == "jobs" and options.get("propagationPolicy") in ("Background", "Foreground"):
            uid = obj["metadata"]["uid"]
            for (p, ns, pod), pod_obj in list(self.objects.items()):
                owners = pod_obj["metadata"].get("ownerReferences") or []
                if p == "pods" and ns == namespace and any(o.get("uid") == uid for o in owners):
                    self._delete("pods", ns, pod)
        return web.json_response(obj)

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
        assert server is not None and server.sockets
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
