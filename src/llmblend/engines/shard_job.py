"""The driver of a Ray job over MixInstruct files' shards (``rank``, ``eval judge``).

:func:`run_shard_job` reads the input once, shard by shard (:mod:`llmblend.engines.shards`): it
checks or writes the manifest of the job's settings and feeds each shard not yet finished to an
actor pool (:mod:`llmblend.engines.feed`, :func:`~llmblend.engines.ray_session.map_shards`) while it
goes on reading, so the workers start on the first shard, and Ray holds only the few shards in
flight and the driver only ids, whatever the input's size. It writes each shard the workers return
(the ``records`` column) as it arrives, then merges every shard into OUT in input order and removes
the shard folder. The backends an actor calls get one cluster-wide in-flight limit each
(:mod:`llmblend.engines.limiter`), handed to the actor as its ``limits`` keyword. A killed driver
loses only the shards in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from llmblend.backends.base import Backend
from llmblend.data.jsonl import Sources, count_lines, resume_jsonl
from llmblend.engines.limiter import start_limits
from llmblend.engines.ray_session import RayOptions, ray_session
from llmblend.engines.shards import (
    MergeCount,
    Shard,
    ShardIds,
    is_finished,
    merge_shards,
    pending_shards,
    prepare_folder,
    ranking_failed,
    remove_folder,
    shard_folder,
    write_shard,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShardJobResult:
    """What the driver saw: each shard's result row of this run (``records`` removed: they went to
    disk), what the merge appended, and the shards and examples found done before."""

    rows: list[dict[str, Any]]
    merged: MergeCount
    already_done: int
    shards_reused: int
    startup_seconds: float
    seconds: float
    read_ahead: int = 0  # the most shards in Ray's object store at once


@dataclass(frozen=True, slots=True)
class ShardJob:
    """A job over a file's shards: the actor class and its keywords, its result columns (with
    ``shard`` and ``records``), the settings a rerun must repeat, the backends to limit
    cluster-wide, and how an output record counts as failed."""

    actor: type
    actor_kwargs: dict[str, Any]
    columns: Sequence[str]
    settings: dict[str, Any]
    backends: Iterable[Backend] = ()
    failed_record: Callable[[dict[str, Any]], bool] = ranking_failed


def run_shard_job(
    job: ShardJob,
    sources: Sources,
    out: str | Path,
    options: RayOptions,
    *,
    shard_size: int,
    limit: int | None = None,
    on_shard: Callable[[int, int | None], None] | None = None,
) -> ShardJobResult:
    """Run ``job`` on the shards of the first ``limit`` examples of ``sources`` that ``out`` lacks
    and append them to ``out`` in input order; ``on_shard(done, total)`` as each shard is written
    (``total`` None while the input is still being read). Raises LlmblendError when the workers
    fail, and the reading error for a malformed input (finished shards are kept for the rerun)."""
    started = time.perf_counter()
    done = resume_jsonl(out, "id")
    folder = shard_folder(out)
    plan = _Plan(folder, job.settings)
    todo = plan.unfinished(pending_shards(sources, done, shard_size, limit))
    rows: list[dict[str, Any]] = []
    startup = 0.0
    read_ahead = 0
    if (first := next(todo, None)) is not None:
        lines = count_lines(sources)
        slots = -(-(lines if limit is None else min(lines, limit)) // shard_size)
        with ray_session(options.address) as startup:
            rows, read_ahead = _map(job, chain([first], todo), slots, options, folder, on_shard)
    if not plan.shards:
        remove_folder(folder)
        return ShardJobResult([], MergeCount(0, 0), len(done), 0, 0.0, time.perf_counter() - started)
    merged = merge_shards(folder, plan.shards, out, job.failed_record)
    remove_folder(folder)
    shards_reused = len(plan.shards) - len(rows)
    seconds = time.perf_counter() - started
    return ShardJobResult(rows, merged, len(done), shards_reused, startup, seconds, read_ahead)


class _Plan:
    """The shards a job covers, in input order (what the merge needs), and the folder that holds
    them, prepared when the first shard is planned."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder = folder
        self.settings = settings
        self.shards: list[ShardIds] = []

    def unfinished(self, shards: Iterable[Shard]) -> Iterator[dict[str, Any]]:
        """Plan each shard; the rows (``shard``, ``examples``) of those without a finished file."""
        for shard in shards:
            if not self.shards:
                prepare_folder(self.folder, self.settings)
            self.shards.append(shard.key)
            if not is_finished(self.folder, shard):
                yield {"shard": shard.index, "examples": shard.data}


def _map(
    job: ShardJob,
    shards: Iterator[dict[str, Any]],
    slots: int,
    options: RayOptions,
    folder: Path,
    on_shard: Callable[[int, int | None], None] | None,
) -> tuple[list[dict[str, Any]], int]:
    """The shards through the job's actors as the driver reads them (:class:`ShardFeed`), each
    written as it comes back; the result rows without their records (those went to disk, not into
    memory), and the most shards that were in Ray at once."""
    from llmblend.engines.feed import ShardFeed

    feed = ShardFeed(shards, slots, ahead=2 * options.num_workers)
    kwargs = {**job.actor_kwargs, "limits": start_limits(job.backends)}
    rows: list[dict[str, Any]] = []
    for row in feed.map(job.actor, kwargs, job.columns, options):
        write_shard(folder, row.pop("shard"), row.pop("records"))
        rows.append(row)
        log.info("shard finished by %s", row.get("worker"))
        if on_shard:
            on_shard(len(rows), feed.total)
    return rows, feed.most_in_flight
