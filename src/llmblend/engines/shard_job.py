"""The driver of a Ray job over MixInstruct files' shards (``rank``, ``eval judge``).

:func:`run_shard_job` reads the input once, shard by shard (:mod:`llmblend.engines.shards`): it
checks or writes the manifest of the job's settings and puts each shard not yet finished into Ray's
object store (which spills to disk), so the driver keeps only ids and references, not the
examples, whatever the input's size. It maps those shards over an actor pool
(:func:`~llmblend.engines.ray_session.map_shards`), writes each shard the workers return (the
``records`` column) as it arrives, then merges every shard into OUT in input order and removes the
shard folder. The backends an actor calls get one cluster-wide in-flight limit each
(:mod:`llmblend.engines.limiter`), handed to the actor as its ``limits`` keyword. A killed driver
loses only the shards in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmblend.backends.base import Backend
from llmblend.data.jsonl import Sources, resume_jsonl
from llmblend.engines.limiter import start_limits
from llmblend.engines.ray_session import RayOptions, check_cpus, map_shards, put_shard, ray_session
from llmblend.engines.shards import (
    MergeCount,
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
    on_shard: Callable[[int, int], None] | None = None,
) -> ShardJobResult:
    """Run ``job`` on the shards of the first ``limit`` examples of ``sources`` that ``out`` lacks
    and append them to ``out`` in input order; ``on_shard(done, total)`` as each shard is written.
    Raises LlmblendError when the workers fail (finished shards are kept for the rerun)."""
    started = time.perf_counter()
    done = resume_jsonl(out, "id")
    folder = shard_folder(out)
    planned: list[ShardIds] = []
    rows: list[dict[str, Any]] = []
    startup = 0.0
    with ExitStack() as session:
        todo: list[Any] = []  # references to the shards in Ray's object store
        for shard in pending_shards(sources, done, shard_size, limit):
            if not planned:
                prepare_folder(folder, job.settings)
            planned.append(shard.key)
            if is_finished(folder, shard):
                continue
            if not todo:
                startup = session.enter_context(ray_session(options.address))
            todo.append(put_shard({"shard": shard.index, "examples": shard.data}))
        if todo:
            rows = _map(job, todo, options.fit(len(todo)), folder, on_shard)
    if not planned:
        remove_folder(folder)
        return ShardJobResult([], MergeCount(0, 0), len(done), 0, 0.0, time.perf_counter() - started)
    merged = merge_shards(folder, planned, out, job.failed_record)
    remove_folder(folder)
    shards_reused = len(planned) - len(rows)
    return ShardJobResult(rows, merged, len(done), shards_reused, startup, time.perf_counter() - started)


def _map(
    job: ShardJob,
    todo: list[Any],
    options: RayOptions,
    folder: Path,
    on_shard: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    """The shards of ``todo`` through the job's actors, each written as it comes back; the result
    rows without their records (those went to disk, not into memory)."""
    check_cpus(options)
    kwargs = {**job.actor_kwargs, "limits": start_limits(job.backends)}
    rows: list[dict[str, Any]] = []
    for row in map_shards(todo, job.actor, kwargs, job.columns, options):
        write_shard(folder, row.pop("shard"), row.pop("records"))
        rows.append(row)
        log.info("shard finished by %s", row.get("worker"))
        if on_shard:
            on_shard(len(rows), len(todo))
    return rows
