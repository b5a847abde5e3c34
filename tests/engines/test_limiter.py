"""The cluster-wide in-flight limit, as plain asyncio (no Ray): capacity, hand-back, expired leases,
and the gate a backend enters around each call."""

from __future__ import annotations

import asyncio

import pytest

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.engines.limiter import ClusterGate, InFlightLimit


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_a_full_limit_waits_until_a_lease_is_given_back() -> None:
    async def scenario():
        limit = InFlightLimit(2)
        first, second = await limit.acquire(), await limit.acquire()
        third = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0.05)
        assert not third.done()  # the capacity is taken
        await limit.release(first)
        assert await asyncio.wait_for(third, 1) not in (first, second)
        return limit.stats()

    assert run(scenario()) == {"capacity": 2, "out": 2, "granted": 3, "peak": 2, "expired": 0}


def test_a_lease_never_given_back_expires() -> None:
    async def scenario():
        limit = InFlightLimit(1, lease_s=0.2)
        await limit.acquire()  # a worker that died holding it
        await asyncio.wait_for(limit.acquire(), 2)
        return limit.stats()

    stats = run(scenario())
    assert stats["expired"] == 1 and stats["granted"] == 2 and stats["peak"] == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        InFlightLimit(0)


class _Remote:
    """The actor method's ``.remote(...)`` over a local limit (what a Ray handle gives a worker)."""

    def __init__(self, method):
        self.method = method

    def remote(self, *args):
        return asyncio.ensure_future(self.method(*args))


class _Handle:
    def __init__(self, limit: InFlightLimit):
        self.acquire, self.release = _Remote(limit.acquire), _Remote(limit.release)


class _Slow(Backend):
    """A backend whose calls take 20 ms; ``calls`` counts those in flight, shared by all copies."""

    name = "slow"
    concurrency = 8

    def __init__(self, calls: dict[str, int]) -> None:
        self.calls = calls

    async def _generate(self, prompt, params: GenerationParams) -> Generation:
        self.calls["now"] += 1
        self.calls["peak"] = max(self.calls["peak"], self.calls["now"])
        await asyncio.sleep(0.02)
        self.calls["now"] -= 1
        return Generation("ok", self.name)


def test_two_backends_behind_one_gate_keep_its_capacity_together() -> None:
    """Two copies of a backend (two workers) share one limit of 3: never more than 3 calls at once."""

    async def scenario():
        limit, calls = InFlightLimit(3), {"now": 0, "peak": 0}
        backends = [_Slow(calls), _Slow(calls)]
        for backend in backends:
            backend.gate = ClusterGate(_Handle(limit))
        generations = await asyncio.gather(*(b.generate("hi") for b in backends for _ in range(10)))
        await asyncio.sleep(0.01)  # the last hand-backs (not awaited by the gate)
        return generations, limit.stats(), calls["peak"]

    generations, stats, peak = run(scenario())
    assert all(g.ok for g in generations)
    assert stats["peak"] == 3 and stats["granted"] == 20 and stats["out"] == 0
    assert peak == 3  # 20 calls at once were asked for; the gate let 3 run together


def test_without_a_gate_the_same_calls_run_all_at_once() -> None:
    """The control for the test above: the 20 calls do overlap when nothing limits them."""

    async def scenario():
        calls = {"now": 0, "peak": 0}
        backends = [_Slow(calls), _Slow(calls)]
        await asyncio.gather(*(b.generate("hi") for b in backends for _ in range(10)))
        return calls["peak"]

    assert run(scenario()) == 20


def test_a_gate_that_fails_is_a_failed_generation_not_a_crash() -> None:
    class Broken:
        def __call__(self):
            raise RuntimeError("the limit actor died")

    backend = _Slow({"now": 0, "peak": 0})
    backend.gate = Broken()
    generation = run(backend.generate("hi"))
    assert not generation.ok and "the limit actor died" in generation.error
