"""``llmblend rank``: rank every example of a MixInstruct file into an output file, resumably.

Examples are ranked in chunks (all pairs of a chunk batched together, §3.2) and each chunk is
appended to the output as soon as it is ranked, flushed to disk. Rerunning the same command after a
crash or kill skips the examples already in the output (by ``id``), so nothing is ranked twice and
nothing is lost. Each output record is the input record plus a ``ranking`` field::

    "ranking": {"ranker": "...", "strategy": "...", "order": [best index, ...],
                "scores": [one per candidate], "n_forward": 66, "error": null}

A pool-aware ranking (``--pool``) adds ``"terms"``: each term's share of the log-odds that the pick
beats the pool's favourite (or the runner-up), i.e. which terms decided. An LLM judge's ranking
adds ``"usage"``: the calls, tokens, seconds and cost it spent on the example.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from llmblend.data.jsonl import Sources, append_jsonl, resume_jsonl
from llmblend.data.mixinstruct import read_mixinstruct, record_from_example
from llmblend.rank.base import Ranker
from llmblend.types import Example, Ranking

RANKING_FIELD = "ranking"


@dataclass(frozen=True, slots=True)
class RankFileReport:
    """What one ``rank_file`` call did: examples ranked now, found done, forwards, wall time."""

    ranked: int
    already_done: int
    n_forward: int
    failed: int
    seconds: float
    usage: dict[str, Any] | None = None  # an LLM judge's summed calls, tokens, cost (None: no judge)

    @property
    def ranked_now(self) -> int:
        """Examples ranked by this run (all of ``ranked``: unlike a Ray job, none come from shards
        an earlier run finished)."""
        return self.ranked

    @property
    def examples_per_second(self) -> float:
        return self.ranked / self.seconds if self.seconds > 0 else float("nan")

    @property
    def forwards_per_second(self) -> float:
        return self.n_forward / self.seconds if self.seconds > 0 else float("nan")


def ranking_record(example: Example, ranking: Ranking, *, ranker: str, strategy: str) -> dict[str, Any]:
    """The output record of one example: its MixInstruct record plus the ranking."""
    record = record_from_example(example)
    record[RANKING_FIELD] = {
        "ranker": ranker,
        "strategy": strategy,
        "order": list(ranking.order),
        "scores": [round(float(s), 6) for s in ranking.scores],
        "n_forward": ranking.n_forward,
        "error": ranking.error,
    }
    if ranking.terms is not None:
        record[RANKING_FIELD]["terms"] = ranking.terms
    if ranking.usage is not None:
        record[RANKING_FIELD]["usage"] = ranking.usage
    return record


def _chunks(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
    chunk: list[Example] = []
    for example in examples:
        chunk.append(example)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pending_examples(source: Sources, out: str | Path, limit: int | None = None) -> tuple[list[Example], int]:
    """The examples of ``source`` (its first ``limit``) not yet in ``out``, and how many are done.

    A last line of ``out`` cut short by a kill is dropped from the file first.
    """
    done = resume_jsonl(out, "id")
    todo = [example for example in islice(read_mixinstruct(source), limit) if example.id not in done]
    return todo, len(done)


def rank_file(
    ranker: Ranker,
    source: Sources,
    out: str | Path,
    *,
    strategy: str,
    ranker_label: str,
    chunk_size: int = 16,
    limit: int | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> RankFileReport:
    """Rank the examples of ``source`` (its first ``limit``) that ``out`` lacks, appending each
    ranked chunk to ``out``; see :func:`rank_pending`."""
    todo, already_done = pending_examples(source, out, limit)
    return rank_pending(
        ranker,
        todo,
        out,
        already_done=already_done,
        strategy=strategy,
        ranker_label=ranker_label,
        chunk_size=chunk_size,
        on_chunk=on_chunk,
    )


def rank_pending(
    ranker: Ranker,
    todo: Sequence[Example],
    out: str | Path,
    *,
    already_done: int,
    strategy: str,
    ranker_label: str,
    chunk_size: int = 16,
    on_chunk: Callable[[int, int], None] | None = None,
    annotate: Callable[[Example, Ranking], dict[str, Any]] | None = None,
) -> RankFileReport:
    """Rank ``todo`` (from :func:`pending_examples`) chunk by chunk, appending each chunk to ``out``.

    ``on_chunk(done, total)`` is called after each chunk (for progress bars); ``annotate(example,
    ranking)`` gives more top-level fields for an output record (best-of-n's ``best``). Per-example
    failures are written as rankings with ``error`` set, not raised.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ranked = n_forward = failed = 0
    usage: dict[str, Any] | None = None
    for chunk, rankings, records in ranked_chunks(
        ranker, todo, strategy=strategy, ranker_label=ranker_label, chunk_size=chunk_size, annotate=annotate
    ):
        append_jsonl(out, records)
        ranked += len(chunk)
        n_forward += sum(r.n_forward for r in rankings)
        failed += sum(not r.ok for r in rankings)
        usage = add_usage(usage, (r.usage for r in rankings if r.usage is not None))
        if on_chunk:
            on_chunk(ranked, len(todo))
    return RankFileReport(ranked, already_done, n_forward, failed, time.perf_counter() - started, usage)


def ranked_chunks(
    ranker: Ranker,
    todo: Sequence[Example],
    *,
    strategy: str,
    ranker_label: str,
    chunk_size: int = 16,
    annotate: Callable[[Example, Ranking], dict[str, Any]] | None = None,
) -> Iterator[tuple[list[Example], Sequence[Ranking], list[dict[str, Any]]]]:
    """Rank ``todo`` ``chunk_size`` examples at a time: each chunk, its rankings and its output records.

    Every engine ranks through this (the local one in :func:`rank_pending`, the Ray one in each
    worker), so their records are the same.
    """
    for chunk in _chunks(todo, chunk_size):
        rankings: Sequence[Ranking] = ranker.rank(chunk, strategy=strategy)
        records = [
            ranking_record(ex, r, ranker=ranker_label, strategy=strategy)
            | (annotate(ex, r) if annotate else {})
            for ex, r in zip(chunk, rankings, strict=True)
        ]
        yield chunk, rankings, records


#: The usage fields that add up over examples.
SUMMED_USAGE = ("calls", "cached", "prompt_tokens", "completion_tokens", "cost_usd")


def add_usage(total: dict[str, Any] | None, usages: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """``total`` plus the summable fields of each ranking's usage (None while there were none)."""
    for usage in usages:
        total = {} if total is None else total
        for key in SUMMED_USAGE:
            if key in usage:
                total[key] = total.get(key, 0) + usage[key]
    return total
