"""``llmblend generate --engine ray`` (and best-of-n's sampling): instructions answered by Ray workers.

The driver plans as the local engine does (:func:`llmblend.data.generate.plan`: what OUT and
``OUT.failed.jsonl`` already hold is kept, only missing or failed slots are asked again) and cuts
the instructions still to answer into shards of ``shard_size``, fed to Ray Data a few at a time
(:class:`~llmblend.engines.feed.ShardFeed`) and mapped over an actor pool of
:class:`ShardGenerator` actors; each builds the backends once from a
:class:`~llmblend.engines.recipe.SlotsRecipe` and answers its shards with the local engine's own
:func:`~llmblend.data.generate.answer_all`, in an event loop it keeps. Every backend that is an
HTTP API is limited cluster-wide: one :class:`~llmblend.engines.limiter.InFlightLimit` actor per
backend holds its ``concurrency`` for all workers together.

The driver appends each finished shard's records to OUT as it gets them (one flushed write), and
at the end rewrites OUT in input order (:func:`~llmblend.data.generate.compact`), so the result is
the local engine's: the same records (latencies aside) in the same order. A killed driver loses
only the shards in flight; a rerun asks only what OUT lacks. A worker that dies is restarted and
its shard asked again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmblend.backends.base import Generation
from llmblend.backends.config import Slot
from llmblend.backends.fanout import UsageLog
from llmblend.data.generate import (
    GenerateReport,
    Instruction,
    answer_all,
    compact,
    default_in_flight,
    instruction_from_record,
    instruction_record,
    previous_records,
    todo_for,
    write_answers,
)
from llmblend.data.jsonl import dumps
from llmblend.engines.limiter import attach_limits, limit_stats, start_limits
from llmblend.engines.ray_session import (
    RayOptions,
    WorkerStats,
    batch_rows,
    per_worker,
    ray_session,
    worker_label,
)
from llmblend.engines.recipe import SlotsRecipe

#: The columns a :class:`ShardGenerator` returns, one row per shard.
RESULT_COLUMNS = ("shard", "records", "worker", "answered", "failed", "usage", "seconds")


@dataclass(slots=True)
class RayGenerateReport:
    """What one Ray generate job did: the local report's counts and usage, plus per worker, the
    seconds spent joining Ray, each HTTP backend's cluster-wide limit (its ``peak``: the most
    calls that were in flight at once, across all workers), and the most shards in Ray at once."""

    generated: GenerateReport
    startup_seconds: float = 0.0
    shards: int = 0
    read_ahead: int = 0
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    limits: dict[str, dict[str, int]] = field(default_factory=dict)


class ShardGenerator:
    """A Ray Data actor: builds the recipe's backends once, then answers one shard per row.

    Each input row is ``{"shard": index, "todo": JSONL}``, a line per instruction with its
    ``instruction`` record and the ``previous`` record OUT holds for it (or null).
    """

    def __init__(
        self, recipe: SlotsRecipe, limits: dict[str, Any], max_in_flight: int | None, cores: int
    ) -> None:
        self.slots = recipe.build(cores)
        attach_limits((slot.backend for slot in self.slots), limits)
        self.max_in_flight = max_in_flight or default_in_flight(self.slots)
        self.loop = asyncio.new_event_loop()  # one loop for the actor's life: backends keep their clients
        self.worker = worker_label()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        return batch_rows(batch, self.answer_shard, RESULT_COLUMNS)

    def answer_shard(self, row: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        lines = [json.loads(line) for line in str(row["todo"]).split("\n") if line.strip()]
        todo = [
            entry
            for line in lines
            if (entry := todo_for(instruction_from_record(line["instruction"]), self.slots, line["previous"]))
        ]
        records: list[str] = []
        usage = UsageLog()
        failed = 0

        def keep(record: dict[str, Any], generations: list[Generation]) -> None:
            nonlocal failed
            records.append(dumps(record) + "\n")
            usage.add(generations)
            failed += sum(not g.ok for g in generations)

        self.loop.run_until_complete(answer_all(todo, self.max_in_flight, keep))
        return {
            "shard": int(row["shard"]),
            "records": "".join(records),
            "worker": self.worker,
            "answered": len(records),
            "failed": failed,
            "usage": json.dumps(usage.to_json()),
            "seconds": time.perf_counter() - started,
        }


def generate_on_ray(
    recipe: SlotsRecipe,
    items: Sequence[Instruction],
    out: str | Path,
    *,
    shard_size: int = 16,
    num_workers: int = 1,
    max_in_flight: int | None = None,
    address: str | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    max_retries: int = 3,
    on_plan: Callable[[int], None] | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> RayGenerateReport:
    """Answer every instruction of ``items`` with every slot of ``recipe`` into ``out`` on Ray.

    ``address`` as in :func:`~llmblend.engines.ray_rank.rank_file_on_ray`; ``max_in_flight``
    instructions at once per worker (default: from the backends); ``on_plan(done)`` gets what
    earlier runs completed, ``on_shard(answered)`` each finished shard's instruction count.
    """
    options = RayOptions(address, num_workers, cpus_per_worker, max_retries, gpus_per_worker)
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    slots = recipe.build()
    previous = previous_records(out)
    pending = [item for item in items if todo_for(item, slots, previous.get(item.id))]
    report = RayGenerateReport(GenerateReport(len(items), len(items) - len(pending)))
    if on_plan:
        on_plan(report.generated.already_done)
    if pending:
        actor_kwargs = {
            "recipe": recipe,
            "max_in_flight": max_in_flight,
            "cores": max(1, round(cpus_per_worker)),
        }
        shards = _shard_rows(pending, shard_size, previous)
        count = -(-len(pending) // shard_size)
        _run(report, slots, shards, count, out, options.fit(count), actor_kwargs, on_shard)
    compact(out, [item.id for item in items])
    report.generated.wall_s = time.perf_counter() - started
    return report


def _shard_rows(
    pending: Sequence[Instruction], shard_size: int, previous: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The shards of ``pending``, each row made only when the feed asks for it."""
    for index, start in enumerate(range(0, len(pending), shard_size)):
        yield _shard_row(index, pending[start : start + shard_size], previous)


def _shard_row(index: int, items: Sequence[Instruction], previous: dict[str, Any]) -> dict[str, Any]:
    lines = (dumps({"instruction": instruction_record(i), "previous": previous.get(i.id)}) for i in items)
    return {"shard": index, "todo": "".join(line + "\n" for line in lines)}


def _run(
    report: RayGenerateReport,
    slots: Sequence[Slot],
    shards: Iterator[dict[str, Any]],
    count: int,
    out: Path,
    options: RayOptions,
    actor_kwargs: dict[str, Any],
    on_shard: Callable[[int], None] | None,
) -> None:
    """Feed the ``count`` shards to the workers (:class:`~llmblend.engines.feed.ShardFeed`: Ray
    holds only those in flight), appending each one's records to OUT as it comes back."""
    from llmblend.engines.feed import ShardFeed

    rows = []
    with ray_session(options.address) as startup:
        report.startup_seconds = startup
        limits = start_limits(slot.backend for slot in slots)
        feed = ShardFeed(shards, count, ahead=2 * options.num_workers)
        for row in feed.map(ShardGenerator, {**actor_kwargs, "limits": limits}, RESULT_COLUMNS, options):
            records = [json.loads(line) for line in row.pop("records").split("\n") if line.strip()]
            write_answers(out, records, report.generated)
            report.generated.usage.merge(json.loads(row.pop("usage")))
            rows.append(row)
            if on_shard:
                on_shard(row["answered"])
        report.limits = limit_stats(limits)
    report.shards = len(rows)
    report.read_ahead = feed.most_in_flight
    report.workers = per_worker(rows, "answered")
