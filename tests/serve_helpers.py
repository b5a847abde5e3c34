"""A live gateway for tests: uvicorn on 127.0.0.1 and a free port, in a thread of the test process.

Importable from any test (``tests`` is on ``pythonpath``); ``tests/serve/conftest.py`` makes the
``live_gateway`` fixture of it. ``start_gateway(settings)`` starts
:func:`~llmblend.serve.app.create_app` under uvicorn, waits until ``/ready`` answers 200 and gives
a :class:`LiveGateway` (its ``base_url`` and an ``openai`` SDK client). ``scripted_config(server)``
is a serve config whose backends ``alpha`` and ``beta`` are the scripted OpenAI-compatible server,
ranked longest-first with no fuser unless the test says otherwise.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from llmblend.serve.app import ServeSettings, create_app
from llmblend.serve.config import ServeConfig


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scripted_config(server: Any, *, names: tuple[str, ...] = ("alpha", "beta"), **fields: Any) -> ServeConfig:
    """Backends ``names`` on the scripted server (no retries, 5 s read timeout), the longest-answer
    ranker and no fuser, with ``fields`` on top."""
    backends = [
        {
            "name": name,
            "model": name,
            "base_url": server.base_url,
            "max_retries": 0,
            "read_timeout": 5.0,
            "temperature": 0.0,
        }
        for name in names
    ]
    values = {"backends": backends, "ranker": {"spec": "longest"}, "fuser": "none", **fields}
    return ServeConfig.model_validate(values)


@dataclass
class LiveGateway:
    """A running gateway: where it listens, and its uvicorn server."""

    base_url: str
    server: Any
    thread: threading.Thread
    app: Any

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def client(self, api_key: str = "unused", **options: Any):
        import openai

        return openai.OpenAI(base_url=self.v1, api_key=api_key, max_retries=0, **options)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_gateway(settings: ServeSettings, *, timeout_s: float = 120.0) -> LiveGateway:
    import uvicorn

    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    live = LiveGateway(f"http://127.0.0.1:{port}", server, thread, app)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{live.base_url}/ready", timeout=2)
        except httpx.HTTPError:
            ready = None
        if ready is not None and ready.status_code == 200:
            return live
        if ready is not None and ready.json().get("status") == "failed":
            live.stop()
            raise RuntimeError(f"the gateway failed to load: {ready.json()['error']}")
        time.sleep(0.05)
    live.stop()
    raise RuntimeError(f"the gateway on port {port} was not ready within {timeout_s} s")
