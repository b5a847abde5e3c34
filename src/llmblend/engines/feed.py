"""Shards into Ray Data while the driver is still reading: the workers start on the first shard.

Ray Data plans a job from a fixed list of read tasks, and the driver reads the input as one stream
(compressed files, several parts, ids checked across them). :class:`ShardFeed` joins the two: the
job gets ``slots`` read tasks, an upper bound on its shards (:func:`llmblend.data.jsonl.count_lines`
of the input), and read task ``j`` waits, in a small actor (:class:`_Rendezvous`), for the driver's
``j``-th shard, or for the end of the input (it then reads nothing). A thread of the driver reads
shards and hands each over once fewer than ``ahead`` are in flight, so Ray's object store holds
about ``ahead`` shards whatever the input's size. A shard stays with the actor until its result
is back (:meth:`ShardFeed.finished`), so a read task Ray retries finds it again.

Import this module only once Ray is known to be installed (:func:`~llmblend.engines.ray_session.require_ray`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import ray
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from llmblend.engines.ray_session import RayOptions, check_cpus, map_shards, put_shard


@ray.remote(num_cpus=0)
class _Rendezvous:
    """The actor where read task ``j`` meets the driver's ``j``-th shard (a reference, wrapped in a
    list so Ray passes it on instead of resolving it)."""

    def __init__(self) -> None:
        self.shards: dict[int, Any] = {}
        self.end: int | None = None  # the number of shards, once the driver has read them all
        self.changed = asyncio.Condition()

    async def put(self, slot: int, wrapped: list[Any]) -> None:
        async with self.changed:
            self.shards[slot] = wrapped[0]
            self.changed.notify_all()

    async def close(self, count: int) -> None:
        async with self.changed:
            self.end = count
            self.changed.notify_all()

    async def take(self, slot: int) -> list[Any]:
        """[the slot's shard reference], or [] when the input has fewer shards than ``slot``."""
        async with self.changed:
            await self.changed.wait_for(lambda: slot in self.shards or self._past_the_end(slot))
            return [self.shards[slot]] if slot in self.shards else []

    def _past_the_end(self, slot: int) -> bool:
        return self.end is not None and slot >= self.end

    async def release(self, slot: int) -> None:
        self.shards.pop(slot, None)


class ShardFeed:
    """Feed the rows of ``shards`` (dicts with a ``shard`` index) to a Ray Data dataset of
    ``slots`` read tasks, at most ``ahead`` of them in flight; :meth:`map` runs a job on them."""

    def __init__(self, shards: Iterator[dict[str, Any]], slots: int, ahead: int) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        self._rows = shards
        self.slots = max(1, slots)
        self.ahead = ahead
        self._actor = _Rendezvous.remote()
        self._slot_of: dict[int, int] = {}
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._stopped = False
        self._ended = False  # the reading is over: the input's end, an error, or stop()
        self._thread = threading.Thread(target=self._read, name="llmblend-shard-feed", daemon=True)
        self.read = 0  # shards handed over so far
        self.most_in_flight = 0  # the most shards handed over and not yet back, at any time

    def map(
        self, actor: type, actor_kwargs: dict[str, Any], columns: Sequence[str], options: RayOptions
    ) -> Iterator[dict[str, Any]]:
        """:func:`~llmblend.engines.ray_session.map_shards` over the fed shards, reading as the
        workers go: each result row as it comes back (its slot freed), on no more workers than
        there are shards. Raises, at the end, what stopped the reading before the input's end."""
        self._thread.start()
        try:
            if self._wait_until_read(options.num_workers):
                options = options.fit(max(1, self.read))  # fewer shards than workers: none idle
            check_cpus(options)
            for row in map_shards(self._dataset(), actor, actor_kwargs, columns, options):
                self.finished(row["shard"])
                yield row
        except BaseException:
            self.stop(raise_error=False)  # the error under way (or the caller's exit) says more
            raise
        self.stop()

    def _dataset(self) -> Any:
        """The dataset whose rows are the fed shards, in the order workers may take them."""
        return ray.data.read_datasource(
            _FedShards(self._actor, self.slots),
            num_cpus=0,  # a read task only waits for the driver and hands a block on
            concurrency=self.ahead,
            override_num_blocks=self.slots,
        )

    def _wait_until_read(self, count: int) -> bool:
        """Wait until ``count`` shards are handed over or the input ended; whether it ended first."""
        with self._room:
            self._room.wait_for(lambda: self.read >= count or self._ended)
            return self._ended and self.read < count

    def finished(self, shard: int) -> None:
        """A shard's result is back: its slot is freed, and the driver may read one more."""
        with self._room:
            slot = self._slot_of.pop(shard, None)
            self._room.notify_all()
        if slot is not None:
            self._actor.release.remote(slot)

    @property
    def total(self) -> int | None:
        """How many shards there are, once the driver has read the whole input (None before)."""
        with self._room:
            return self.read if self._ended else None

    def stop(self, *, raise_error: bool = True) -> None:
        """Stop reading (the job is over, or failed) and wait for the thread; with ``raise_error``,
        raise what stopped it before the input's end (a malformed line, say)."""
        with self._room:
            self._stopped = True
            self._room.notify_all()
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error

    def _read(self) -> None:
        try:
            for row in self._rows:
                with self._room:
                    self._room.wait_for(lambda: len(self._slot_of) < self.ahead or self._stopped)
                    if self._stopped:
                        return
                if self.read >= self.slots:
                    raise RuntimeError(f"more shards than the {self.slots} planned from the input's lines")
                reference = put_shard(row)
                with self._room:
                    self._slot_of[row["shard"]] = self.read
                    self._actor.put.remote(self.read, [reference])
                    self.read += 1
                    self.most_in_flight = max(self.most_in_flight, len(self._slot_of))
                    self._room.notify_all()
        except BaseException as exc:  # raised to the caller by stop()
            self._error = exc
        finally:
            self._actor.close.remote(self.read)
            with self._room:
                self._ended = True
                self._room.notify_all()


class _FedShards(Datasource):
    """A Ray Data datasource of ``slots`` read tasks, task ``j`` yielding the ``j``-th fed shard."""

    def __init__(self, actor: Any, slots: int) -> None:
        self.actor = actor
        self.slots = slots

    def estimate_inmemory_data_size(self) -> None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [ReadTask(_slot_reader(self.actor, slot), metadata) for slot in range(self.slots)]


def _slot_reader(actor: Any, slot: int):
    """A read task's body: the slot's shard (an Arrow table), or nothing once the input has ended."""

    def read() -> Iterator[Any]:
        for reference in ray.get(actor.take.remote(slot)):
            yield ray.get(reference)

    return read
