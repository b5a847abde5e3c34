"""``llmblend rank --engine ray``: the shards of a rank job ranked by a pool of Ray actors.

The driver reads the input (``.gz``/``.xz`` too, with llmblend's own reader, so records reach the
workers exactly as the local engine sees them) and cuts the examples OUT lacks into fixed shards
(:mod:`llmblend.engines.shards`). Ray Data maps the shards, one block each, over an actor pool of
``num_workers`` :class:`ShardRanker` actors; each builds the ranker once from a
:class:`~llmblend.engines.recipe.RankerRecipe` and ranks its shards through
:func:`llmblend.rank.rank_file.ranked_chunks`, as the local engine does. The driver writes each
shard it gets back to ``OUT.shards/`` (atomically, so no shared filesystem is needed and each
shard is written once), then merges them into OUT in input order.

The output is byte for byte the local engine's: the same records, serialized by the same
``dumps``, in the same order (PairRanker's scores do not depend on batch-mates, on any runtime).
A killed driver loses only the shards in flight; a worker that dies is restarted by Ray and its
shard retried (``max_retries`` times). A failed example stays as data: a ranking with ``error``.
An LLM judge's backend keeps its ``concurrency`` for all workers together
(:mod:`llmblend.engines.limiter`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmblend.data.jsonl import Sources, dumps
from llmblend.engines.limiter import attach_limits
from llmblend.engines.ray_session import RayOptions, WorkerStats, batch_rows, per_worker, worker_label
from llmblend.engines.recipe import RankerRecipe, judge_backends_of
from llmblend.engines.shard_job import ShardJob, ShardJobResult, run_shard_job
from llmblend.engines.shards import examples_of, source_setting
from llmblend.rank.rank_file import add_usage, ranked_chunks
from llmblend.types import Example, Ranking

#: What a job may add to each output record (picklable, so it can travel to the workers).
Annotate = Callable[[Example, Ranking], dict[str, Any]]

#: The columns a :class:`ShardRanker` returns, one row per shard.
RESULT_COLUMNS = (
    "shard",
    "records",
    "worker",
    "ranked",
    "failed",
    "n_forward",
    "seconds",
    "strategy",
    "usage",
)


@dataclass(frozen=True, slots=True)
class RayRankReport:
    """What one Ray rank job did.

    ``ranked``: records appended to OUT by this run, of which ``reused`` came from shards an
    earlier, interrupted run had finished; ``startup_seconds``: joining or starting Ray;
    ``failed``: those records whose ranking has an error; ``seconds``: the whole job, reading and
    merging included; ``read_ahead``: the most shards in Ray at once (the driver reads no further
    ahead of the workers).
    """

    ranked: int
    already_done: int
    reused: int
    failed: int
    n_forward: int
    shards_run: int
    shards_reused: int
    seconds: float
    startup_seconds: float
    strategy: str | None
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    read_ahead: int = 0

    @property
    def ranked_now(self) -> int:
        return self.ranked - self.reused

    @property
    def records_per_second(self) -> float:
        return self.ranked_now / self.seconds if self.seconds > 0 else float("nan")


class ShardRanker:
    """A Ray Data actor: builds the recipe's ranker once, then ranks one shard per row.

    Each input row is ``{"shard": index, "examples": JSONL text}``; each output row holds the
    shard's output records as JSONL text (:data:`RESULT_COLUMNS`).
    """

    def __init__(
        self,
        recipe: RankerRecipe,
        strategy: str | None,
        chunk_size: int,
        annotate: Annotate | None = None,
        limits: dict[str, Any] | None = None,
    ) -> None:
        self.ranker, self.label = recipe.build()
        attach_limits(judge_backends_of(self.ranker), limits or {})
        self.strategy = recipe.strategy_for(self.ranker, strategy)
        self.chunk_size = chunk_size
        self.annotate = annotate
        self.worker = worker_label()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        return batch_rows(batch, self.rank_shard, RESULT_COLUMNS)

    def rank_shard(self, row: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        examples = examples_of(row["examples"])
        lines: list[str] = []
        failed = n_forward = 0
        usage: dict[str, Any] | None = None
        for _, rankings, records in ranked_chunks(
            self.ranker,
            examples,
            strategy=self.strategy,
            ranker_label=self.label,
            chunk_size=self.chunk_size,
            annotate=self.annotate,
        ):
            lines += [dumps(record) + "\n" for record in records]
            failed += sum(not r.ok for r in rankings)
            n_forward += sum(r.n_forward for r in rankings)
            usage = add_usage(usage, (r.usage for r in rankings if r.usage is not None))
        return {
            "shard": int(row["shard"]),
            "records": "".join(lines),
            "worker": self.worker,
            "ranked": len(examples),
            "failed": failed,
            "n_forward": n_forward,
            "seconds": time.perf_counter() - started,
            "strategy": self.strategy,
            "usage": "" if usage is None else json.dumps(usage),
        }


def rank_file_on_ray(
    recipe: RankerRecipe,
    source: Sources,
    out: str | Path,
    *,
    strategy: str | None = None,
    shard_size: int = 64,
    num_workers: int = 1,
    chunk_size: int = 16,
    limit: int | None = None,
    address: str | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    max_retries: int = 3,
    annotate: Annotate | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> RayRankReport:
    """Rank the examples of ``source`` (its first ``limit``) that ``out`` lacks on Ray, then append
    them to ``out`` in input order.

    ``strategy`` None is the ranker's default (as ``llmblend rank``); ``address`` as in
    :class:`~llmblend.engines.ray_session.RayOptions` (or the Ray this process already joined).
    ``annotate(example, ranking)`` adds fields to each output record (as in
    :func:`~llmblend.rank.rank_file.rank_pending`); ``on_shard(done, total)`` is called as each
    shard is written.
    Raises :class:`MissingExtraError` without Ray, ValueError for bad settings, and
    :class:`LlmblendError` when the workers fail (finished shards are kept for the rerun).
    """
    options = RayOptions(address, num_workers, cpus_per_worker, max_retries, gpus_per_worker)
    for name, value in (("shard_size", shard_size), ("chunk_size", chunk_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    recipe.check()
    job = ShardJob(
        ShardRanker,
        {"recipe": recipe, "strategy": strategy, "chunk_size": chunk_size, "annotate": annotate},
        RESULT_COLUMNS,
        _settings(recipe, source, shard_size, strategy, annotate),
        backends=recipe.judge_backends(),
    )
    return _report(
        run_shard_job(job, source, out, options, shard_size=shard_size, limit=limit, on_shard=on_shard)
    )


def _settings(
    recipe: RankerRecipe, source: Sources, shard_size: int, strategy: str | None, annotate: Annotate | None
) -> dict:
    settings = {
        "source": source_setting(source),
        "shard_size": shard_size,
        "strategy": strategy,
        "recipe": recipe.settings(),
    }
    if annotate is not None:
        settings["annotate"] = f"{annotate.__module__}.{annotate.__qualname__}"
    return settings


def _report(result: ShardJobResult) -> RayRankReport:
    rows = result.rows
    usage: dict[str, Any] | None = None
    for row in rows:
        if row["usage"]:
            usage = add_usage(usage, [json.loads(row["usage"])])
    return RayRankReport(
        ranked=result.merged.records,
        already_done=result.already_done,
        reused=result.merged.records - sum(row["ranked"] for row in rows),
        failed=result.merged.failed,
        n_forward=sum(row["n_forward"] for row in rows),
        shards_run=len(rows),
        shards_reused=result.shards_reused,
        seconds=result.seconds,
        startup_seconds=result.startup_seconds,
        strategy=rows[0]["strategy"] if rows else None,
        workers=per_worker(rows, "ranked"),
        usage=usage,
        read_ahead=result.read_ahead,
    )
