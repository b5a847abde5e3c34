"""The driver of a Ray job over a MixInstruct file's shards (``rank``, ``eval judge``).

:func:`run_shard_job` plans the shards of what OUT lacks (:mod:`llmblend.engines.shards`), checks
or writes the manifest of the job's settings, maps the shards not yet finished over an actor pool
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmblend.backends.base import Backend
from llmblend.engines.limiter import start_limits
from llmblend.engines.ray_session import RayOptions, map_shards, ray_session
from llmblend.engines.shards import (
    MergeCount,
    is_finished,
    merge_shards,
    plan_shards,
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
    source: str | Path,
    out: str | Path,
    options: RayOptions,
    *,
    shard_size: int,
    limit: int | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> ShardJobResult:
    """Run ``job`` on the shards of the first ``limit`` examples of ``source`` that ``out`` lacks
    and append them to ``out`` in input order; ``on_shard(done, total)`` as each shard is written.
    Raises LlmblendError when the workers fail (finished shards are kept for the rerun)."""
    started = time.perf_counter()
    plan = plan_shards(source, out, shard_size, limit)
    folder = shard_folder(out)
    if not plan.shards:
        remove_folder(folder)
        return ShardJobResult([], MergeCount(0, 0), plan.already_done, 0, 0.0, time.perf_counter() - started)
    prepare_folder(folder, job.settings)
    todo = [shard for shard in plan.shards if not is_finished(folder, shard)]
    rows: list[dict[str, Any]] = []
    startup = 0.0
    if todo:
        options = options.fit(len(todo))
        with ray_session(options.address, options.cpus_needed) as startup:
            kwargs = {**job.actor_kwargs, "limits": start_limits(job.backends)}
            inputs = [{"shard": shard.index, "examples": shard.data} for shard in todo]
            for row in map_shards(inputs, job.actor, kwargs, job.columns, options):
                write_shard(folder, row.pop("shard"), row.pop("records"))
                rows.append(row)  # the statistics only: records go to disk, not into memory
                log.info("shard finished by %s", row.get("worker"))
                if on_shard:
                    on_shard(len(rows), len(todo))
    merged = merge_shards(folder, plan.shards, out, job.failed_record)
    remove_folder(folder)
    shards_reused = len(plan.shards) - len(todo)
    return ShardJobResult(
        rows, merged, plan.already_done, shards_reused, startup, time.perf_counter() - started
    )
