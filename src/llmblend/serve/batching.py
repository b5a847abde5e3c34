"""Cross-request micro-batching of the ranker: concurrent blends share one ranker call.

Each blend's rank stage is one example. :class:`RankBatcher` ranks at once when the ranker is idle
(after ``window_s``, 0 by default); while the ranker is busy with an earlier batch, every example
that arrives waits and joins the next call (the ranker runs one call at a time anyway), up to
``max_examples``. Examples of the same strategy and top-K share a
:func:`~llmblend.blend.rank.rank_stage` call, so a batched runtime (fp32, bf16, plain ONNX) fills
its batches. Scores do not depend on batch-mates on any runtime (the int8 runtime scores one pair
per forward), so batching changes speed, never results.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from llmblend.blend.rank import rank_stage
from llmblend.rank.base import Ranker
from llmblend.types import Example, Ranking


@dataclass(slots=True)
class _Waiting:
    example: Example
    future: asyncio.Future[tuple[Ranking, int]]


@dataclass(slots=True)
class _Queue:
    items: list[_Waiting] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class RankBatcher:
    """Ranks examples in batches across concurrent callers; see the module docstring.

    ``lock`` is held while the ranker runs (the guard shares the ranker and its lock);
    ``on_batch(n)`` is told each call's size (metrics).
    """

    def __init__(
        self,
        ranker: Ranker,
        *,
        window_s: float = 0.0,
        max_examples: int = 16,
        lock: threading.Lock | None = None,
        on_batch=None,
    ) -> None:
        self.ranker = ranker
        self.window_s = window_s
        self.max_examples = max_examples
        self.lock = lock or threading.Lock()
        self.on_batch = on_batch
        self.calls = 0
        self._queues: dict[tuple[str | None, int | None], _Queue] = {}
        self._running: set[asyncio.Task[None]] = set()  # batches being ranked (kept from the GC)
        self._idle = asyncio.Event()
        self._idle.set()

    async def rank(self, example: Example, *, strategy: str | None, top_k: int | None) -> tuple[Ranking, int]:
        """``example``'s ranking and the ranker's forward passes spent on it."""
        key = (strategy, top_k)
        queue = self._queues.setdefault(key, _Queue())
        future: asyncio.Future[tuple[Ranking, int]] = asyncio.get_running_loop().create_future()
        queue.items.append(_Waiting(example, future))
        if len(queue.items) >= self.max_examples:
            self._flush_now(key)
        elif queue.flusher is None:
            queue.flusher = asyncio.create_task(self._flush_after_window(key))
        return await future

    async def _flush_after_window(self, key: tuple[str | None, int | None]) -> None:
        if self.window_s > 0:
            await asyncio.sleep(self.window_s)
        while not self._idle.is_set():  # the ranker is busy: whoever arrives meanwhile joins
            await self._idle.wait()
        self._flush_now(key)

    def _flush_now(self, key: tuple[str | None, int | None]) -> None:
        queue = self._queues[key]
        items, queue.items = queue.items, []
        if queue.flusher is not None and queue.flusher is not asyncio.current_task():
            queue.flusher.cancel()
        queue.flusher = None
        live = [item for item in items if not item.future.done()]  # a cancelled request drops out
        if live:
            task = asyncio.create_task(self._rank_batch(live, *key))
            self._running.add(task)
            self._idle.clear()
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._running:
            self._idle.set()

    async def _rank_batch(self, items: list[_Waiting], strategy: str | None, top_k: int | None) -> None:
        self.calls += 1
        if self.on_batch is not None:
            self.on_batch(len(items))
        try:
            ranked = await rank_stage(
                [item.example for item in items], self.ranker, strategy=strategy, top_k=top_k, lock=self.lock
            )
        except Exception as exc:  # rank_stage turns ranker failures into data; this is a bug guard
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, ranking, n_forward in zip(items, ranked.rankings, ranked.n_forward, strict=True):
            if not item.future.done():
                item.future.set_result((ranking, n_forward))
