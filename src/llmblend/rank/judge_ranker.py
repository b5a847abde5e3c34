"""An LLM judge as a ranker: pairwise ranking prompting (PRP, Qin et al., 2023) with the MT-bench
``pair-v2`` or LLM-Blender's GPT-Rank prompt (§5), behind the same strategies as PairRanker (§3.2),
or listwise (RankGPT, :mod:`llmblend.rank.listwise`).

:class:`JudgeRanker` scores one ordered pair with one judge call, the first answer shown as A: the
soft margin from the verdict token's probabilities when the backend returns logprobs
(:mod:`llmblend.eval.soft_verdict`), else +1 (A better), −1 (B better) or 0 (a tie, an unreadable
reply or a failed call). With ``orders="both"`` the strategies ask both orders of each pair and
average them, so a judge that always prefers slot A gives only zero margins; ``orders="random"``
asks each pair once in a seeded order (:mod:`llmblend.rank.asking`), for half the calls. A
:class:`~llmblend.rank.budget.Budget` caps each example's calls, tokens and seconds, and every
ranking records what it spent (``Ranking.usage``: calls, tokens, seconds, cost).

Hygiene: the judged answers' model names never reach the prompt; a judge that is also one of the
candidates is flagged in ``usage["self_judged"]`` (LLM judges prefer their own answers). Judgements
go to the judge's JSONL cache when one is given, so a rerun asks only what it lacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.backends.base import Backend
from llmblend.blend.aio import LoopRunner
from llmblend.eval.judge import JudgeItem, Judgement, PairVerdict, PairwiseJudge
from llmblend.rank.asking import Asking, Orders
from llmblend.rank.base import PairQuery, rank_items
from llmblend.rank.budget import Budget, Prices, Spend
from llmblend.rank.judge_config import JUDGE_STRATEGIES, LISTWISE, JudgeSettings
from llmblend.rank.listwise import Listwise, rank_listwise
from llmblend.types import Example, Ranking

log = logging.getLogger(__name__)

#: The score of one judged ordering without soft margins, by its verdict about positions (A, B).
VERDICT_SCORES = {"A is better": 1.0, "B is better": -1.0}


class JudgeRanker:
    """Ranks candidates with an LLM judge; see the module docstring.

    ``prompt``: ``"mt-bench"`` (default) or ``"gpt-rank"``; ``strategy``: the default strategy
    (``full`` asks every pair in both orders: N(N−1) calls; ``bubble``, ``knockout`` and
    ``sparse-refine`` ask fewer; ``listwise`` one call per window); ``soft``: ask for logprobs and
    score by the verdict token's probabilities where the backend gives them; ``cache_path``: the
    judge's resumable JSONL cache; ``prices``: for the cost in each ranking's usage;
    ``max_reply_tokens``: the judge's reply length (default: the prompt's, 1024 or 16).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        prompt: str = "mt-bench",
        strategy: str = "full",
        orders: Orders = "both",
        soft: bool = True,
        budget: Budget | None = None,
        seed: int = 0,
        prices: Prices | None = None,
        listwise: Listwise | None = None,
        max_reply_tokens: int | None = None,
        cache_path: str | Path | None = None,
    ) -> None:
        _check_strategy(strategy)
        self.judge = PairwiseJudge(backend, prompt, cache_path=cache_path, soft=soft)  # type: ignore[arg-type]
        if max_reply_tokens is not None:
            self.judge.params = replace(self.judge.params, max_tokens=max_reply_tokens)
        self.strategy = strategy
        self.asking = Asking(orders, budget or Budget(), seed)
        self.prices = prices
        self.listwise = listwise or Listwise()
        self.name = f"judge:{backend.name}"
        self._loop = LoopRunner("JudgeRanker", "none: rank from a worker thread")

    @property
    def backend(self) -> Backend:
        return self.judge.backend

    @property
    def budget(self) -> Budget:
        return self.asking.budget

    def set_budget(self, budget: Budget) -> None:
        """Cap each example's judge calls, tokens and seconds from now on."""
        self.asking = replace(self.asking, budget=budget)

    @classmethod
    def from_spec(cls, spec: str) -> JudgeRanker:
        """``MODELS.yaml`` or ``MODELS.yaml#NAME``: the file's ``judge:`` settings
        (:mod:`llmblend.rank.judge_config`), judging with the backend NAME, or the one the settings
        name, or the first."""
        ranker, _ = judge_from_spec(spec)
        return ranker

    @classmethod
    def from_settings(cls, backend: Backend, settings: JudgeSettings, base: Path) -> JudgeRanker:
        """A judge ranker on ``backend`` with a models.yaml's ``judge:`` settings (``base``: the
        folder a relative cache path is read from)."""
        budget = Budget(settings.max_calls, settings.max_tokens, settings.max_seconds)
        prices = settings.prices and Prices(settings.prices.prompt, settings.prices.completion)
        lw = settings.listwise
        return cls(
            backend,
            prompt=settings.prompt,
            strategy=settings.strategy,
            orders=settings.orders,
            soft=settings.soft,
            budget=budget,
            seed=settings.seed,
            prices=prices,
            listwise=Listwise(lw.window, lw.step, lw.context_tokens),
            max_reply_tokens=settings.max_reply_tokens,
            cache_path=None if settings.cache is None else base / settings.cache,
        )

    # ---- scoring ----

    def score_pairs(self, queries: Sequence[PairQuery]) -> np.ndarray:
        """One judge call per ordered pair: > 0 when the first answer wins (a plain PairScorer)."""
        return self.score_metered(queries)[0]

    def score_metered(self, queries: Sequence[PairQuery]) -> tuple[np.ndarray, list[Spend]]:
        """Scores of ordered pairs and what each cost (a :data:`~llmblend.rank.asking.MeteredScorer`)."""
        items = [JudgeItem(q.source, "", q.first, q.second, "first", "second") for q in queries]
        judgements = self._loop.run(self.judge.judge_ordered(items))
        return np.array([judgement_score(j) for j in judgements]), [_spend_of(j) for j in judgements]

    def cached_scores(self, queries: Sequence[PairQuery]) -> np.ndarray:
        """The scores of ordered pairs that the judge's cache holds, NaN for the others; asks nothing."""
        items = [JudgeItem(q.source, "", q.first, q.second, "first", "second") for q in queries]
        judgements = self.judge.cached_ordered(items)
        return np.array([np.nan if j is None else judgement_score(j) for j in judgements], dtype=np.float64)

    def compare(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """The debiased margin of each (a, b), both orders asked (> 0: a is better); for the guard."""
        if not len(instructions) == len(a) == len(b):
            raise ValueError(f"compare needs equal lengths, got {len(instructions)}, {len(a)}, {len(b)}")
        forward = [PairQuery(s, x, y) for s, x, y in zip(instructions, a, b, strict=True)]
        backward = [PairQuery(s, y, x) for s, x, y in zip(instructions, a, b, strict=True)]
        scores = self.score_pairs(forward + backward)
        return (scores[: len(forward)] - scores[len(forward) :]) / 2

    def pair_verdicts(self, examples: Sequence[Example]) -> list[list[PairVerdict]]:
        """Every pair of each example's candidates judged in both orders (GPT-Rank, LLM-Blender §5),
        each example's pairs ``(i, j)``, ``i < j``, in order; all examples' pairs go to the judge at
        once. Asked as :meth:`score_metered` asks (the source as one text), so both share the cache."""
        items = [
            [
                JudgeItem(ex.source, "", a.text, b.text, a.model, b.model, ex.id)
                for a, b in combinations(ex.candidates, 2)
            ]
            for ex in examples
        ]
        verdicts = iter(self._loop.run(self.judge.judge_pairs([item for group in items for item in group])))
        return [[next(verdicts) for _ in group] for group in items]

    # ---- ranking ----

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        """One ranking per example, each with its ``usage``; every example's pairs of a round go to
        the judge at once."""
        from llmblend.rank.strategies import run_strategy

        strategy = strategy or self.strategy
        _check_strategy(strategy)
        if strategy == LISTWISE:
            rankings = self._loop.run(self._rank_listwise(examples))
        else:
            items = rank_items(examples)
            rankings = run_strategy(strategy, items, self.score_metered, top_k=top_k, asking=self.asking)
        return [self._with_usage(ex, r) for ex, r in zip(examples, rankings, strict=True)]

    async def _rank_listwise(self, examples: Sequence[Example]) -> list[Ranking]:
        from llmblend.rank.base import trivial_ranking

        slots = asyncio.Semaphore(max(1, self.backend.concurrency))

        async def one(item) -> Ranking:
            trivial = trivial_ranking(len(item.candidates))
            if trivial is not None:
                return trivial
            result = await rank_listwise(
                self.backend,
                item,
                settings=self.listwise,
                params=replace(self.judge.params, top_logprobs=0),
                budget=self.budget,
                seed=self.asking.seed,
                slots=slots,
            )
            usage = {**result.spend.as_record(), "unclean_replies": result.unclean_replies}
            return replace(result.ranking, usage=usage)

        return list(await asyncio.gather(*(one(item) for item in rank_items(examples))))

    def _with_usage(self, example: Example, ranking: Ranking) -> Ranking:
        """The ranking with its cost priced and a self-judging judge flagged."""
        usage: dict[str, Any] = dict(ranking.usage or Spend().as_record())
        if self.prices is not None:
            spend = Spend(prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"])
            usage["cost_usd"] = round(self.prices.cost(spend), 8)
        if own := self.self_judged(example):
            usage["self_judged"] = own
        return replace(ranking, usage=usage)

    def self_judged(self, example: Example) -> list[int]:
        """Indices of the candidates the judge's own model wrote (self-preference risk)."""
        names = {self.backend.name, getattr(self.backend, "model", None)} - {None}
        own = [i for i, c in enumerate(example.candidates) if c.model in names]
        if own:
            log.warning("judge %s wrote candidate(s) %s of %s: self-preference", self.name, own, example.id)
        return own

    def close(self) -> None:
        self._loop.run(self.judge.backend.aclose())
        self._loop.close()


def judgement_score(judgement: Judgement) -> float:
    """A judged ordering's score: its soft margin when known, else +1 / −1 / 0 by the verdict."""
    if judgement.margin is not None:
        return judgement.margin
    return VERDICT_SCORES.get(judgement.verdict or "", 0.0)


def _spend_of(judgement: Judgement) -> Spend:
    if judgement.cached:
        return Spend(cached=1)
    return Spend(1, 0, judgement.prompt_tokens, judgement.completion_tokens)


def _check_strategy(strategy: str) -> None:
    if strategy not in JUDGE_STRATEGIES:
        raise ValueError(f"unknown judge strategy {strategy!r}; known: {', '.join(JUDGE_STRATEGIES)}")


def judge_from_spec(spec: str) -> tuple[JudgeRanker, JudgeSettings]:
    """The judge ranker of ``MODELS.yaml[#NAME]`` and the file's judge settings (defaults when the
    file has no ``judge:`` section)."""
    from llmblend.backends.config import build_backend, load_backend_config
    from llmblend.errors import LlmblendError

    path, _, name = spec.partition("#")
    config = load_backend_config(path)
    settings = config.judge or JudgeSettings()
    wanted = name or settings.backend
    chosen = [b for b in config.backends if not wanted or b.display_name == wanted]
    if not chosen:
        known = ", ".join(b.display_name for b in config.backends)
        raise LlmblendError(f"{path} has no backend named {wanted!r}; it has: {known}")
    return JudgeRanker.from_settings(build_backend(chosen[0]), settings, Path(path).parent), settings
