"""Who may call the gateway and how much: API keys, per-key rate limits, a bound on concurrent work
with a bounded queue, and a request-body size limit.

* :class:`ApiKeys`: bearer keys compared in constant time (:func:`hmac.compare_digest` against
  every key, so the time does not tell which prefix matched); keys are never logged — a request is
  known by a short fingerprint of its key.
* :class:`RateLimiter`: a token bucket per key (``rate_per_minute`` tokens, refilled continuously).
* :class:`ConcurrencyGate`: at most ``max_concurrent`` requests run, ``max_queue`` more wait their
  turn, the rest are refused at once (503) instead of piling up.
* :class:`BodyLimit`: ASGI middleware that answers 413 when a body is larger than the limit, by its
  ``Content-Length`` or, without one, by counting while it is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from llmblend.errors import LlmblendError
from llmblend.serve.errors import overloaded, rate_limited, too_large, unauthorized


class ApiKeys:
    """The keys a client may send as ``Authorization: Bearer KEY``; empty means no auth."""

    def __init__(self, keys: list[str] | tuple[str, ...] = ()) -> None:
        cleaned = [k.strip() for k in keys if k.strip()]
        self._keys = [k.encode() for k in dict.fromkeys(cleaned)]

    @classmethod
    def load(cls, env: str | None = None, file: Path | None = None) -> ApiKeys:
        """Keys from the environment variable ``env`` (comma-separated) and/or ``file`` (one per
        line, ``#`` comments); a named source that is missing or empty is an error."""
        keys: list[str] = []
        if env is not None:
            value = os.environ.get(env, "")
            if not value.strip():
                raise LlmblendError(
                    f"--api-key-env {env}: the variable is not set or empty; export {env}=KEY1,KEY2"
                )
            keys += value.split(",")
        if file is not None:
            if not file.is_file():
                raise LlmblendError(f"--api-keys-file {file} does not exist")
            lines = file.read_text(encoding="utf-8").splitlines()
            found = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
            if not found:
                raise LlmblendError(f"--api-keys-file {file} holds no keys (one per line)")
            keys += found
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, authorization: str | None) -> str:
        """The client's id (a fingerprint of its key, ``anonymous`` without auth); 401 otherwise."""
        if not self._keys:
            return "anonymous"
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("missing API key: send the header 'Authorization: Bearer KEY'")
        given = token.strip().encode()
        matched = False
        for key in self._keys:  # every key compared, whatever matched first
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise unauthorized("invalid API key")
        return fingerprint(token.strip())


def fingerprint(key: str) -> str:
    """A short, non-reversible name for a key (for logs and metrics)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute, bursts up to ``per_minute``."""

    def __init__(self, per_minute: int | None, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, last refill)

    def take(self, client: str) -> None:
        """Spend one request of ``client``'s budget; 429 with ``Retry-After`` when it is spent."""
        if self.per_minute is None:
            return
        now = self._clock()
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.get(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            raise rate_limited((1.0 - tokens) / rate)
        self._buckets[client] = (tokens - 1.0, now)


class ConcurrencyGate:
    """At most ``max_concurrent`` holders at once and ``max_queue`` waiting; 503 beyond that."""

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_concurrent)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self.running >= self.max_concurrent and self.waiting >= self.max_queue:
            raise overloaded(self.running, self.waiting)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 (OpenAI-shaped) unread."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        error = too_large(self.limit)
        payload = json.dumps(error.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class _BodyTooLarge(Exception):
    pass
