"""Where a blend crosses between synchronous and asynchronous code (and nowhere else).

* :func:`in_worker` runs a synchronous model call (a torch or ONNX Runtime ranker, a trained fuser)
  in a worker thread, so that the event loop keeps serving, while holding a lock, so that concurrent
  blends that share the model call it one at a time.
  :func:`batch_in_worker` is the same for a batch method (``rank``, ``fuse``, ``check_many``).
* :func:`acall_batch` awaits an object's coroutine method when it has one (``afuse`` of a
  :class:`~llmblend.fuse.prompted.PromptedFuser`) and otherwise runs the synchronous one
  (``fuse``) with :func:`batch_in_worker`.
* :class:`LoopRunner` runs coroutines from synchronous code on an event loop of its own, kept between
  calls so that backends keep their connections; inside a running event loop it refuses and names the
  coroutine methods to await instead.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def _holding(
    lock: threading.Lock | None, function: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    if lock is None:
        return function(*args, **kwargs)
    with lock:
        return function(*args, **kwargs)


async def in_worker(
    lock: threading.Lock | None, function: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """``function(*args, **kwargs)`` in a worker thread, holding ``lock`` (None: no lock) while it runs."""
    return await asyncio.to_thread(_holding, lock, function, args, kwargs)


def is_coroutine_method(obj: Any, name: str) -> bool:
    """Whether ``obj.<name>`` exists and is a coroutine function."""
    method = getattr(obj, name, None)
    return method is not None and inspect.iscoroutinefunction(method)


def _listed(function: Callable[..., Iterable[T]], *args: Any, **kwargs: Any) -> list[T]:
    return list(function(*args, **kwargs))


async def batch_in_worker(
    lock: threading.Lock | None, function: Callable[..., Iterable[T]], /, *args: Any, **kwargs: Any
) -> list[T]:
    """:func:`in_worker` for a batch method: its result made a list in the worker thread (where a
    lazily computed one does its work, under the lock)."""
    return await in_worker(lock, _listed, function, *args, **kwargs)


async def acall_batch(obj: Any, method: str, /, *args: Any, lock: threading.Lock | None = None) -> list[Any]:
    """``await obj.a<method>(*args)`` when ``obj`` has that coroutine method (``afuse`` for
    ``fuse``), else ``obj.<method>(*args)`` with :func:`batch_in_worker` holding ``lock``; as a list."""
    if is_coroutine_method(obj, f"a{method}"):
        return list(await getattr(obj, f"a{method}")(*args))
    return await batch_in_worker(lock, getattr(obj, method), *args)


class LoopRunner:
    """Runs coroutines from synchronous code on one event loop, made on first use and kept until
    :meth:`close` (so that HTTP clients and local models bound to it stay usable between calls).

    ``owner`` and ``instead`` make the error raised inside a running event loop: "a synchronous
    ``owner`` method was called inside a running event loop; await the a-prefixed one instead
    (``instead``)".
    """

    def __init__(self, owner: str, instead: str) -> None:
        self.owner = owner
        self.instead = instead
        self._runner: asyncio.Runner | None = None

    @property
    def started(self) -> bool:
        """Whether the loop exists (a :meth:`run` happened since the last :meth:`close`)."""
        return self._runner is not None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` to completion and return its result (RuntimeError inside a running loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise RuntimeError(
                f"a synchronous {self.owner} method was called inside a running event loop; "
                f"await the a-prefixed one instead ({self.instead})"
            )
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coroutine)

    def close(self) -> None:
        """End the loop (a no-op when there is none); the next :meth:`run` makes a new one."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()


class ClosesItsLoop:
    """Mixin: ``with`` / ``async with`` support and :meth:`close` for an object that owns a
    :class:`LoopRunner` in ``self._loop`` and has an ``aclose()`` coroutine."""

    _loop: LoopRunner

    async def aclose(self) -> None:
        """Release what the object holds; each class defines its own."""
        raise NotImplementedError

    def close(self, *, close_backends: bool = True) -> None:
        """:meth:`aclose` (unless ``close_backends`` is False), then end the event loop of the
        synchronous methods."""
        try:
            if close_backends:
                self._loop.run(self.aclose())
        finally:
            self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
