"""``llmblend eval judge --engine ray``: GPT-Rank of a file's shards by Ray workers' LLM judges.

Each :class:`ShardJudge` actor builds the judge of a ``MODELS.yaml[#NAME]`` spec once (as the local
command does) and judges its shards through :func:`llmblend.eval.judge_file.judged_chunks`, so the
records are the local engine's. The driver (:func:`llmblend.engines.shard_job.run_shard_job`) keeps
the judge's ``concurrency`` for all workers together, writes finished shards as they come and
merges them into OUT in input order; a rerun redoes only the unfinished shards, and the judge's
cache (a file every worker appends to, on one machine or a shared filesystem) saves the orderings a
killed shard had finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llmblend.data.jsonl import Sources, dumps
from llmblend.engines.limiter import attach_limits
from llmblend.engines.ray_session import RayOptions, WorkerStats, batch_rows, per_worker, worker_label
from llmblend.engines.shard_job import ShardJob, ShardJobResult, run_shard_job
from llmblend.engines.shards import examples_of, source_setting
from llmblend.eval.judge import JudgeUsage
from llmblend.eval.judge_file import judge_failed, judge_label, judged_chunks

#: The columns a :class:`ShardJudge` returns, one row per shard.
RESULT_COLUMNS = ("shard", "records", "worker", "judged", "failed", "seconds", "usage")


@dataclass(frozen=True, slots=True)
class RayJudgeReport:
    """What one Ray judge job did: records appended to OUT (``reused`` of them from shards an
    earlier run finished), failed ones, the judge's usage summed over workers, per worker."""

    judged: int
    already_done: int
    reused: int
    failed: int
    shards_run: int
    shards_reused: int
    seconds: float
    startup_seconds: float
    usage: JudgeUsage
    workers: dict[str, WorkerStats] = field(default_factory=dict)

    @property
    def judged_now(self) -> int:
        return self.judged - self.reused

    @property
    def records_per_second(self) -> float:
        return self.judged_now / self.seconds if self.seconds > 0 else float("nan")


class ShardJudge:
    """A Ray Data actor: builds the spec's judge once, then judges one shard per row."""

    def __init__(self, spec: str, chunk_size: int, limits: dict[str, Any] | None = None) -> None:
        from llmblend.rank.judge_ranker import judge_from_spec

        self.judge, _ = judge_from_spec(spec)
        attach_limits([self.judge.backend], limits or {})
        self.label = judge_label(spec)
        self.chunk_size = chunk_size
        self.worker = worker_label()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        return batch_rows(batch, self.judge_shard, RESULT_COLUMNS)

    def judge_shard(self, row: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        examples = examples_of(row["examples"])
        before = replace(self.judge.judge.usage)
        lines: list[str] = []
        failed = 0
        for records in judged_chunks(self.judge, examples, self.chunk_size, self.label):
            lines += [dumps(record) + "\n" for record in records]
            failed += sum(map(judge_failed, records))
        return {
            "shard": int(row["shard"]),
            "records": "".join(lines),
            "worker": self.worker,
            "judged": len(examples),
            "failed": failed,
            "seconds": time.perf_counter() - started,
            "usage": json.dumps(asdict(self.judge.judge.usage - before)),
        }


def judge_file_on_ray(
    spec: str,
    source: Sources,
    out: str | Path,
    *,
    shard_size: int = 16,
    num_workers: int = 1,
    chunk_size: int = 4,
    limit: int | None = None,
    address: str | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    max_retries: int = 3,
    on_shard: Callable[[int, int], None] | None = None,
) -> RayJudgeReport:
    """Judge every pair of the examples of ``source`` (its first ``limit``) that ``out`` lacks with
    the judge of ``spec`` (``MODELS.yaml[#NAME]``) on Ray, then append them to ``out`` in input order.

    ``address`` as in :func:`llmblend.engines.ray_rank.rank_file_on_ray`. Raises
    :class:`MissingExtraError` without Ray, ValueError for bad settings, and LlmblendError when the
    workers fail (finished shards are kept for the rerun).
    """
    from llmblend.rank.judge_ranker import judge_from_spec

    options = RayOptions(address, num_workers, cpus_per_worker, max_retries, gpus_per_worker)
    for name, value in (("shard_size", shard_size), ("chunk_size", chunk_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    judge, settings = judge_from_spec(spec)  # fails now, before any worker starts, on a bad spec
    job = ShardJob(
        ShardJudge,
        {"spec": spec, "chunk_size": chunk_size},
        RESULT_COLUMNS,
        {
            "source": source_setting(source),
            "shard_size": shard_size,
            "judge": spec,
            "prompt": settings.prompt,
            "soft": settings.soft,
        },
        backends=[judge.backend],
        failed_record=judge_failed,
    )
    result = run_shard_job(job, source, out, options, shard_size=shard_size, limit=limit, on_shard=on_shard)
    return _report(result)


def _report(result: ShardJobResult) -> RayJudgeReport:
    rows = result.rows
    usage = sum((JudgeUsage(**json.loads(row["usage"])) for row in rows), JudgeUsage())
    return RayJudgeReport(
        judged=result.merged.records,
        already_done=result.already_done,
        reused=result.merged.records - sum(row["judged"] for row in rows),
        failed=result.merged.failed,
        shards_run=len(rows),
        shards_reused=result.shards_reused,
        seconds=result.seconds,
        startup_seconds=result.startup_seconds,
        usage=usage,
        workers=per_worker(rows, "judged"),
    )
