"""The pool model (Bradley–Terry strengths of source models) and the calibrated combination."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmblend.rank.calibration import expected_calibration_error
from llmblend.rank.combine import (
    Combination,
    consensus_scores,
    fit_switch,
    length_matrix,
)
from llmblend.rank.pool import (
    Comparison,
    PoolFileError,
    PoolModel,
    comparisons_from_cmp_results,
    comparisons_from_pairs,
    comparisons_from_scores,
    fit_pool,
    id_prefix_category,
)
from llmblend.types import Candidate, Example, PreferencePair

TRUE = {"strong": 1.5, "middle": 0.0, "weak": -1.5}


def synthetic_comparisons(n: int, seed: int = 0) -> list[Comparison]:
    rng = np.random.default_rng(seed)
    models = list(TRUE)
    out = []
    for _ in range(n):
        a, b = rng.choice(models, 2, replace=False)
        p = 1 / (1 + np.exp(-(TRUE[a] - TRUE[b])))
        out.append(Comparison(str(a), str(b), float(rng.random() < p)))
    return out


def test_fit_pool_recovers_bradley_terry_strengths() -> None:
    pool = fit_pool(synthetic_comparisons(6000), prior_scale=10.0)
    s = pool.strengths
    assert s["strong"] > s["middle"] > s["weak"]
    # differences are identified (the prior centres the mean near 0)
    assert abs((s["strong"] - s["weak"]) - 3.0) < 0.3
    assert pool.judgements["strong"] > 3000


def test_shrinkage_pulls_a_rarely_judged_model_towards_the_prior() -> None:
    many = [Comparison("a", "b", 1.0)] * 200 + [Comparison("b", "a", 1.0)] * 50
    few = [Comparison("c", "b", 1.0)] * 2
    pool = fit_pool(many + few, prior_scale=1.0)
    # c won both its games against b, as a did 80% of its games; c has far less evidence
    assert pool.strengths["a"] > pool.strengths["c"] > pool.strengths["b"]
    loose = fit_pool(many + few, prior_scale=100.0)
    assert loose.strengths["c"] - loose.strengths["b"] > pool.strengths["c"] - pool.strengths["b"]


def test_unknown_models_get_the_explicit_prior() -> None:
    pool = fit_pool(synthetic_comparisons(500))
    assert pool.strength("never-seen") == pool.unknown_strength == 0.0
    assert pool.strength(None) == 0.0
    assert not pool.knows("never-seen") and pool.knows("strong")
    assert pool.favourite(["weak", "never-seen", "strong"]) == 2


def test_category_offsets_capture_a_model_that_is_strong_only_in_one_category() -> None:
    rng = np.random.default_rng(1)
    comparisons = []
    for _ in range(3000):
        category = "code" if rng.random() < 0.5 else "chat"
        strong = "coder" if category == "code" else "chatter"
        comparisons.append(Comparison(strong, "coder" if strong == "chatter" else "chatter", 1.0, category))
    pool = fit_pool(comparisons, use_categories=True, category_prior_scale=2.0)
    assert pool.strength("coder", "code") > pool.strength("chatter", "code")
    assert pool.strength("chatter", "chat") > pool.strength("coder", "chat")
    flat = fit_pool(comparisons)
    assert not flat.category_offsets


def test_comparisons_from_each_kind_of_judged_data() -> None:
    example = Example(
        "koala/1",
        "q",
        candidates=[
            Candidate("m1", "a", {"gpt4_win": 0.9}),
            Candidate("m2", "b", {"gpt4_win": 0.1}),
            Candidate("m3", "c", {"gpt4_win": 0.1}),
            Candidate("m4", "d"),  # no oracle score: not compared
        ],
        cmp_results={"m1,m2": "A is better", "m2,m3": "Same bad", "m1,m3": "B is better"},
    )
    by_score = comparisons_from_scores([example], "gpt4_win", category_of=id_prefix_category)
    assert {(c.model_a, c.model_b, c.outcome) for c in by_score} == {
        ("m1", "m2", 1.0),
        ("m1", "m3", 1.0),
        ("m2", "m3", 0.5),
    }
    assert {c.category for c in by_score} == {"koala"}
    cmp = comparisons_from_cmp_results([example])
    assert sorted(c.outcome for c in cmp) == [0.0, 0.5, 1.0]
    pairs = [
        PreferencePair("q", "x", "y", "s", chosen_model="m1", rejected_model="m2"),
        PreferencePair("q", "x", "y", "s"),  # no model names: ignored
    ]
    assert comparisons_from_pairs(pairs) == [Comparison("m1", "m2", 1.0, None)]


def test_fit_pool_refuses_empty_data_and_bad_scales() -> None:
    with pytest.raises(ValueError, match="no judged comparisons"):
        fit_pool([])
    with pytest.raises(ValueError, match="prior scales"):
        fit_pool(synthetic_comparisons(10), prior_scale=0)


def test_pool_file_round_trip_and_clear_errors(tmp_path: Path) -> None:
    pool = fit_pool(synthetic_comparisons(300), oracle="gpt4_win").with_combination(
        Combination({"pool": 1.0, "ranker": 0.5}, length_scale=300.0, threshold=0.7).to_dict()
    )
    path = tmp_path / "pool.json"
    pool.save(path)
    assert PoolModel.load(path) == pool
    with pytest.raises(PoolFileError, match="no such pool file"):
        PoolModel.load(tmp_path / "missing.json")
    values = json.loads(path.read_text())
    values["stregnths"] = values.pop("strengths")
    path.write_text(json.dumps(values))
    with pytest.raises(PoolFileError, match="not a pool file"):
        PoolModel.load(path)
    values["strengths"] = {}
    path.write_text(json.dumps(values))
    with pytest.raises(PoolFileError, match="unknown key 'stregnths'"):
        PoolModel.load(path)


def test_combination_checks_its_values() -> None:
    with pytest.raises(ValueError, match="unknown combination term 'lenght'"):
        Combination({"lenght": 1.0})
    with pytest.raises(ValueError, match="threshold"):
        Combination({"pool": 1.0}, threshold=1.0)
    with pytest.raises(ValueError, match="unknown combination key"):
        Combination.from_dict({"weights": {}, "treshold": 0.6})


def test_fit_switch_weighs_the_informative_term_and_not_the_noise() -> None:
    rng = np.random.default_rng(0)
    features, oracle, favourites = [], [], []
    for _ in range(400):
        n = 6
        theta, r = rng.normal(size=n), rng.normal(size=(n, n))
        terms = {"pool": theta[:, None] - theta[None, :], "ranker": (r - r.T) / 2}
        quality = 2.0 * theta + rng.gumbel(size=n)  # latent quality: pool-driven, plus noise
        favourite = int(np.argmax(theta))
        quality[favourite] += 0.5  # the favourite's extra edge: the intercept should be negative
        features.append(terms)
        oracle.append(quality)
        favourites.append(favourite)
    bias, weights = fit_switch(features, oracle, favourites, ("pool", "ranker"))
    assert weights["pool"] > 1.0 and abs(weights["ranker"]) < 0.2
    assert bias < 0


def test_terms_are_antisymmetric_and_consensus_favours_the_typical_answer() -> None:
    lengths = length_matrix(["a", "abcd", "ab"], scale=2.0)
    np.testing.assert_allclose(lengths, -lengths.T)
    assert lengths[1, 0] > 0
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    c = consensus_scores(embeddings)
    assert c[1] > c[2] and c[0] > c[2]


def test_pool_consensus_weighs_each_answer_by_its_models_odds() -> None:
    # answers 0 and 1 agree with each other; 2 agrees with 3, which a much stronger model wrote
    embeddings = np.array([[1.0, 0.0], [0.95, 0.05], [0.05, 0.95], [0.0, 1.0]])
    plain = consensus_scores(embeddings)
    np.testing.assert_allclose(consensus_scores(embeddings, [0.7, 0.7, 0.7, 0.7]), plain)
    weighted = consensus_scores(embeddings, [0.0, 0.0, 0.0, 3.0])
    assert plain[1] == pytest.approx(plain[2])  # a tie without the pool...
    assert weighted[2] > weighted[1] + 0.3  # ...broken towards the strong model's answer
    # the weights are odds e^θ: shifting every strength changes nothing
    np.testing.assert_allclose(consensus_scores(embeddings, [5.0, 5.0, 5.0, 8.0]), weighted)


def test_expected_calibration_error() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    calibrated = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(p, calibrated) < 0.02
    assert expected_calibration_error(np.full(1000, 0.9), np.zeros(1000)) == pytest.approx(0.9)


def test_judged_examples_keep_only_scored_candidates() -> None:
    from llmblend.train.pool import judged_examples

    partly = Example("a", "q", candidates=[Candidate("m1", "x", {"s": 1.0}), Candidate("m2", "y"),
                                           Candidate("m3", "z", {"s": 0.0})])  # fmt: skip
    lonely = Example("b", "q", candidates=[Candidate("m1", "x", {"s": 1.0}), Candidate("m2", "y")])
    (kept,) = judged_examples([partly, lonely], "s")
    assert [c.model for c in kept.candidates] == ["m1", "m3"]
