"""Labelled pairs for ranker training and dev evaluation (LLM-Blender §3.1).

From a MixInstruct file: per example, duplicate answers are dropped; then, for each metric, up to
``pairs_per_example`` random pairs whose scores differ are drawn, and every drawn pair gets one sign
label per metric (+1: ``first`` scores higher, −1: lower, 0: tie or missing score → no loss for that
metric). From a preference file: one pair per record, ``chosen`` first, one "preference" task.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmblend.data.mixinstruct import read_mixinstruct
from llmblend.data.preferences import read_preferences
from llmblend.data.validate import detect_format
from llmblend.errors import LlmblendError
from llmblend.rank.base import PairQuery
from llmblend.types import Candidate, Example, prompt_text

PREFERENCE_TASK = "preference"


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """An ordered pair with one label per task: +1 ``first`` better, −1 worse, 0 unknown."""

    query: PairQuery
    labels: tuple[int, ...]

    def swapped(self) -> LabelledPair:
        """The same pair in the other order, labels negated (training randomises the order)."""
        q = self.query
        return LabelledPair(PairQuery(q.source, q.second, q.first), tuple(-label for label in self.labels))

    @property
    def overall(self) -> int:
        """The sign of the summed labels: the pair's label when tasks are averaged (0: no verdict)."""
        total = sum(self.labels)
        return (total > 0) - (total < 0)


@dataclass(frozen=True, slots=True)
class PairSet:
    """Pairs and the task (metric) names their labels refer to, in head-output order."""

    pairs: list[LabelledPair]
    task_names: tuple[str, ...]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _unique_by_text(candidates: Iterable[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    unique = []
    for candidate in candidates:
        if candidate.text not in seen:
            seen.add(candidate.text)
            unique.append(candidate)
    return unique


def example_pairs(
    example: Example, metrics: Sequence[str], pairs_per_example: int, rng: random.Random
) -> list[LabelledPair]:
    """Up to ``pairs_per_example`` pairs per metric for one example, each labelled for all metrics."""
    candidates = _unique_by_text(example.candidates)
    chosen: dict[tuple[int, int], None] = {}
    for metric in metrics:
        eligible = [
            (i, j)
            for i, j in itertools.combinations(range(len(candidates)), 2)
            if metric in candidates[i].scores
            and metric in candidates[j].scores
            and candidates[i].scores[metric] != candidates[j].scores[metric]
        ]
        for pair in rng.sample(eligible, min(pairs_per_example, len(eligible))):
            chosen.setdefault(pair)
    pairs = []
    for i, j in chosen:
        a, b = candidates[i], candidates[j]
        labels = tuple(
            _sign(a.scores[m] - b.scores[m]) if m in a.scores and m in b.scores else 0 for m in metrics
        )
        pairs.append(LabelledPair(PairQuery(example.source, a.text, b.text), labels))
    return pairs


def available_metrics(examples: Sequence[Example]) -> list[str]:
    """Every score name that some candidate carries, sorted."""
    return sorted({name for ex in examples for c in ex.candidates for name in c.scores})


def mixinstruct_pairs(
    examples: Sequence[Example], metrics: Sequence[str] | None, pairs_per_example: int, seed: int
) -> PairSet:
    """Training pairs from MixInstruct examples; ``metrics=None`` uses every score in the data."""
    present = available_metrics(examples)
    metrics = list(metrics) if metrics else present
    missing = [m for m in metrics if m not in present]
    if missing:
        raise LlmblendError(
            f"metric(s) {missing} are not scores in the data; the scores present are {present}"
        )
    if not metrics:
        raise LlmblendError("the candidates carry no scores, so there is nothing to learn a ranking from")
    rng = random.Random(seed)
    pairs = [p for ex in examples for p in example_pairs(ex, metrics, pairs_per_example, rng)]
    return PairSet(pairs, tuple(metrics))


def preference_pairs(path: str | Path) -> PairSet:
    """One pair per preference record, ``chosen`` first, labelled +1 on the single task."""
    pairs = [
        LabelledPair(PairQuery(prompt_text(p.prompt), p.chosen, p.rejected), (1,))
        for p in read_preferences(path)
        if p.chosen != p.rejected
    ]
    return PairSet(pairs, (PREFERENCE_TASK,))


def load_pairs(
    path: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    pairs_per_example: int = 5,
    seed: int = 0,
    limit: int | None = None,
) -> PairSet:
    """Labelled pairs from a MixInstruct or preference file (format detected), optionally a sample.

    With ``limit``, a seeded random sample of that many pairs (the same one for the same seed).
    """
    if detect_format(path) == "preferences":
        pair_set = preference_pairs(path)
    else:
        pair_set = mixinstruct_pairs(list(read_mixinstruct(path)), metrics, pairs_per_example, seed)
    if not pair_set.pairs:
        raise LlmblendError(f"{path}: no usable pairs (every pair is a tie or has identical answers)")
    if limit is not None and limit < len(pair_set.pairs):
        sample = random.Random(seed).sample(pair_set.pairs, limit)
        return PairSet(sample, pair_set.task_names)
    return pair_set
