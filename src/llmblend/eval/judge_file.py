"""``llmblend eval judge``: GPT-Rank (LLM-Blender §5) of a whole file by an LLM judge, resumably.

The judge compares every pair of each example's candidates in both orders (MT-bench's rule cancels
its position bias, :func:`~llmblend.eval.judge.combine_orderings`) and each example is written to
OUT as its MixInstruct record with the judge's verdicts as ``cmp_results`` — the field MixInstruct's
own ChatGPT verdicts live in — so ``eval report`` (its GPT-Rank column), ``train pool`` and
``train ranker`` read the judged file as they read MixInstruct. Each record also gets a ``judge``
field::

    "judge": {"judge": "judge:gpt-4o", "prompt": "mt-bench", "pairs": 55, "decided": 41, "ties": 12,
              "inconsistent": 9, "errors": 2, "error": "...", "recorded": {"pairs": 55, "agreed": 38}}

``recorded`` is there when the input record already had ``cmp_results`` (MixInstruct's ChatGPT
verdicts, Vicuna-80's GPT-4 reviews): of the pairs both decided, how many the judge decided alike.
Pairs are asked as the judge ranker asks them, so ``rank -r judge:`` and ``train pool --judge``
reuse this run's cached verdicts. OUT is appended chunk by chunk; a rerun judges only the examples
OUT lacks (and the judge's cache keeps every finished ordering of a chunk cut short).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from llmblend.data.jsonl import Sources, append_jsonl, read_jsonl
from llmblend.data.mixinstruct import example_from_record, record_from_example
from llmblend.eval.judge import JudgeUsage, PairVerdict, cmp_results
from llmblend.rank.judge_ranker import JudgeRanker
from llmblend.rank.rank_file import pending_examples
from llmblend.types import Example

JUDGE_FIELD = "judge"
_SIDES = {"A is better": "a", "B is better": "b"}


def judge_label(spec: str) -> str:
    """How the records name the judge of a ``MODELS.yaml[#NAME]`` spec (as ``rank -r`` names it)."""
    return f"judge:{spec}"


@dataclass(frozen=True, slots=True)
class JudgeFileReport:
    """What one run did: examples judged now, found done, failed (a pair without a verdict), the
    judge's calls and tokens, and the wall time."""

    judged: int
    already_done: int
    failed: int
    usage: JudgeUsage
    seconds: float

    @property
    def examples_per_second(self) -> float:
        return self.judged / self.seconds if self.seconds > 0 else float("nan")


def judged_record(
    example: Example, verdicts: Sequence[PairVerdict], judge_label: str, prompt: str
) -> dict[str, Any]:
    """The output record of one example: its MixInstruct record with the judge's ``cmp_results``,
    plus the :data:`JUDGE_FIELD` counts (see the module docstring)."""
    errors = [v.error for v in verdicts if v.winner == "error"]
    summary: dict[str, Any] = {
        "judge": judge_label,
        "prompt": prompt,
        "pairs": len(verdicts),
        "decided": sum(v.winner in ("a", "b") for v in verdicts),
        "ties": sum(v.winner == "tie" for v in verdicts),
        "inconsistent": sum(not v.consistent and v.winner != "error" for v in verdicts),
        "errors": len(errors),
        "error": errors[0] if errors else None,
    }
    if example.cmp_results:
        summary["recorded"] = agreement_with(example.cmp_results, verdicts)
    record = record_from_example(replace(example, cmp_results=cmp_results(verdicts) or None))
    record[JUDGE_FIELD] = summary
    return record


def judge_failed(record: dict[str, Any]) -> bool:
    """Whether a judged record has a pair left without a verdict (a failed or unreadable call)."""
    return (record.get(JUDGE_FIELD) or {}).get("errors", 0) > 0


def agreement_with(recorded: dict[str, str], verdicts: Sequence[PairVerdict]) -> dict[str, int]:
    """Of the pairs both ``recorded`` (``cmp_results``) and the judge decided, how many alike."""
    sides = {}
    for key, verdict in recorded.items():
        first, _, second = key.partition(",")
        if verdict in _SIDES:
            winner = first if _SIDES[verdict] == "a" else second
            sides[frozenset((first, second))] = winner
    pairs = agreed = 0
    for v in verdicts:
        said = sides.get(frozenset((v.model_a, v.model_b)))
        if said is None or v.winner not in ("a", "b"):
            continue
        pairs += 1
        agreed += said == (v.model_a if v.winner == "a" else v.model_b)
    return {"pairs": pairs, "agreed": agreed}


def judged_chunks(
    judge: JudgeRanker, examples: Sequence[Example], chunk_size: int, judge_label: str
) -> Iterator[list[dict[str, Any]]]:
    """The output records of ``examples``, ``chunk_size`` examples at a time (every pair of a chunk
    goes to the judge at once, at most its backend's ``concurrency`` in flight)."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    prompt = judge.judge.template.name
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        verdicts = judge.pair_verdicts(chunk)
        yield [judged_record(ex, v, judge_label, prompt) for ex, v in zip(chunk, verdicts, strict=True)]


def judge_file(
    judge: JudgeRanker,
    source: Sources,
    out: str | Path,
    *,
    judge_label: str,
    limit: int | None = None,
    chunk_size: int = 4,
    on_chunk: Callable[[int, int], None] | None = None,
) -> JudgeFileReport:
    """Judge the examples of ``source`` (its first ``limit``) that ``out`` lacks and append them to
    ``out``; ``on_chunk(done, total)`` after each chunk is written."""
    todo, done = pending_examples(source, out, limit)
    return judge_pending(
        judge, todo, out, already_done=done, judge_label=judge_label, chunk_size=chunk_size, on_chunk=on_chunk
    )


def judge_pending(
    judge: JudgeRanker,
    todo: Sequence[Example],
    out: str | Path,
    *,
    already_done: int,
    judge_label: str,
    chunk_size: int = 4,
    on_chunk: Callable[[int, int], None] | None = None,
) -> JudgeFileReport:
    """Judge ``todo`` (the examples :func:`~llmblend.rank.rank_file.pending_examples` found) and
    append them to ``out`` chunk by chunk."""
    started = time.perf_counter()
    before = replace(judge.judge.usage)
    judged = failed = 0
    for records in judged_chunks(judge, todo, chunk_size, judge_label):
        append_jsonl(out, records)
        judged += len(records)
        failed += sum(map(judge_failed, records))
        if on_chunk:
            on_chunk(judged, len(todo))
    spent = judge.judge.usage - before
    return JudgeFileReport(judged, already_done, failed, spent, time.perf_counter() - started)


# ---------------------------------------------------------------- the summary of a judged file


@dataclass(slots=True)
class ModelStanding:
    """One model across a judged file: its mean GPT-Rank (1 = best), wins, losses and ties."""

    examples: int = 0
    rank_total: float = 0.0
    wins: int = 0
    losses: int = 0
    ties: int = 0

    @property
    def mean_rank(self) -> float:
        return self.rank_total / self.examples if self.examples else float("nan")

    @property
    def win_rate(self) -> float:
        """Wins over decided pairs (ties left out)."""
        decided = self.wins + self.losses
        return self.wins / decided if decided else float("nan")


@dataclass(slots=True)
class JudgedSummary:
    """A judged file (:func:`summarize`): every model's standing, best first, and the judge's
    agreement with the verdicts the input already had (on ``recorded_examples`` examples)."""

    examples: int = 0
    failed: int = 0
    models: dict[str, ModelStanding] = field(default_factory=dict)
    recorded_examples: int = 0
    recorded_pairs: int = 0
    recorded_agreed: int = 0

    @property
    def agreement(self) -> float:
        return self.recorded_agreed / self.recorded_pairs if self.recorded_pairs else float("nan")


def summarize(path: str | Path) -> JudgedSummary:
    """The :class:`JudgedSummary` of a file ``llmblend eval judge`` wrote."""
    summary = JudgedSummary()
    standings: dict[str, ModelStanding] = defaultdict(ModelStanding)
    for record in read_jsonl(path):
        counts = record.get(JUDGE_FIELD) or {}
        summary.examples += 1
        summary.failed += counts.get("errors", 0) > 0
        recorded = counts.get("recorded") or {}
        summary.recorded_examples += "recorded" in counts
        summary.recorded_pairs += recorded.get("pairs", 0)
        summary.recorded_agreed += recorded.get("agreed", 0)
        _add_standings(standings, example_from_record(record))
    summary.models = dict(sorted(standings.items(), key=lambda item: (item[1].mean_rank, item[0])))
    return summary


def _add_standings(standings: dict[str, ModelStanding], example: Example) -> None:
    models = example.models
    wins = dict.fromkeys(models, 0)
    losses = dict.fromkeys(models, 0)
    for key, verdict in (example.cmp_results or {}).items():
        first, _, second = key.partition(",")
        if verdict in _SIDES:
            winner, loser = (first, second) if _SIDES[verdict] == "a" else (second, first)
            wins[winner] += 1
            losses[loser] += 1
        else:
            standings[first].ties += 1
            standings[second].ties += 1
    ranks = rankdata(-np.array([wins[m] - losses[m] for m in models], dtype=float), method="average")
    for model, rank in zip(models, ranks, strict=True):
        standing = standings[model]
        standing.examples += 1
        standing.rank_total += float(rank)
        standing.wins += wins[model]
        standing.losses += losses[model]
