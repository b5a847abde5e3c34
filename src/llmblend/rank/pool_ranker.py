"""Pool-aware ranking: the pool's prior, PairRanker and cheap terms in one calibrated model.

LLM-Blender's premise is that "the best LLM differs per input" (§1); but on average one model of a
pool is clearly best, so a selector that ignores who answered leaves that model on weak evidence.
:class:`PoolRanker` scores pairs with the calibrated combination of :mod:`llmblend.rank.combine`
(pool strengths, PairRanker's debiased logit, length, consensus, pool-weighted consensus) and
offers three strategies. They share one calibrated decision (:func:`incumbent_ranking`): the
pool's favourite is the incumbent, and the best challenger replaces it only when its calibrated
P(better than the incumbent) clears the stored threshold. They differ in the evidence behind
that probability:

=============  =====================================================================  ===============
strategy       the ranker's evidence that challenger c beats the favourite            forwards (N=11)
=============  =====================================================================  ===============
pool-seeded    c meets the favourite once (both orders, one round): its debiased      2(N−1) (20)
               logit on that pair
full           every pair scored: the difference of the Bradley–Terry least-squares   N(N−1) (110)
               strengths fitted to all its debiased logits
prior          none: the free terms alone                                             0
=============  =====================================================================  ===============

The free terms (pool, length, relative length, consensus) cost no forward and are exact for any
pair, so every strategy weighs their c-vs-favourite value; a combination that gives the ranker no
weight ranks alike under all three.

An example none of whose candidates come from a model the pool knows is ranked by the base ranker
exactly as without a pool (its own strategy), so a pool never hurts where it has nothing to say.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmblend.errors import LlmblendError
from llmblend.rank.aggregate import debias, least_squares
from llmblend.rank.base import PairScorer, rank_items
from llmblend.rank.combine import (
    FREE_TERMS,
    Combination,
    consensus_scores,
    difference_matrix,
    length_matrix,
)
from llmblend.rank.pool import CategoryOf, PoolModel, id_prefix_category
from llmblend.rank.scoring import split_sizes
from llmblend.rank.strategies import STRATEGIES, Match, Plan, run_plans, winner_first
from llmblend.types import Example, Ranking

log = logging.getLogger(__name__)

#: Strategy name → one-line description (for ``--help`` texts).
POOL_STRATEGIES: dict[str, str] = {
    "pool-seeded": "the pool's favourite is the incumbent; challengers need the calibrated threshold "
    "to replace it: 2(N-1) forwards",
    "full": "every pair scored; the ranker's evidence from strengths fitted to all pairs, the same "
    "threshold: N(N-1) forwards",
    "prior": "the pool, length and consensus terms only: no ranker forward",
}
DEFAULT_POOL_STRATEGY = "pool-seeded"

#: Embeds candidate texts for the consensus term: ``f(texts) -> float[len(texts), D]``.
Embed = Callable[[Sequence[str]], np.ndarray]


def free_terms(
    example: Example,
    pool: PoolModel,
    combination: Combination,
    *,
    embeddings: np.ndarray | None = None,
    category_of: CategoryOf | None = id_prefix_category,
) -> dict[str, np.ndarray]:
    """The terms that need no ranker forward, each ``float64[N, N]``: pool, length, relative length,
    and the two consensus terms.

    ``embeddings [N, D]`` are needed only when the combination weighs a consensus term.
    """
    category = category_of(example) if category_of else None
    texts = [c.text for c in example.candidates]
    strengths = [pool.strength(c.model, category) for c in example.candidates]
    terms = {
        "pool": difference_matrix(strengths),
        "length": length_matrix(texts, combination.length_scale),
        "rel_length": difference_matrix([pool.relative_length(c.model, c.text) for c in example.candidates]),
    }
    if combination.uses_embeddings:
        if embeddings is None:
            raise ValueError("the combination weighs consensus, which needs the candidates' embeddings")
        terms["consensus"] = difference_matrix(consensus_scores(embeddings))
        terms["pool_consensus"] = difference_matrix(consensus_scores(embeddings, strengths))
    return terms


def incumbent_ranking(
    advantage: np.ndarray, favourite: int, combination: Combination, n_forward: int = 0
) -> Ranking:
    """The calibrated incumbent decision every pool strategy makes.

    ``advantage[c]`` is the combined log-odds (without the intercept) that challenger ``c`` is
    better than the ``favourite``; σ(bias + advantage[c]) is the calibrated probability
    (:func:`~llmblend.rank.combine.fit_switch`). The best challenger replaces the favourite when
    that probability clears ``threshold``. Scores: bias + advantage for challengers and
    logit(threshold) for the favourite, so the order agrees with the decision.
    """
    scores = combination.bias + np.asarray(advantage, dtype=np.float64)
    scores[favourite] = math.log(combination.threshold / (1 - combination.threshold))
    return winner_first(scores, int(np.argmax(scores)), n_forward)


def ranker_evidence(matrix: np.ndarray, strategy: str) -> np.ndarray:
    """The ranker's log-odds ``[N, N]`` that i beats j, as ``strategy`` weighs them: its debiased
    logit on that pair (NaN where it was not scored), or for ``full`` the difference of the
    Bradley–Terry least-squares strengths fitted to all of them
    (:func:`~llmblend.rank.aggregate.least_squares`: indirect comparisons count, a pair's noise
    is averaged)."""
    if strategy != "full":
        return debias(matrix)
    strengths = least_squares(matrix)
    return strengths[:, None] - strengths[None, :]


def pool_seeded_plan(match: Match, free: np.ndarray, combination: Combination, favourite: int) -> Plan:
    """Every challenger meets the pool's favourite, both orders, one round: the ranker's evidence
    that c is better is its debiased logit on that one pair."""
    weight = combination.weight("ranker")
    advantage = free[:, favourite].copy()
    if weight != 0.0:
        yield [p for c in range(match.n) if c != favourite for p in ((c, favourite), (favourite, c))]
        advantage += weight * np.nan_to_num(ranker_evidence(match.matrix, "pool-seeded")[:, favourite])
    return incumbent_ranking(advantage, favourite, combination, match.n_forward)


def full_plan(match: Match, free: np.ndarray, combination: Combination, favourite: int) -> Plan:
    """Every ordered pair in one round: the ranker's evidence from strengths fitted to all pairs
    (:func:`ranker_evidence`). The free terms are exact for any pair: their c-vs-favourite value."""
    weight = combination.weight("ranker")
    n = match.n
    advantage = free[:, favourite].copy()
    if weight != 0.0:
        yield [(i, j) for i in range(n) for j in range(n) if i != j]
        advantage += weight * ranker_evidence(match.matrix, "full")[:, favourite]
    return incumbent_ranking(advantage, favourite, combination, match.n_forward)


def prior_plan(match: Match, free: np.ndarray, combination: Combination, favourite: int) -> Plan:
    """No ranker forward: the free terms' c-vs-favourite log-odds alone."""
    return incumbent_ranking(free[:, favourite], favourite, combination, 0)
    yield  # a generator that never asks for a pair


PLANS = {"pool-seeded": pool_seeded_plan, "full": full_plan, "prior": prior_plan}


def rank_with_pool(
    examples: Sequence[Example],
    terms: Sequence[Mapping[str, np.ndarray]],
    combination: Combination,
    score_pairs: PairScorer,
    *,
    strategy: str = DEFAULT_POOL_STRATEGY,
) -> list[Ranking]:
    """Rank ``examples`` given each one's free terms; all items' pairs of a round in one scorer call.

    Each ranking's ``terms`` gives every term's share of the log-odds that the pick beats the pool's
    favourite (or, when the favourite is the pick, the runner-up).
    """
    if strategy not in PLANS:
        raise ValueError(f"unknown pool strategy {strategy!r}; known: {', '.join(PLANS)}")
    plan = PLANS[strategy]
    favourites = [pool_favourite(t) for t in terms]
    free = [
        combination.logits(t, FREE_TERMS) if len(e.candidates) > 1 else None
        for e, t in zip(examples, terms, strict=True)
    ]
    played: dict[int, Match] = {}

    def plan_for(k: int, match: Match) -> Plan:
        played[k] = match
        return plan(match, free[k], combination, favourites[k])

    rankings = run_plans(rank_items(examples), score_pairs, plan_for)
    return [
        _with_terms(r, terms[k], favourites[k], played[k], combination, strategy)
        if k in played and r.ok
        else r
        for k, r in enumerate(rankings)
    ]


def pool_favourite(terms: Mapping[str, np.ndarray]) -> int:
    """The candidate whose model the pool rates highest (the first on ties)."""
    pool = terms["pool"]
    return int(np.argmax(pool.sum(axis=1))) if len(pool) else 0


def _with_terms(
    ranking: Ranking,
    terms: Mapping[str, np.ndarray],
    favourite: int,
    match: Match,
    combination: Combination,
    strategy: str,
) -> Ranking:
    """The ranking with each term's share of the pick's log-odds against the pool's favourite (the
    ranker's as ``strategy`` weighs it)."""
    pick = ranking.order[0]
    rival = favourite if favourite != pick else ranking.order[1]
    shares = combination.contributions(terms, pick, rival)
    if combination.uses_ranker:
        margin = ranker_evidence(match.matrix, strategy)[pick, rival]
        shares["ranker"] = (
            None if np.isnan(margin) else round(float(combination.weight("ranker") * margin), 6)
        )
    return replace(ranking, terms=shares)


class PoolRanker:
    """A :class:`~llmblend.rank.base.Ranker` that knows the pool: ``load_ranker("pool:pool.json")``.

    ``base`` is the PairRanker whose debiased logits feed the ``ranker`` term (and which ranks, with
    its own strategy, the examples whose models the pool does not know), or a zero-argument
    callable that builds it when first needed. ``embed`` embeds texts for
    the consensus term (the packaged MiniLM when the combination needs it and none is given).
    """

    name = "pool"

    def __init__(
        self,
        pool: PoolModel,
        base=None,
        *,
        embed: Embed | None = None,
        strategy: str = DEFAULT_POOL_STRATEGY,
        category_of: CategoryOf | None = id_prefix_category,
    ) -> None:
        if pool.combination is None:
            raise LlmblendError(
                "this pool file has no combination weights; fit them with "
                "llmblend train pool ... --calibrate FILE (judged data the ranker was not trained on)"
            )
        if strategy not in PLANS:
            raise ValueError(f"unknown pool strategy {strategy!r}; known: {', '.join(PLANS)}")
        self.pool = pool
        self.combination = Combination.from_dict(pool.combination)
        self._base = base
        self._embed = embed
        self.strategy = strategy
        self.category_of = category_of

    @classmethod
    def from_file(cls, path: str | Path, base=None, **options) -> PoolRanker:
        """A pool ranker from a pool file; ``base`` defaults to the shipped PairRanker."""
        pool = PoolModel.load(path)
        if base is None and Combination.from_dict(pool.combination or {"weights": {}}).uses_ranker:
            from llmblend.rank.pairranker import PairRanker

            base = PairRanker.default()
        return cls(pool, base, **options)

    def compare(self, instructions, a, b) -> np.ndarray:
        """The base ranker's debiased margins (a fused answer has no source model, so the pool has
        nothing to add): what the fusion guard asks."""
        if self.base is None:
            raise LlmblendError("this pool ranker has no base ranker to compare two answers with")
        return self.base.compare(instructions, a, b)

    @property
    def base(self):
        """The base ranker; a zero-argument callable given as ``base`` is called on first use, so
        a pool that needs no ranker never loads one."""
        if callable(self._base) and not hasattr(self._base, "rank"):
            self._base = self._base()
        return self._base

    @property
    def runtime(self) -> str:
        if callable(self._base) and not hasattr(self._base, "rank"):
            return "lazy"
        return getattr(self._base, "runtime", "none")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._embed is None:
            from llmblend.rank.embeddings import SentenceEmbedder

            self._embed = SentenceEmbedder.from_pretrained().encode
        return np.asarray(self._embed(texts), dtype=np.float64)

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        """One ranking per example; examples with no model the pool knows go to the base ranker.

        ``strategy`` is a pool strategy (:data:`POOL_STRATEGIES`), or a PairRanker one, which then
        applies to the base ranker's examples only (``llmblend eval ranker --strategy`` passes one
        strategy to every ranker compared).
        """
        base_strategy = None
        if strategy is not None and strategy not in PLANS:
            if strategy not in STRATEGIES:
                known = ", ".join([*PLANS, *STRATEGIES])
                raise ValueError(f"unknown pool strategy {strategy!r}; known: {known}")
            base_strategy, strategy = strategy, None
        strategy = strategy or self.strategy
        known = [any(self.pool.knows(c.model) for c in ex.candidates) for ex in examples]
        rankings: list[Ranking | None] = [None] * len(examples)
        unknown = [k for k, ok in enumerate(known) if not ok]
        if unknown:
            if self.base is None:
                raise LlmblendError("no candidate's model is in the pool and there is no base ranker")
            fallback = self.base.rank([examples[k] for k in unknown], strategy=base_strategy, top_k=top_k)
            for k, r in zip(unknown, fallback, strict=True):
                rankings[k] = r
        todo = [k for k, ok in enumerate(known) if ok]
        if todo:
            chosen = [examples[k] for k in todo]
            terms = self._terms(chosen)
            scorer = (
                self.base.pair_logits
                if self.combination.uses_ranker and self.base is not None
                else _no_ranker
            )
            for k, r in zip(
                todo, rank_with_pool(chosen, terms, self.combination, scorer, strategy=strategy), strict=True
            ):
                rankings[k] = r
        return [r for r in rankings if r is not None]

    def _terms(self, examples: Sequence[Example]) -> list[dict[str, np.ndarray]]:
        """Each example's free terms; the consensus term embeds every candidate of the batch in one call."""
        embeddings: list[np.ndarray | None] = [None] * len(examples)
        if self.combination.uses_embeddings:
            texts = [c.text for ex in examples for c in ex.candidates]
            vectors = self.embed(texts) if texts else np.zeros((0, 0))
            sizes = [len(ex.candidates) for ex in examples]
            embeddings = list(split_sizes(vectors, sizes))
        return [
            free_terms(ex, self.pool, self.combination, embeddings=e, category_of=self.category_of)
            for ex, e in zip(examples, embeddings, strict=True)
        ]


def _no_ranker(queries):
    raise LlmblendError("this pool's combination weighs the ranker, but no base ranker was given")
