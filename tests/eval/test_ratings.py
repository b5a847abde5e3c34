"""Ratings from pairwise battles (LLM-Blender §5 judgements as a tournament; Chatbot Arena's Elo and
Bradley–Terry): hand-computed Elo steps, a simulated tournament with known strengths, bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmblend.eval.ratings import Battle, RatingInterval, bootstrap_ratings, bradley_terry, elo_ratings

MODELS = ("m0", "m1", "m2", "m3", "m4")
#: True natural-log strengths: P(i beats j) = σ(θ_i − θ_j); neighbours 0.6 apart (≈104 Elo points).
THETA = np.array([0.0, 0.6, 1.2, 1.8, 2.4])
TIE_RATE = 0.1
N_BATTLES = 3000


def simulate(seed: int = 0) -> list[Battle]:
    """3,000 battles between random pairs of the five models, 10% of them ties.

    A tie happens with probability τ = 0.1 whatever the pair; otherwise ``model_a`` wins with
    ``q = (σ(θ_a − θ_b) − τ/2) / (1 − τ)``, so that its expected score (a tie counting ½) is exactly
    ``σ(θ_a − θ_b)``: the Bradley–Terry likelihood with ties as half wins then has its optimum at the
    true θ, and the fit can be compared with THETA directly.
    """
    rng = np.random.default_rng(seed)
    battles = []
    for _ in range(N_BATTLES):
        i, j = rng.choice(len(MODELS), size=2, replace=False)
        p = 1.0 / (1.0 + math.exp(-(THETA[i] - THETA[j])))
        q = (p - TIE_RATE / 2) / (1 - TIE_RATE)
        winner = "tie" if rng.random() < TIE_RATE else "a" if rng.random() < q else "b"
        battles.append(Battle(MODELS[i], MODELS[j], winner))
    return battles


@pytest.fixture(scope="module")
def battles() -> list[Battle]:
    return simulate()


def order(ratings: dict[str, float]) -> list[str]:
    return sorted(ratings, key=ratings.__getitem__)


# ---------------------------------------------------------------- Elo


def test_elo_matches_hand_computed_updates() -> None:
    # Step 1: both at 1000, e = 0.5, a wins: a 1000 + 4·0.5 = 1002, b 998.
    # Step 2: b (998) vs a (1002), tie: e_b = 1 / (1 + 10^(4/400)), b += 4·(0.5 − e_b), a the opposite.
    ratings = elo_ratings([Battle("a", "b", "a"), Battle("b", "a", "tie")])
    e_b = 1.0 / (1.0 + 10 ** (4 / 400))
    assert ratings["b"] == pytest.approx(998 + 4 * (0.5 - e_b))
    assert ratings["a"] == pytest.approx(1002 - 4 * (0.5 - e_b))
    assert sum(ratings.values()) == pytest.approx(2000)  # Elo moves points, it never creates them


def test_elo_depends_on_battle_order_and_its_settings() -> None:
    sequence = [Battle("a", "b", "a"), Battle("a", "b", "b")]
    assert elo_ratings(sequence)["a"] != elo_ratings(sequence[::-1])["a"]
    assert elo_ratings(sequence[:1], k=32, init=1500) == {"a": 1516.0, "b": 1484.0}


def test_elo_recovers_the_true_order(battles: list[Battle]) -> None:
    assert order(elo_ratings(battles)) == list(MODELS)


# ---------------------------------------------------------------- Bradley–Terry


def test_bradley_terry_recovers_the_true_order_and_strength_differences(battles: list[Battle]) -> None:
    ratings = bradley_terry(battles)
    assert order(ratings) == list(MODELS)
    assert np.mean(list(ratings.values())) == pytest.approx(1000.0)
    theta = np.array([ratings[m] for m in MODELS]) * math.log(10) / 400  # back to natural-log strengths
    # With ~300 battles per pair, the fitted differences scatter around the truth with a standard
    # deviation of 0.07-0.09 (measured over 60 simulation seeds, mean error < 0.01: the fit is
    # unbiased); 0.25 is about 3 standard deviations, yet well below the 0.6 between neighbours, so a
    # fit that got the scale (log10 vs ln), the sign or the tie weighting wrong fails.
    np.testing.assert_allclose(theta - theta[0], THETA - THETA[0], atol=0.25)


def test_bradley_terry_ignores_battle_order_and_handles_an_unbeaten_model() -> None:
    battles = [Battle("a", "b", "a"), Battle("b", "c", "a"), Battle("c", "a", "tie"), Battle("b", "c", "tie")]
    assert bradley_terry(battles) == pytest.approx(bradley_terry(battles[::-1]), abs=1e-3)
    unbeaten = bradley_terry([Battle("top", "x", "a"), Battle("x", "y", "tie"), Battle("y", "top", "b")])
    assert all(math.isfinite(r) for r in unbeaten.values())  # the tiny L2 keeps "top" finite
    assert order(unbeaten)[-1] == "top"


def test_a_fifty_fifty_pair_is_rated_equal() -> None:
    ratings = bradley_terry([Battle("a", "b", "a"), Battle("a", "b", "b"), Battle("b", "a", "tie")])
    assert ratings["a"] == pytest.approx(1000.0, abs=1e-3) and ratings["b"] == pytest.approx(1000.0, abs=1e-3)


# ---------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("method", ["elo", "bt"])
def test_bootstrap_intervals_contain_the_estimate_and_separate_best_from_worst(
    battles: list[Battle], method: str
) -> None:
    intervals = bootstrap_ratings(battles, method=method, rounds=1000, seed=1)
    assert set(intervals) == set(MODELS)
    for model, interval in intervals.items():
        assert isinstance(interval, RatingInterval)
        rating, low, high = interval
        assert low <= rating <= high, model
        assert high - low < 150, model  # 3,000 battles pin each rating to a few dozen points
    assert intervals["m4"].low > intervals["m0"].high
    assert order({m: i.rating for m, i in intervals.items()}) == list(MODELS)


def test_bootstrap_rating_is_the_full_fit_for_bt_and_the_median_for_online_elo(battles: list[Battle]) -> None:
    bt = bootstrap_ratings(battles, method="bt", rounds=50)
    assert {m: i.rating for m, i in bt.items()} == pytest.approx(bradley_terry(battles))
    # One round, seed 0: the "median" is that round's online Elo over the resampled battles.
    elo = bootstrap_ratings(battles, method="elo", rounds=1, k=8)
    sample = np.random.default_rng(0).integers(0, len(battles), size=len(battles))
    expected = elo_ratings([battles[i] for i in sample], k=8)
    assert {m: i.rating for m, i in elo.items()} == pytest.approx(expected)
    assert all(i.low == pytest.approx(i.rating) == pytest.approx(i.high) for i in elo.values())


def test_bootstrap_is_repeatable_with_a_seed(battles: list[Battle]) -> None:
    few = battles[:300]
    assert bootstrap_ratings(few, "bt", rounds=20, seed=3) == bootstrap_ratings(few, "bt", rounds=20, seed=3)
    assert bootstrap_ratings(few, "bt", rounds=20, seed=3) != bootstrap_ratings(few, "bt", rounds=20, seed=4)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a", "a", "a"), "two different models"),
        (("a", "b", "A"), "winner must be one of"),
        (("", "b", "tie"), "non-empty model name"),
        (("a", None, "tie"), "non-empty model name"),
    ],
)
def test_battle_validation(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Battle(*args)


def test_rating_input_validation() -> None:
    one = [Battle("a", "b", "a")]
    with pytest.raises(ValueError, match="no battles"):
        bradley_terry([])
    with pytest.raises(TypeError, match="battle 1"):
        elo_ratings([Battle("a", "b", "a"), {"model_a": "a"}])  # type: ignore[list-item]
    assert elo_ratings([("a", "b", "tie")]) == {"a": 1000.0, "b": 1000.0}  # plain triples are fine
    with pytest.raises(ValueError, match="k must be positive"):
        elo_ratings(one, k=0)
    with pytest.raises(ValueError, match="unknown rating method 'glicko'"):
        bootstrap_ratings(one, method="glicko")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"take no option\(s\) \['l2'\]"):
        bootstrap_ratings(one, method="elo", l2=0.1)
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        bootstrap_ratings(one, rounds=0)
