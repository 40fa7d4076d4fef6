"""The server over real HTTP with stand-in models (no torch): liveness while loading,
readiness after, one-line 422s naming the field, 404s saying what is served, concurrent
requests sharing model calls, a failed model call answered 500 without stopping the server.
tests/serve/test_models.py serves real (tiny) models."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from kubetune.errors import ConfigError
from kubetune.serve import Limits, create_app
from kubetune.serve.app import app_for
from kubetune.serve.served import EMBED, PREDICT, SEARCH, Served, Target
from serve.running import HANG, running, wait_ready

LIMITS = Limits(max_texts=4, max_chars=10, max_k=100)


class Model:
    """A stand-in classifier: each text's label is its length; records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[dict[str, Any]]:
        self.calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("out of memory\nmore detail")
        return [{"label": str(len(t)), "score": 1.0} for t in texts]


def model_target(model: Model, gate: threading.Event | None = None) -> Target:
    def load() -> Served:
        if gate is not None:
            assert gate.wait(HANG)
        return Served({"task": "classification", "labels": ["a", "b"]}, model)

    return Target("a model (fake)", (PREDICT,), load)


@dataclass(frozen=True)
class Doc:
    id: str
    text: str


class Docs:
    """A stand-in index over three documents: dense ranks by the query vector's first
    component, BM25 by shared words."""

    texts: ClassVar[dict[str, str]] = {"d1": "red apples", "d2": "green pears", "d3": "red wine"}

    def doc(self, ident: str) -> Doc:
        return Doc(ident, self.texts[ident])

    def search(self, vectors: Any, k: int) -> list[list[tuple[str, float]]]:
        return [[("d2", float(v[0])), ("d1", 0.0)][:k] for v in vectors]

    def search_bm25(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        found = []
        for query in queries:
            words = set(query.split())
            scored = [(d, float(len(words & set(t.split())))) for d, t in self.texts.items()]
            found.append(sorted(scored, key=lambda x: -x[1])[:k])
        return found

    def search_hybrid(
        self, vectors: Any, queries: Sequence[str], k: int
    ) -> list[list[tuple[str, float]]]:
        return [[("d3", 2.0)] for _ in queries]


def search_target() -> Target:
    def embed(texts: list[str]) -> list[Any]:
        return [np.array([len(t), 1.0], dtype=np.float32) for t in texts]

    def load() -> Served:
        return Served({"task": "search", "index": {"count": 3}}, embed, Docs())

    return Target("an index (fake) with its encoder", (SEARCH, EMBED), load)


def metrics(client: httpx.Client) -> dict[str, float]:
    """The counters of ``/metrics`` (Prometheus text format)."""
    found = {}
    for line in client.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            found[name] = float(value)
    return found


def test_live_while_loading_ready_after_with_what_is_served() -> None:
    gate = threading.Event()
    with running(app_for(model_target(Model(), gate))) as client:
        assert client.get("/healthz").status_code == 200
        loading = client.get("/readyz")
        assert loading.status_code == 503
        assert loading.json() == {"detail": "not ready: loading a model (fake)"}
        early = client.post("/v1/predict", json={"texts": ["a"]})
        assert early.status_code == 503
        assert metrics(client)["kubetune_serve_ready"] == 0
        gate.set()
        assert wait_ready(client) == {"ready": True, "task": "classification", "labels": ["a", "b"]}
        assert metrics(client)["kubetune_serve_ready"] == 1
        answer = client.post("/v1/predict", json={"texts": ["abc", "a"]})
        assert answer.json() == {"predictions": [{"label": "3", "score": 1.0},
                                                 {"label": "1", "score": 1.0}]}  # fmt: skip
        one = client.post("/v1/predict", json={"text": "abcd"})
        assert one.json() == {"predictions": [{"label": "4", "score": 1.0}]}


def test_a_failed_load_is_unhealthy_and_names_the_reason() -> None:
    reported: list[BaseException] = []

    def load() -> Served:
        raise ConfigError("/m: cannot be loaded (bad config.json); give a complete folder")

    app = app_for(Target("a model (m)", (PREDICT,), load), on_load_error=reported.append)
    with running(app) as client:
        while not reported:  # on_load_error runs on the server's loop
            assert client.get("/healthz").status_code in (200, 500)
        health, ready = client.get("/healthz"), client.get("/readyz")
    assert health.status_code == 500
    line = "loading failed: /m: cannot be loaded (bad config.json); give a complete folder"
    assert health.json() == {"detail": line}
    assert (ready.status_code, ready.json()) == (503, {"detail": line})
    assert isinstance(reported[0], ConfigError)


BAD_TEXTS = [
    ({"texts": []}, "texts: at least 1 text per request"),
    ({"texts": ["a"] * 5}, "texts: at most 4 texts per request (got 5)"),
    ({"texts": "abc"}, "texts: must be a list of texts (got a string)"),
    ({"texts": ["a", 3]}, "texts[1]: must be a string (got a number)"),
    ({"texts": ["a", "x" * 11]}, "texts[1]: at most 10 characters (got 11)"),
    ({"text": "x" * 11}, "text: at most 10 characters (got 11)"),
    ({}, "texts: required: a list of texts (or 'text': one text)"),
    ({"txts": ["a"]}, "txts: unknown field; did you mean 'texts'?"),
    ({"text": "a", "texts": ["b"]}, "texts: give 'texts' (a list) or 'text' (one), not both"),
    ([["a"]], "body: must be a JSON object"),
]


def test_bad_requests_are_422_with_one_line_naming_the_field() -> None:
    model = Model()
    with running(app_for(model_target(model), limits=LIMITS)) as client:
        wait_ready(client)
        for body, line in BAD_TEXTS:
            response = client.post("/v1/predict", json=body)
            assert (response.status_code, response.json()) == (422, {"detail": line}), body
        for raw, line in [
            (b"", 'body: required: a JSON object such as {"texts": [...]}'),
            (b'{"texts": [', "body: not valid JSON (EOF while parsing a list at line 1 column 11)"),
        ]:
            response = client.post("/v1/predict", content=raw)
            assert (response.status_code, response.json()) == (422, {"detail": line}), raw
    assert model.calls == []  # no bad request reached the model


BAD_SEARCHES = [
    ({"query": "red", "k": 0}, "k: at least 1 (got 0)"),
    ({"query": "red", "k": 101}, "k: at most 100 (got 101)"),
    ({"query": "red", "k": "5"}, 'k: must be an integer (got "5")'),
    ({"query": "red", "mode": "fuzzy"},
     "mode: must be 'dense', 'bm25' or 'hybrid' (got \"fuzzy\")"),
    ({"query": ""}, "query: must not be empty"),
    ({"k": 3}, "query: required"),
]  # fmt: skip


def test_search_answers_each_mode_and_refuses_bad_requests() -> None:
    with running(app_for(search_target(), limits=LIMITS)) as client:
        assert wait_ready(client)["index"] == {"count": 3}
        for body, line in BAD_SEARCHES:
            response = client.post("/v1/search", json=body)
            assert (response.status_code, response.json()) == (422, {"detail": line}), body
        dense = client.post("/v1/search", json={"query": "abc", "k": 2}).json()
        assert dense == {"hits": [{"id": "d2", "score": 3.0, "text": "green pears"},
                                  {"id": "d1", "score": 0.0, "text": "red apples"}]}  # fmt: skip
        bm25 = client.post("/v1/search", json={"query": "red wine", "k": 1, "mode": "bm25"})
        assert bm25.json() == {"hits": [{"id": "d3", "score": 2.0, "text": "red wine"}]}
        hybrid = client.post("/v1/search", json={"query": "x", "mode": "hybrid"})
        assert hybrid.json()["hits"] == [{"id": "d3", "score": 2.0, "text": "red wine"}]
        embed = client.post("/v1/embed", json={"texts": ["ab", "abcd"]})
        assert embed.json() == {"embeddings": [[2.0, 1.0], [4.0, 1.0]], "dim": 2}


def test_an_endpoint_of_something_else_is_404_saying_what_is_served() -> None:
    with (
        running(app_for(model_target(Model()))) as model,
        running(app_for(search_target())) as index,
    ):
        wait_ready(model)
        for path in ("/v1/search", "/v1/embed", "/v2/predict"):
            response = model.post(path, json={"query": "x"})
            assert response.status_code == 404
            assert response.json() == {"detail": f"POST {path} is not served here: this server "
                                       "serves a model (fake); use POST /v1/predict"}  # fmt: skip
        response = index.post("/v1/predict", json={"texts": ["x"]})
        assert response.status_code == 404
        assert response.json()["detail"].endswith(
            "serves an index (fake) with its encoder; use POST /v1/search, POST /v1/embed"
        )


def concurrently(base_url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST every body to /v1/predict at once, each on its own connection."""

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=HANG) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json=b) for b in bodies))

    return asyncio.run(post_all())


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_share_model_calls(batching: bool) -> None:
    n = 8
    model = Model()
    # Batching on: a batch waits (up to an hour) until all 8 texts are in, so the 8 requests
    # must arrive in one model call however the machine schedules them. Off: one call each.
    app = app_for(model_target(model), max_batch=n if batching else 1, max_wait_ms=3_600_000)
    with running(app) as client:
        wait_ready(client)
        bodies = [{"text": "x" * i} for i in range(1, n + 1)]
        responses = concurrently(str(client.base_url), bodies)
        counters = metrics(client)
    for i, response in enumerate(responses, start=1):
        assert response.json() == {"predictions": [{"label": str(i), "score": 1.0}]}
    calls = 1 if batching else n
    assert len(model.calls) == calls
    assert sorted(len(t) for call in model.calls for t in call) == list(range(1, n + 1))
    assert counters["kubetune_serve_batches_total"] == calls
    assert counters["kubetune_serve_texts_total"] == n
    assert counters["kubetune_serve_requests_total"] == n


def test_a_failed_model_call_is_500_in_one_line_and_the_server_goes_on() -> None:
    with running(app_for(model_target(Model()))) as client:
        wait_ready(client)
        failed = client.post("/v1/predict", json={"texts": ["a", "boom"]})
        assert failed.status_code == 500
        assert failed.json() == {"detail": "the model call failed: RuntimeError: out of memory"}
        assert client.post("/v1/predict", json={"text": "ok"}).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert metrics(client)["kubetune_serve_failed_batches_total"] == 1


def test_the_openapi_schema_states_the_limits() -> None:
    with running(app_for(model_target(Model()), limits=LIMITS)) as client:
        schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
    texts = json.dumps(body["schema"]["properties"]["texts"])
    assert '"maxItems": 4' in texts
    assert '"maxLength": 10' in texts


@pytest.mark.parametrize(
    ("folders", "line"),
    [
        ({}, "serve: give a model folder, or an encoder folder (with an index folder to search)"),
        ({"model": "m", "encoder": "e"}, "serve: give a model folder, or an encoder folder"),
        ({"model": "m", "index": "i"}, "serve: an index is searched with its encoder"),
    ],
)
def test_what_to_serve_must_be_one_thing(folders: dict[str, str], line: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(line)):
        create_app(**folders)  # type: ignore[arg-type]


def test_folders_are_checked_before_the_server_starts(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"no such folder; give a model folder"):
        create_app(model=tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"no config.json, so not an encoder folder"):
        create_app(encoder=tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"idx: no such folder; give an index folder"):
        create_app(encoder=tmp_path, index=tmp_path / "idx")


def test_serve_names_an_address_in_use_in_one_line(tmp_path: Any) -> None:
    import socket

    from kubetune.serve import serve

    (tmp_path / "config.json").write_text("{}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^serve: cannot listen on 127.0.0.1:{port} "):
            serve(model=tmp_path, port=port)
