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
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmblend.data.jsonl import dumps
from llmblend.data.mixinstruct import example_from_record
from llmblend.engines.recipe import RankerRecipe
from llmblend.engines.shards import (
    MergeCount,
    Shard,
    is_finished,
    merge_shards,
    plan_shards,
    prepare_folder,
    remove_folder,
    shard_folder,
    write_shard,
)
from llmblend.errors import LlmblendError, MissingExtraError
from llmblend.rank.rank_file import add_usage, ranked_chunks

log = logging.getLogger(__name__)

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


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`MissingExtraError` naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtraError("ray[data]", "ray", "llmblend rank --engine ray") from None
    return ray


@dataclass(slots=True)
class WorkerStats:
    """What one worker (an actor process) ranked in this run."""

    shards: int = 0
    records: int = 0
    failed: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RayRankReport:
    """What one Ray rank job did.

    ``ranked``: records appended to OUT by this run, of which ``reused`` came from shards an
    earlier, interrupted run had finished; ``startup_seconds``: joining or starting Ray;
    ``failed``: those records whose ranking has an error; ``seconds``: the whole job, reading and
    merging included.
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

    def __init__(self, recipe: RankerRecipe, strategy: str | None, chunk_size: int) -> None:
        import ray

        self.ranker, self.label = recipe.build()
        self.strategy = recipe.strategy_for(self.ranker, strategy)
        self.chunk_size = chunk_size
        context = ray.get_runtime_context()
        self.worker = f"{context.get_actor_id()[:8]} pid {os.getpid()} on {context.get_node_id()[:8]}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {column: [] for column in RESULT_COLUMNS}
        for index, text in zip(batch["shard"], batch["examples"], strict=True):
            for column, value in self.rank_shard(int(index), str(text)).items():
                rows[column].append(value)
        return rows

    def rank_shard(self, index: int, text: str) -> dict[str, Any]:
        started = time.perf_counter()
        examples = [example_from_record(json.loads(line)) for line in text.split("\n") if line.strip()]
        lines: list[str] = []
        failed = n_forward = 0
        usage: dict[str, Any] | None = None
        for _, rankings, records in ranked_chunks(
            self.ranker, examples, strategy=self.strategy, ranker_label=self.label, chunk_size=self.chunk_size
        ):
            lines += [dumps(record) + "\n" for record in records]
            failed += sum(not r.ok for r in rankings)
            n_forward += sum(r.n_forward for r in rankings)
            usage = add_usage(usage, (r.usage for r in rankings if r.usage is not None))
        return {
            "shard": index,
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
    source: str | Path,
    out: str | Path,
    *,
    strategy: str | None = None,
    shard_size: int = 64,
    num_workers: int = 1,
    chunk_size: int = 16,
    limit: int | None = None,
    address: str | None = None,
    cpus_per_worker: float = 1,
    max_retries: int = 3,
    on_shard: Callable[[int, int], None] | None = None,
) -> RayRankReport:
    """Rank the examples of ``source`` (its first ``limit``) that ``out`` lacks on Ray, then append
    them to ``out`` in input order.

    ``strategy`` None is the ranker's default (as ``llmblend rank``); ``address`` None starts a
    local Ray for the job, ``"auto"`` or ``"ray://host:port"`` joins a cluster (or the Ray this
    process already joined). ``on_shard(done, total)`` is called as each shard is written.
    Raises :class:`MissingExtraError` without Ray, ValueError for bad settings, and
    :class:`LlmblendError` when the workers fail (finished shards are kept for the rerun).
    """
    for name, value in (("shard_size", shard_size), ("num_workers", num_workers), ("chunk_size", chunk_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
    started = time.perf_counter()
    recipe.check()
    plan = plan_shards(source, out, shard_size, limit)
    folder = shard_folder(out)
    if not plan.shards:
        remove_folder(folder)
        return _report(plan.already_done, started, 0.0, [], MergeCount(0, 0), 0)
    prepare_folder(folder, _settings(recipe, source, shard_size, strategy))
    todo = [shard for shard in plan.shards if not is_finished(folder, shard)]
    rows: list[dict[str, Any]] = []
    startup = 0.0
    if todo:
        num_workers = min(num_workers, len(todo))  # a worker without a shard would idle
        with _ray_session(address, num_workers * cpus_per_worker) as startup:
            shards = _run_shards(
                todo, recipe, strategy, chunk_size, num_workers, cpus_per_worker, max_retries
            )
            for row in shards:
                write_shard(folder, row.pop("shard"), row.pop("records"))
                rows.append(row)  # the statistics only: records go to disk, not into memory
                log.info("shard finished: %d records by %s", row["ranked"], row["worker"])
                if on_shard:
                    on_shard(len(rows), len(todo))
    merged = merge_shards(folder, plan.shards, out)
    remove_folder(folder)
    return _report(plan.already_done, started, startup, rows, merged, len(plan.shards) - len(todo))


def _settings(recipe: RankerRecipe, source: str | Path, shard_size: int, strategy: str | None) -> dict:
    return {
        "source": str(Path(source).resolve()),
        "shard_size": shard_size,
        "strategy": strategy,
        "recipe": recipe.settings(),
    }


@contextmanager
def _ray_session(address: str | None, cpus_needed: float) -> Iterator[float]:
    """Join Ray (``address``), start a local one (None), or use the one this process already joined;
    shut it down afterwards only if this call started the connection."""
    ray = require_ray()
    started = time.perf_counter()
    owned = not ray.is_initialized()
    if owned:
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if address is None:
            options["include_dashboard"] = False
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            raise LlmblendError(
                f"could not join the Ray cluster at {address}: {exc}. Check the address; a cluster with "
                "token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its token "
                "(RAY_AUTH_TOKEN, or ~/.ray/auth_token) here"
            ) from None
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < cpus_needed:
            message = (
                f"--num-workers needs {cpus_needed:g} CPUs (one per worker) and this Ray cluster has {cpus:g}"
            )
            if address is None:
                raise ValueError(f"{message}: lower --num-workers")
            log.warning("%s: workers wait until the cluster grows", message)
        yield time.perf_counter() - started
    finally:
        if owned:
            ray.shutdown()


def _run_shards(
    todo: list[Shard],
    recipe: RankerRecipe,
    strategy: str | None,
    chunk_size: int,
    num_workers: int,
    cpus_per_worker: float,
    max_retries: int,
) -> Iterator[dict[str, Any]]:
    """Each shard's result row, as workers finish them (in any order)."""
    ray = require_ray()
    items = [{"shard": shard.index, "examples": shard.input_text()} for shard in todo]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts / max_task_retries only as (deprecated) extra remote args
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ranked = dataset.map_batches(
            ShardRanker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            fn_constructor_kwargs={"recipe": recipe, "strategy": strategy, "chunk_size": chunk_size},
            num_cpus=cpus_per_worker,
            max_restarts=max_retries,
            max_task_retries=max_retries,
        )
    try:
        for row in ranked.iter_rows():
            yield {column: _plain(row[column]) for column in RESULT_COLUMNS}
    except ray.exceptions.RayError as exc:
        raise LlmblendError(
            f"the Ray workers failed (finished shards are kept for a rerun): {_last_line(exc)}"
        ) from exc


def _last_line(exc: Exception) -> str:
    """The gist of a Ray error: its last line, which for a worker's traceback is the original error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _plain(value: Any) -> Any:
    """A numpy scalar from Ray Data as the plain Python value."""
    return value.item() if hasattr(value, "item") else value


def _report(
    already_done: int,
    started: float,
    startup: float,
    rows: list[dict[str, Any]],
    merged: MergeCount,
    shards_reused: int,
) -> RayRankReport:
    workers: dict[str, WorkerStats] = {}
    usage: dict[str, Any] | None = None
    for row in rows:
        stats = workers.setdefault(row["worker"], WorkerStats())
        stats.shards += 1
        stats.records += row["ranked"]
        stats.failed += row["failed"]
        stats.seconds += row["seconds"]
        if row["usage"]:
            usage = add_usage(usage, [json.loads(row["usage"])])
    return RayRankReport(
        ranked=merged.records,
        already_done=already_done,
        reused=merged.records - sum(row["ranked"] for row in rows),
        failed=merged.failed,
        n_forward=sum(row["n_forward"] for row in rows),
        shards_run=len(rows),
        shards_reused=shards_reused,
        seconds=time.perf_counter() - started,
        startup_seconds=startup,
        strategy=rows[0]["strategy"] if rows else None,
        workers=dict(sorted(workers.items())),
        usage=usage,
    )
