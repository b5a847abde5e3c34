"""One limit on a backend's calls in flight, shared by every worker of a Ray job.

Locally a backend keeps at most ``concurrency`` calls in flight. A Ray job builds the backend in
each of its workers, and K workers would send K times as many: an API's limit would be crossed.
So the driver starts one :class:`InFlightLimit` actor per shared backend (an HTTP API; a local
model is each worker's own) (:func:`start_limits`), with
that backend's ``concurrency`` as its capacity, and every worker sets the backend's
:attr:`~llmblend.backends.base.Backend.gate` to a :class:`ClusterGate` on it (:func:`attach_limits`):
each call holds one lease of the actor while it is in flight.

A worker killed while holding leases cannot give them back, so a lease expires after ``lease_s``
seconds (longer than any call with its retries); the actors live as long as the driver.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

from llmblend.backends.base import Backend

#: Seconds after which a lease a worker never gave back is taken back (a killed worker's).
LEASE_S = 900.0


class InFlightLimit:
    """At most ``capacity`` leases out at once (a Ray async actor; see the module docstring)."""

    def __init__(self, capacity: int, lease_s: float = LEASE_S) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.lease_s = lease_s
        self._leases: dict[int, float] = {}  # token -> when it expires (monotonic seconds)
        self._tokens = itertools.count()
        self._changed: asyncio.Condition | None = None
        self.granted = self.expired = self.peak = 0

    async def acquire(self) -> int:
        """Wait for a free lease and take it; the token gives it back (:meth:`release`)."""
        async with self._condition():
            while not self._has_room():
                await self._wait_for_change()
            token = next(self._tokens)
            self._leases[token] = time.monotonic() + self.lease_s
            self.granted += 1
            self.peak = max(self.peak, len(self._leases))
            return token

    async def release(self, token: int) -> None:
        async with self._condition():
            self._leases.pop(token, None)
            self._condition().notify()

    def stats(self) -> dict[str, int]:
        """Capacity, leases out now, granted in all, the most out at once, and expired."""
        return {
            "capacity": self.capacity,
            "out": len(self._leases),
            "granted": self.granted,
            "peak": self.peak,
            "expired": self.expired,
        }

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made in the actor's event loop, on first use
            self._changed = asyncio.Condition()
        return self._changed

    def _has_room(self) -> bool:
        now = time.monotonic()
        for token in [t for t, until in self._leases.items() if until <= now]:
            del self._leases[token]
            self.expired += 1
        return len(self._leases) < self.capacity

    async def _wait_for_change(self) -> None:
        """Until a lease is given back, or the next one expires."""
        timeout = max(0.01, min(self._leases.values()) - time.monotonic())
        with suppress(TimeoutError):
            await asyncio.wait_for(self._condition().wait(), timeout)


class ClusterGate:
    """A backend's :attr:`~llmblend.backends.base.Backend.gate`: each call holds a lease of the actor."""

    def __init__(self, limit: Any) -> None:
        self.limit = limit

    def __call__(self) -> AsyncIterator[None]:
        return self._hold()

    @asynccontextmanager
    async def _hold(self) -> AsyncIterator[None]:
        token = await self.limit.acquire.remote()
        try:
            yield
        finally:
            self.limit.release.remote(token)  # not awaited: a cancelled call still gives it back


def shared_backends(backends: Iterable[Backend]) -> dict[str, Backend]:
    """Each distinct shared backend (an HTTP API, not a model each worker loads), by name; several
    slots (sampling variants) share one."""
    return {backend.name: backend for backend in backends if backend.shared}


def start_limits(backends: Iterable[Backend], lease_s: float = LEASE_S) -> dict[str, Any]:
    """On the driver: one :class:`InFlightLimit` actor per shared backend, sized by its
    ``concurrency``."""
    import ray

    actor = ray.remote(InFlightLimit).options(num_cpus=0, max_concurrency=10_000)
    return {name: actor.remote(b.concurrency, lease_s) for name, b in shared_backends(backends).items()}


def attach_limits(backends: Iterable[Backend], limits: dict[str, Any]) -> None:
    """In a worker: gate each shared backend with its cluster-wide limit."""
    for name, backend in shared_backends(backends).items():
        if name in limits:
            backend.gate = ClusterGate(limits[name])


def limit_stats(limits: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each limit's :meth:`InFlightLimit.stats`, by backend name."""
    import ray

    return dict(zip(limits, ray.get([limit.stats.remote() for limit in limits.values()]), strict=True))
