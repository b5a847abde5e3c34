"""Aggregating comparison matrices (LLM-Blender §3.2): hand-made matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from llmblend.rank.aggregate import (
    AGGREGATORS,
    aggregate,
    as_matrix,
    debias,
    get_aggregator,
    least_squares,
    max_logits,
    max_wins,
    pair_winner,
    scored_mask,
)
from llmblend.types import Ranking

NAN = np.nan

# f(i, j) with garbage on the diagonal, which every function must ignore.
M3 = np.array(
    [
        [99.0, 2.0, 1.0],
        [0.0, -7.0, -1.0],
        [3.0, 1.0, 5.0],
    ]
)
# D01 = -1, D02 = 1, D03 = 0 (tie), D12 = -1, D13 = 0 (tie), D23 = -1
M4 = np.array(
    [
        [0.0, 1.0, 2.0, 0.5],
        [3.0, 0.0, 0.0, 1.0],
        [0.0, 2.0, 0.0, -1.0],
        [0.5, 1.0, 1.0, 0.0],
    ]
)


def test_debias_is_exactly_antisymmetric_with_nan_diagonal() -> None:
    m = np.random.default_rng(0).normal(size=(7, 7)) * 3
    d = debias(m)
    off = ~np.eye(7, dtype=bool)
    assert np.array_equal(d[off], -d.T[off])  # exact, not approximate
    assert np.isnan(np.diag(d)).all()
    assert d[2, 5] == (m[2, 5] - m[5, 2]) / 2


def test_debias_is_nan_where_either_order_is_missing() -> None:
    m = M3.copy()
    m[0, 1] = NAN
    d = debias(m)
    assert np.isnan(d[0, 1]) and np.isnan(d[1, 0])
    assert d[0, 2] == -1.0 and d[2, 1] == 1.0
    assert scored_mask(m).tolist() == [[False, False, True], [False, False, True], [True, True, False]]


def test_max_logits_3x3_by_hand() -> None:
    # s0 = (2-0) + (1-3) = 0; s1 = (0-2) + (-1-1) = -4; s2 = (3-1) + (1+1) = 4
    assert max_logits(M3).tolist() == [0.0, -4.0, 4.0]


def test_max_wins_3x3_by_hand() -> None:
    # 0 beats 1, 2 beats 0, 2 beats 1
    assert max_wins(M3).tolist() == [1.0, 0.0, 2.0]


def test_max_logits_4x4_by_hand_with_ties() -> None:
    # s0 = 2(-1 + 1 + 0), s1 = 2(1 - 1 + 0), s2 = 2(-1 + 1 - 1), s3 = 2(0 + 0 + 1)
    scores = max_logits(M4)
    assert scores.tolist() == [0.0, 0.0, -2.0, 2.0]
    # equal scores keep candidate order
    assert Ranking.from_scores(scores).order == (3, 0, 1, 2)


def test_max_wins_4x4_by_hand_counts_ties_as_half() -> None:
    # 0: beats 2, ties 3; 1: beats 0, ties 3; 2: beats 1; 3: ties 0 and 1, beats 2
    assert max_wins(M4).tolist() == [1.5, 1.5, 1.0, 2.0]


def test_max_logits_is_the_papers_sum_on_a_full_matrix() -> None:
    m = np.random.default_rng(1).normal(size=(6, 6))
    expected = [sum(m[i, j] - m[j, i] for j in range(6) if j != i) for i in range(6)]
    np.testing.assert_allclose(max_logits(m), expected)


def test_all_equal_comparisons_tie_everyone() -> None:
    m = np.full((4, 4), 0.3)  # only a position bias: every debiased comparison is 0
    assert max_logits(m).tolist() == [0.0] * 4
    assert max_wins(m).tolist() == [1.5] * 4
    assert Ranking.from_scores(max_wins(m)).order == (0, 1, 2, 3)


def test_partial_matrix_uses_the_mean_over_scored_opponents() -> None:
    m = M3.copy()
    m[1, 0] = NAN  # the pair (0, 1) is no longer scored in both orders
    # 0 and 1 each have one opponent (2), rescaled to N - 1 = 2 opponents
    assert max_logits(m).tolist() == [-4.0, -4.0, 4.0]
    assert max_wins(m).tolist() == [0.0, 0.0, 2.0]


def test_candidates_without_comparisons_get_the_neutral_score() -> None:
    m = np.full((3, 3), NAN)
    assert max_logits(m).tolist() == [0.0, 0.0, 0.0]
    assert max_wins(m).tolist() == [1.0, 1.0, 1.0]
    assert least_squares(m).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("aggregator", list(AGGREGATORS.values()))
def test_zero_one_two_candidates(aggregator) -> None:
    assert aggregator(np.zeros((0, 0))).shape == (0,)
    assert aggregator([[5.0]]).tolist() == [0.0]
    two = aggregator([[0.0, 1.0], [-1.0, 0.0]])
    assert two.shape == (2,) and two[0] > two[1]


@pytest.mark.parametrize("aggregator", [debias, *AGGREGATORS.values()])
@pytest.mark.parametrize("shape", [(2, 3), (4,), (2, 2, 2)])
def test_non_square_input_is_refused_naming_the_shape(aggregator, shape) -> None:
    with pytest.raises(ValueError, match="square") as caught:
        aggregator(np.zeros(shape))
    assert str(shape) in str(caught.value)


def test_infinite_logits_are_refused_but_the_diagonal_is_ignored() -> None:
    with pytest.raises(ValueError, match="inf"):
        as_matrix([[0.0, np.inf], [1.0, 0.0]])
    assert max_logits([[np.inf, 1.0], [-1.0, np.nan]]).tolist() == [2.0, -2.0]


def test_least_squares_on_a_full_matrix_is_max_logits_over_2n() -> None:
    m = np.random.default_rng(2).normal(size=(5, 5))
    np.testing.assert_allclose(least_squares(m), max_logits(m) / 10)


def test_least_squares_recovers_qualities_from_a_spanning_path() -> None:
    q = np.array([0.5, -1.0, 2.0, 0.0])
    m = np.full((4, 4), NAN)
    for i, j in [(0, 1), (1, 2), (2, 3)]:  # a path: no pair is compared twice
        m[i, j] = q[i] - q[j] + 0.4  # + position bias
        m[j, i] = q[j] - q[i] + 0.4
    np.testing.assert_allclose(least_squares(m), q - q.mean())


def test_least_squares_centres_each_disconnected_group() -> None:
    m = np.full((4, 4), NAN)
    m[0, 1], m[1, 0] = 2.0, -2.0
    m[2, 3], m[3, 2] = -1.0, 1.0
    np.testing.assert_allclose(least_squares(m), [1.0, -1.0, -0.5, 0.5])


def test_pair_winner_breaks_ties_toward_the_lower_index() -> None:
    assert pair_winner(0.3, 4, 1) == 4
    assert pair_winner(-0.3, 4, 1) == 1
    assert pair_winner(0.0, 4, 1) == 1
    assert pair_winner(0.0, 2, 3) == 2


def test_registry_by_name() -> None:
    assert set(AGGREGATORS) >= {"max-logits", "max-wins"}
    assert get_aggregator("max-wins") is max_wins
    assert aggregate("max-logits", M3).tolist() == [0.0, -4.0, 4.0]
    with pytest.raises(ValueError, match="unknown aggregator 'borda'; known: max-logits, max-wins"):
        get_aggregator("borda")
