"""The rank stage (LLM-Blender §3): one ranking per example, from one ranker call for the batch.

:func:`rank_stage` ranks examples that have candidates (failed generations are not among them: see
:meth:`~llmblend.blend.generate.Generated.example`). An example with no candidates gets a failed
ranking, one with a single candidate the trivial one; a usable given ranking (``llmblend rank``'s
``ranking`` field) is kept and the rest go to the ranker in one call. A ranker that raises, or returns
the wrong number of rankings, fails every example it was given, as data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from llmblend.blend.aio import batch_in_worker
from llmblend.rank.base import Ranker
from llmblend.types import Example, Ranking

log = logging.getLogger(__name__)


def ranker_name(ranker: object) -> str:
    """A ranker's ``name``, or its class name."""
    return getattr(ranker, "name", type(ranker).__name__)


def ranking_problem(ranking: Ranking | None, n_candidates: int) -> str | None:
    """Why a given ranking cannot be used for ``n_candidates`` candidates, or None if it can."""
    if ranking is None:
        return "none given"
    if not ranking.ok:
        return f"it failed ({ranking.error})"
    if not ranking.order:
        return "its order is empty"
    if len(set(ranking.order)) != len(ranking.order) or not all(0 <= i < n_candidates for i in ranking.order):
        return f"its order {list(ranking.order)} is not a list of distinct indices below {n_candidates}"
    if ranking.scores and len(ranking.scores) != n_candidates:
        return f"it has {len(ranking.scores)} scores for {n_candidates} candidates"
    return None


@dataclass(slots=True)
class Ranked:
    """What the rank stage gives, one entry per example in input order.

    ``rankings[k]``: example ``k``'s ranking (``ok`` False, with ``error``, when it could not be
    ranked); ``n_forward[k]``: the ranker's forward passes spent on it here (0 for a given or trivial
    ranking); ``notes[k]``: what a reader should know (a given ranking that was not usable);
    ``seconds``: the stage's wall time.
    """

    rankings: list[Ranking]
    n_forward: list[int]
    notes: list[list[str]]
    seconds: float


async def rank_stage(
    examples: Sequence[Example],
    ranker: Ranker,
    *,
    strategy: str | None = None,
    top_k: int | None = None,
    given: Sequence[Ranking | None] | None = None,
    lock: threading.Lock | None = None,
) -> Ranked:
    """Rank ``examples``; see the module docstring.

    ``strategy`` and ``top_k`` go to ``ranker.rank``; ``given[k]``, when not None and usable for
    example ``k``, is used instead of ranking it; ``lock`` is held while the ranker runs (in a worker
    thread).
    """
    if given is not None and len(given) != len(examples):
        raise ValueError(f"{len(given)} rankings for {len(examples)} examples")
    started = time.perf_counter()
    final: list[Ranking | None] = [None] * len(examples)
    n_forward = [0] * len(examples)
    notes: list[list[str]] = [[] for _ in examples]
    for k, example in enumerate(examples):
        if len(example.candidates) == 0:
            final[k] = Ranking.failed("the example has no candidates")
        elif len(example.candidates) == 1:
            final[k] = Ranking(scores=(0.0,), order=(0,))
        elif given is not None and given[k] is not None:
            problem = ranking_problem(given[k], len(example.candidates))
            if problem is None:
                final[k] = given[k]
            else:
                notes[k].append(f"the given ranking was not usable ({problem}); ranked again")
    todo = [k for k, ranking in enumerate(final) if ranking is None]
    if todo:
        batch = [examples[k] for k in todo]
        try:
            ranked = await batch_in_worker(lock, ranker.rank, batch, strategy=strategy, top_k=top_k)
            if len(ranked) != len(batch):
                raise RuntimeError(f"the ranker returned {len(ranked)} rankings for {len(batch)} examples")
        except Exception as exc:  # a ranker bug must not cost the whole batch its answers
            log.exception("ranker %s failed", ranker_name(ranker))
            ranked = [Ranking.failed(f"{type(exc).__name__}: {exc}")] * len(batch)
        for k, ranking in zip(todo, ranked, strict=True):
            final[k] = ranking
            n_forward[k] = ranking.n_forward
    rankings = [r if r is not None else Ranking.failed("not ranked") for r in final]
    return Ranked(rankings, n_forward, notes, time.perf_counter() - started)
