"""Shared plumbing of the rankers that give each candidate a score (the LLM-Blender §5 baselines).

Random, longest, MBR, MLM scoring, the pointwise cross-encoder and the dual encoder all score the
N candidates of an example independently of any pairing, so the ranking is the order of the
scores. :func:`rank_by_scores` does the common part: examples with 0 or 1 candidates get
:func:`~llmblend.rank.base.trivial_ranking` and the rest are scored in one batched call, so a
mixed batch never breaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from llmblend.errors import LlmblendError
from llmblend.rank.base import trivial_ranking
from llmblend.types import Example, Ranking

log = logging.getLogger(__name__)

#: Scores a batch of examples (each with 2+ candidates): one (candidate scores, forward passes) each.
ExampleScorer = Callable[[Sequence[Example]], Sequence[tuple[Sequence[float], int]]]


#: (ranker name, strategy) pairs already reported as ignored, so a long evaluation logs them once.
_IGNORED: set[tuple[str, str]] = set()


class RankerOptionError(LlmblendError, ValueError):
    """A ranker option with a value the ranker does not know; the message lists the valid ones."""


def check_rank_options(name: str, strategy: str | None, top_k: int | None) -> None:
    """Accept and ignore the options that only a pairwise ranker uses.

    ``strategy`` picks how PairRanker (§3.2) aggregates pairwise comparisons; a scoring ranker has
    none, and ``llmblend eval ranker --strategy`` passes it to every ranker compared, so it is
    ignored (logged once). ``top_k`` must be at least 1 but the full order is always returned,
    since scoring every candidate already gives it.
    """
    if strategy is not None and (name, strategy) not in _IGNORED:
        _IGNORED.add((name, strategy))
        log.info("ranker %r scores each candidate on its own; ignoring strategy=%r", name, strategy)
    if top_k is not None and top_k < 1:
        raise RankerOptionError(f"top_k must be at least 1, got {top_k}")


def rank_by_scores(examples: Sequence[Example], score: ExampleScorer) -> list[Ranking]:
    """One ranking per example: trivial ones directly, the others from one batched call of ``score``."""
    rankings: list[Ranking | None] = [trivial_ranking(len(ex.candidates)) for ex in examples]
    todo = [i for i, ranking in enumerate(rankings) if ranking is None]
    if todo:
        scored = score([examples[i] for i in todo])
        if len(scored) != len(todo):
            raise RuntimeError(f"the scorer returned {len(scored)} results for {len(todo)} examples")
        for i, (scores, n_forward) in zip(todo, scored, strict=True):
            rankings[i] = Ranking.from_scores(scores, n_forward=n_forward)
    return [ranking for ranking in rankings if ranking is not None]  # every slot is filled by now


def split_sizes(values: Sequence[float] | np.ndarray, sizes: Sequence[int]) -> Iterator[np.ndarray]:
    """Cut a flat array into consecutive pieces of the given sizes (regroup per-example scores)."""
    values = np.asarray(values)
    if sum(sizes) != len(values):
        raise ValueError(f"cannot split {len(values)} values into pieces of sizes summing to {sum(sizes)}")
    start = 0
    for size in sizes:
        yield values[start : start + size]
        start += size
