"""Pool-aware ranking: the pool-seeded incumbent strategy, the full combination, the fallback."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from llmblend.rank.base import PairQuery, rank_items
from llmblend.rank.combine import Combination
from llmblend.rank.pool import PoolModel
from llmblend.rank.pool_ranker import PoolRanker
from llmblend.rank.strategies import run_strategy
from llmblend.types import Candidate, Example

#: The latent quality the scripted ranker sees in each text.
QUALITY = {"alpha": 0.0, "beta": 0.3, "gamma": 4.0, "delta": -1.0, "eps": 0.1}


class ScriptedRanker:
    """A deterministic pair scorer: f(a, b) = q(a) − q(b) + a position bias (debiasing removes it)."""

    name = "scripted"
    runtime = "scripted"

    def __init__(self) -> None:
        self.queries: list[PairQuery] = []
        self.calls = 0

    def pair_logits(self, queries: Sequence[PairQuery]) -> np.ndarray:
        self.queries.extend(queries)
        self.calls += 1
        return np.array([QUALITY[q.first] - QUALITY[q.second] + 0.7 for q in queries])

    def rank(self, examples, *, strategy=None, top_k=None):
        return run_strategy(strategy or "full", rank_items(examples), self.pair_logits)


def pool_ranker(threshold: float = 0.8, **weights: float) -> tuple[PoolRanker, ScriptedRanker]:
    pool = PoolModel(
        strengths={"best": 1.0, "good": 0.5, "poor": -1.0}, judgements={"best": 10, "good": 10, "poor": 10}
    ).with_combination(
        Combination(
            weights or {"pool": 1.0, "ranker": 1.0}, length_scale=100.0, threshold=threshold
        ).to_dict()
    )
    base = ScriptedRanker()
    return PoolRanker(pool, base, category_of=None), base


def example(pairs: list[tuple[str, str]], ident: str = "x") -> Example:
    return Example(ident, "question", candidates=[Candidate(model, text) for model, text in pairs])


def test_the_incumbent_stays_on_weak_evidence_and_yields_to_strong_evidence() -> None:
    ranker, base = pool_ranker()
    # 'poor' wrote a slightly better answer than 'best': pool says 2.0 against, the ranker 0.3 for
    weak = example([("best", "alpha"), ("poor", "beta")])
    # 'poor' wrote a far better answer: the ranker's 4.0 beats the pool's 2.0
    strong = example([("best", "alpha"), ("poor", "gamma")], "y")
    kept, switched = ranker.rank([weak, strong])
    assert kept.best == 0 and switched.best == 1
    assert set(switched.terms) == {"pool", "ranker"}
    assert switched.terms["ranker"] == pytest.approx(4.0) and switched.terms["pool"] == pytest.approx(-2.0)
    assert all(r.n_forward == 2 for r in (kept, switched))
    assert len(base.queries) == 4


def test_pool_seeded_plays_every_challenger_against_the_favourite_in_one_round() -> None:
    ranker, base = pool_ranker()
    ex = example(
        [("poor", "delta"), ("good", "eps"), ("best", "alpha"), ("mystery", "beta"), ("poor", "gamma")]
    )
    (ranking,) = ranker.rank([ex])
    assert ranking.n_forward == 2 * (len(ex.candidates) - 1)
    # every pair played includes the pool's favourite ('best', text alpha), all in one scorer call
    assert base.calls == 1 and all("alpha" in (q.first, q.second) for q in base.queries)
    assert ranking.best == 4  # gamma is better by 4.0 > the pool's 2.0 against 'poor'
    assert sorted(ranking.order) == list(range(5))


def test_the_threshold_decides_how_much_evidence_a_challenger_needs() -> None:
    ex = example([("best", "alpha"), ("good", "beta")])
    # pool: 0.5 against 'good'; ranker: 0.3 for it → P(good better) = σ(−0.2) < 0.5
    assert pool_ranker(threshold=0.5)[0].rank([ex])[0].best == 0
    ex = example([("best", "alpha"), ("good", "gamma")])
    # ranker 4.0 − pool 0.5 → σ(3.5) = 0.97: clears 0.9, not 0.99
    assert pool_ranker(threshold=0.9)[0].rank([ex])[0].best == 1
    assert pool_ranker(threshold=0.99)[0].rank([ex])[0].best == 0


def test_full_and_prior_strategies() -> None:
    ranker, base = pool_ranker()
    ex = example([("best", "alpha"), ("good", "gamma"), ("poor", "delta")])
    (full,) = ranker.rank([ex], strategy="full")
    assert full.n_forward == 6 and full.best == 1
    base.queries.clear()
    (prior,) = ranker.rank([ex], strategy="prior")
    assert prior.n_forward == 0 and prior.order == (0, 1, 2) and not base.queries
    with pytest.raises(ValueError, match="unknown pool strategy"):
        ranker.rank([ex], strategy="bogus")


def test_full_needs_the_threshold_too_not_just_a_better_mean() -> None:
    # 'good' (alpha) vs 'best' (delta): pool −0.5, ranker +1.0 → log-odds +0.5 for 'good', σ = 0.62
    ex = example([("good", "alpha"), ("best", "delta")])
    for strategy in ("full", "pool-seeded"):
        assert pool_ranker(threshold=0.8)[0].rank([ex], strategy=strategy)[0].best == 1
        assert pool_ranker(threshold=0.6)[0].rank([ex], strategy=strategy)[0].best == 0


def test_on_consistent_evidence_full_ranks_as_pool_seeded_with_more_forwards() -> None:
    # the scripted ranker's debiased logits and the pool term are differences of per-candidate values,
    # so the strengths fitted to all pairs give every challenger exactly its log-odds vs the favourite
    ex = example([("poor", "delta"), ("good", "eps"), ("best", "alpha"), ("poor", "gamma"), ("x", "beta")])
    for threshold in (0.5, 0.8, 0.999):
        ranker, _ = pool_ranker(threshold=threshold)
        (seeded,) = ranker.rank([ex], strategy="pool-seeded")
        (full,) = ranker.rank([ex], strategy="full")
        assert (seeded.n_forward, full.n_forward) == (8, 20)
        assert full.order == seeded.order
        assert full.scores == pytest.approx(seeded.scores)


def test_full_outvotes_one_misjudged_pair_with_the_others() -> None:
    class MisjudgesOnePair(ScriptedRanker):
        """Reverses its verdict on gamma vs alpha; every other pair as the scripted ranker."""

        def pair_logits(self, queries):
            logits = super().pair_logits(queries)
            flip = [{q.first, q.second} == {"alpha", "gamma"} for q in queries]
            return np.where(flip, 2 * 0.7 - logits, logits)

    pool = PoolModel(strengths={"best": 1.0, "good": 0.5}, judgements={"best": 10, "good": 10})
    pool = pool.with_combination(Combination({"pool": 1.0, "ranker": 1.0}, threshold=0.5).to_dict())
    ranker = PoolRanker(pool, MisjudgesOnePair(), category_of=None)
    ex = example([("best", "alpha"), ("good", "gamma"), ("good", "delta"), ("good", "eps"), ("good", "beta")])
    # the favourite's one meeting with gamma says −4; gamma's meetings with the other three and the
    # favourite's with them say gamma is 4 better: strengths over all pairs give it +0.8
    assert ranker.rank([ex], strategy="pool-seeded")[0].best == 0
    (full,) = ranker.rank([ex], strategy="full")
    assert full.best == 1
    assert full.scores[1] == pytest.approx(-0.5 + 4 - 2 * 8 / 5)
    assert full.terms == pytest.approx({"pool": -0.5, "ranker": 0.8})


def test_examples_without_known_models_rank_exactly_as_the_base_ranker() -> None:
    ranker, base = pool_ranker()
    unknown = example([("x", "alpha"), ("y", "gamma"), ("z", "delta")], "u")
    known = example([("best", "alpha"), ("poor", "beta")], "k")
    mixed = ranker.rank([known, unknown])
    assert mixed[1] == base.rank([unknown])[0]
    assert mixed[1].terms is None and mixed[0].terms is not None


def test_scores_do_not_depend_on_batch_mates() -> None:
    ranker, _ = pool_ranker()
    examples = [
        example([("best", "alpha"), ("good", "gamma"), ("poor", "delta")], "a"),
        example([("good", "beta"), ("poor", "eps")], "b"),
        example([("best", "gamma")], "c"),
    ]
    together = ranker.rank(examples)
    alone = [ranker.rank([ex])[0] for ex in examples]
    assert together == alone
    assert together[2].n_forward == 0 and together[2].order == (0,)


def test_a_pool_without_combination_weights_is_refused() -> None:
    pool = PoolModel(strengths={"a": 0.0}, judgements={"a": 1})
    with pytest.raises(Exception, match="no combination weights"):
        PoolRanker(pool, ScriptedRanker())


def test_consensus_needs_an_embedder_and_uses_it() -> None:
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([[1.0, 0.0] if t != "delta" else [0.0, 1.0] for t in texts])

    pool = PoolModel(strengths={"best": 0.0, "poor": 0.0}, judgements={}).with_combination(
        Combination({"consensus": 5.0}, length_scale=100.0).to_dict()
    )
    ranker = PoolRanker(pool, None, embed=embed, category_of=None, strategy="prior")
    (ranking,) = ranker.rank([example([("poor", "delta"), ("best", "alpha"), ("best", "beta")])])
    assert calls and ranking.order[-1] == 0  # the odd one out ranks last


def test_pool_consensus_follows_the_strong_models_answer() -> None:
    def embed(texts):
        return np.array([[1.0, 0.0] if t.startswith("a") else [0.0, 1.0] for t in texts])

    pool = PoolModel(strengths={"strong": 2.0, "weak": 0.0}, judgements={}).with_combination(
        Combination({"pool_consensus": 5.0}, length_scale=100.0).to_dict()
    )
    ranker = PoolRanker(pool, None, embed=embed, category_of=None, strategy="prior")
    candidates = [
        ("weak", "beta"),
        ("weak", "bravo"),
        ("weak", "bingo"),
        ("weak", "alpha"),
        ("strong", "apple"),
    ]
    (ranking,) = ranker.rank([example(candidates)])
    # three weak answers agree with each other, but the weak "alpha" agrees with the strong model
    assert ranking.order[:2] == (3, 4)
    plain = PoolRanker(
        pool.with_combination(Combination({"consensus": 5.0}, length_scale=100.0).to_dict()),
        None, embed=embed, category_of=None, strategy="prior",
    )  # fmt: skip
    (unweighted,) = plain.rank([example(candidates)])
    assert set(unweighted.order[:3]) == {0, 1, 2}  # without the pool, the majority wins


def test_a_pairranker_strategy_applies_to_the_fallback_only() -> None:
    ranker, base = pool_ranker()
    unknown = example([("x", "alpha"), ("y", "gamma"), ("z", "delta")], "u")
    known = example([("best", "alpha"), ("poor", "beta")], "k")
    pooled, fallback = ranker.rank([known, unknown], strategy="bubble")
    assert fallback == base.rank([unknown], strategy="bubble")[0]
    assert pooled.n_forward == 2 and pooled.terms is not None


def test_load_ranker_builds_a_pool_ranker_from_a_pool_file(tmp_path) -> None:
    from llmblend.rank.registry import load_ranker

    path = tmp_path / "pool.json"
    PoolModel(strengths={"best": 1.0, "poor": -1.0}, judgements={}).with_combination(
        Combination({"pool": 1.0, "length": 0.5}, length_scale=100.0).to_dict()
    ).save(path)
    ranker = load_ranker(f"pool:{path}")
    assert isinstance(ranker, PoolRanker) and ranker.base is None  # no ranker term: no model loaded
    (ranking,) = ranker.rank([example([("poor", "alpha"), ("best", "beta")])])
    assert ranking.best == 1 and ranking.n_forward == 0


def test_a_lazy_base_is_built_only_when_an_example_needs_it() -> None:
    built = []

    def build() -> ScriptedRanker:
        built.append(1)
        return ScriptedRanker()

    pool = PoolModel(strengths={"best": 1.0, "poor": -1.0}, judgements={}).with_combination(
        Combination({"pool": 1.0}, length_scale=100.0).to_dict()
    )
    ranker = PoolRanker(pool, build, category_of=None)
    ranker.rank([example([("poor", "alpha"), ("best", "beta")])])
    assert not built and ranker.runtime == "lazy"
    ranker.rank([example([("x", "alpha"), ("y", "gamma")], "u")])  # no known model: the base ranks it
    assert built == [1] and ranker.runtime == "scripted"
