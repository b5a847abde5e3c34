"""The sync/async bridges of a blend: worker threads under a lock, and a loop for synchronous callers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmblend.blend.aio import LoopRunner, acall_batch, batch_in_worker, in_worker


def test_in_worker_runs_in_another_thread_holding_the_lock() -> None:
    lock = threading.Lock()

    def work(x: int, *, y: int) -> tuple[int, bool, int]:
        return x + y, lock.locked(), threading.get_ident()

    total, held, thread = asyncio.run(in_worker(lock, work, 1, y=2))
    assert (total, held) == (3, True) and thread != threading.get_ident() and not lock.locked()
    assert asyncio.run(in_worker(None, work, 1, y=2))[1] is False


def test_concurrent_calls_under_one_lock_run_one_at_a_time() -> None:
    lock = threading.Lock()
    active: list[int] = []
    most = [0]

    def work() -> None:
        active.append(1)
        most[0] = max(most[0], len(active))
        threading.Event().wait(0.02)
        active.pop()

    async def main() -> None:
        await asyncio.gather(*(in_worker(lock, work) for _ in range(4)))

    asyncio.run(main())
    assert most[0] == 1


def test_batch_methods_are_listed_in_the_worker_and_a_coroutine_method_is_preferred() -> None:
    lock = threading.Lock()

    def lazy(items):
        for item in items:
            yield (item, lock.locked())

    assert asyncio.run(batch_in_worker(lock, lazy, [1, 2])) == [(1, True), (2, True)]

    class Both:
        def fuse(self, items):
            return [f"sync {i}" for i in items]

        async def afuse(self, items):
            return (f"async {i}" for i in items)

    class SyncOnly:
        def fuse(self, items):
            return (f"sync {i}" for i in items)

    assert asyncio.run(acall_batch(Both(), "fuse", [1])) == ["async 1"]
    assert asyncio.run(acall_batch(SyncOnly(), "fuse", [1], lock=lock)) == ["sync 1"]


def test_loop_runner_keeps_one_loop_until_closed() -> None:
    runner = LoopRunner("Thing", "athing")

    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    assert not runner.started
    first = runner.run(loop_id())
    assert runner.run(loop_id()) == first and runner.started
    runner.close()
    assert not runner.started
    runner.close()  # twice is fine
    assert isinstance(runner.run(loop_id()), int)
    runner.close()


def test_loop_runner_refuses_inside_a_running_loop_and_closes_the_coroutine() -> None:
    runner = LoopRunner("Thing", "athing, aother")

    async def never() -> None:
        raise AssertionError("not run")

    async def inside() -> None:
        coroutine = never()
        with pytest.raises(RuntimeError, match=r"a synchronous Thing method .* \(athing, aother\)"):
            runner.run(coroutine)
        assert coroutine.cr_frame is None  # closed: no "never awaited" warning

    asyncio.run(inside())
    assert not runner.started
