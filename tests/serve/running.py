"""A served app over real HTTP: uvicorn on a free local port, in a background thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from conftest import free_port

#: Bounds that only turn a hang into a failure; no assertion depends on them.
HANG = 600.0


@contextlib.contextmanager
def running(app: Any) -> Iterator[httpx.Client]:
    """``app`` served by uvicorn until the block ends; a client with its base URL."""
    import uvicorn

    started = threading.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            started.set()  # listening: the event a client may wait for

    port = free_port()
    server = Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                   lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        assert started.wait(HANG), "uvicorn did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HANG) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(HANG)


def wait_ready(client: httpx.Client) -> dict[str, Any]:
    """``/readyz``'s body once it answers 200 (it answers 503 while the model loads)."""
    deadline = time.monotonic() + HANG
    while True:
        response = client.get("/readyz")
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body
        time.sleep(0.01)
