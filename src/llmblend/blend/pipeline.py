"""Rank, fuse and guard examples that already have candidates: a blend after its generate stage.

:class:`RankAndFuse` holds a ranker, a fuser and a guard (with a lock for each synchronous model,
so that concurrent blends share them safely) and runs :func:`~llmblend.blend.rank.rank_stage`,
:func:`~llmblend.blend.fuse.fuse_stage` and :func:`~llmblend.blend.guard.guard_stage` over a batch,
one call per stage, giving one :class:`~llmblend.types.BlendResult` per example.
:class:`~llmblend.blender.Blender` puts its generate stage in front of it; ``llmblend fuse``
(:func:`~llmblend.fuse.fuse_file.fuse_file`) uses it on MixInstruct files::

    with RankAndFuse(ranker, fuser, top_k=3) as pipeline:
        results = pipeline.rank_and_fuse(examples)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from typing import Protocol

from llmblend.blend.aio import ClosesItsLoop, LoopRunner, is_coroutine_method
from llmblend.blend.fuse import Answer, fuse_stage
from llmblend.blend.guard import guard_stage
from llmblend.blend.rank import rank_stage, ranker_name
from llmblend.fuse.base import FuseItem, Fuser
from llmblend.fuse.guard import FusionGuard
from llmblend.rank.base import Ranker
from llmblend.types import BlendCandidate, BlendResult, Example, Ranking, StageTimings, TokenUsage


class RanksAndFuses(Protocol):
    """What ``llmblend fuse`` needs of a pipeline: :class:`RankAndFuse` or a
    :class:`~llmblend.blender.Blender`."""

    fuser: Fuser | None
    strategy: str | None

    def rank_and_fuse(
        self, examples: Sequence[Example], *, rankings: Sequence[Ranking | None] | None = None
    ) -> list[BlendResult]: ...


def resolve_guard(guard: bool | FusionGuard, ranker: Ranker, fuser: Fuser | None) -> FusionGuard | None:
    """True → a :class:`FusionGuard` over ``ranker`` when there is a fuser (TypeError when the
    ranker has no ``compare``), else None; False → None; a guard → itself."""
    if guard is True:
        return FusionGuard(ranker) if fuser is not None else None
    return guard or None


def _place(result: BlendResult, ranking: Ranking, top_k: int) -> None:
    """Write ``ranking`` into ``result``: its order, top-K, and each candidate's rank and score."""
    result.ranking = tuple(ranking.order)
    result.top_k = result.ranking[:top_k]
    for place, i in enumerate(ranking.order, start=1):
        result.candidates[i].rank = place
    for i, score in enumerate(ranking.scores):
        result.candidates[i].score = float(score)


def _answer(result: BlendResult, answer: Answer) -> None:
    if answer.fused is not None:
        result.fused = answer.fused
        result.tokens["fuse"] = TokenUsage(answer.fused.prompt_tokens, answer.fused.completion_tokens)
    result.answer, result.returned, result.guard_margin = answer.text, answer.returned, answer.margin
    result.notes.extend(answer.notes)


class RankAndFuse(ClosesItsLoop):
    """Rank, fuse, guard (LLM-Blender §3–4) examples that have candidates; see the module docstring.

    ``ranker`` ranks with ``strategy`` (the pairwise aggregation of §3.2; None: the ranker's own,
    e.g. sparse-refine for PairRanker, pool-seeded for a pool, the judge's) and ``top_k``; ``fuser``
    reads the ``top_k`` best (None: the top candidate is returned); ``guard``: True checks each fused
    answer against the top candidate with the ranker (which must then have ``compare``), False does
    not, or a :class:`~llmblend.fuse.guard.FusionGuard` of your own.
    """

    def __init__(
        self,
        ranker: Ranker,
        fuser: Fuser | None = None,
        *,
        top_k: int = 3,
        strategy: str | None = None,
        guard: bool | FusionGuard = True,
    ) -> None:
        from llmblend.rank.pool_ranker import POOL_STRATEGIES
        from llmblend.rank.strategies import STRATEGIES

        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        known = [*STRATEGIES, *POOL_STRATEGIES]
        if strategy is not None and strategy not in known:
            raise ValueError(f"unknown ranking strategy {strategy!r}; known: {', '.join(known)}")
        self.ranker = ranker
        self.fuser = fuser
        self.top_k = top_k
        self.strategy = strategy
        self.guard = resolve_guard(guard, ranker, fuser)
        #: Held while the ranker or the guard runs (the guard's ranker is usually the ranker).
        self.rank_lock = threading.Lock()
        #: Held while a synchronous fuser runs.
        self.fuse_lock = threading.Lock()
        self._loop = LoopRunner(type(self).__name__, "arank_and_fuse")

    @property
    def ranker_name(self) -> str:
        return ranker_name(self.ranker)

    def __repr__(self) -> str:
        fuser = getattr(self.fuser, "name", None)
        return (
            f"RankAndFuse(ranker={self.ranker_name!r}, fuser={fuser!r}, top_k={self.top_k}, "
            f"strategy={self.strategy!r}, guard={self.guard is not None})"
        )

    def rank_and_fuse(
        self, examples: Sequence[Example], *, rankings: Sequence[Ranking | None] | None = None
    ) -> list[BlendResult]:
        """:meth:`arank_and_fuse` from synchronous code (an event loop of this object's own, kept
        between calls; :meth:`close` ends it)."""
        return self._loop.run(self.arank_and_fuse(examples, rankings=rankings))

    async def arank_and_fuse(
        self, examples: Sequence[Example], *, rankings: Sequence[Ranking | None] | None = None
    ) -> list[BlendResult]:
        """One result per example; never raises for a failing ranker, fuser or guard.

        All examples are ranked in one ranker call, fused in one fuser call and guarded in one
        ``compare`` call. ``rankings[i]``, when given and usable (indices within the example's
        candidates), is used instead of ranking example ``i`` again (the ``ranking`` field that
        ``llmblend rank`` writes). Each result's stage times are its share of the batch's.
        """
        started = time.perf_counter()
        ranked = await rank_stage(
            examples,
            self.ranker,
            strategy=self.strategy,
            top_k=self.top_k,
            given=rankings,
            lock=self.rank_lock,
        )
        results: list[BlendResult] = []
        todo: list[int] = []  # examples that go to the fuser
        for k, (example, ranking) in enumerate(zip(examples, ranked.rankings, strict=True)):
            result = BlendResult(
                example.instruction,
                example.input,
                example.id,
                candidates=[BlendCandidate(c.model, c.decoding_method, c.text) for c in example.candidates],
                ranker=self.ranker_name,
                n_forward=ranked.n_forward[k],
                notes=list(ranked.notes[k]),
            )
            results.append(result)
            if not ranking.ok:
                result.error = f"ranking failed: {ranking.error}"
                continue
            _place(result, ranking, self.top_k)
            if len(example.candidates) == 1:
                result.answer, result.returned = example.candidates[0].text, "only candidate"
            else:
                todo.append(k)

        items = [
            FuseItem(
                examples[k].instruction,
                tuple(examples[k].candidates[i].text for i in results[k].top_k),
                examples[k].input,
            )
            for k in todo
        ]
        fusion = await fuse_stage(items, self.fuser, lock=self.fuse_lock)
        guarded = await guard_stage(items, fusion.answers, self.guard, lock=self.rank_lock)
        for k, answer in zip(todo, guarded.answers, strict=True):
            _answer(results[k], answer)

        n = max(len(examples), 1)
        total = time.perf_counter() - started
        for result in results:
            result.timings = StageTimings(
                rank_s=ranked.seconds / n,
                fuse_s=fusion.seconds / n,
                guard_s=guarded.seconds / n,
                total_s=total / n,
            )
        return results

    async def aclose(self, *, closed: Collection[int] = ()) -> None:
        """Close the fuser (when it has an ``aclose`` coroutine), unless its ``backend`` is one of
        ``closed`` (``id`` s of backends already closed)."""
        if (
            is_coroutine_method(self.fuser, "aclose")
            and id(getattr(self.fuser, "backend", None)) not in closed
        ):
            await self.fuser.aclose()
