"""Asking a costly scorer: seeded single orders, per-example budgets, and the spend record."""

from __future__ import annotations

import numpy as np
import pytest

from llmblend.rank.asking import Asking, mirror_single_orders
from llmblend.rank.base import RankItem
from llmblend.rank.budget import Budget, Prices, Spend
from llmblend.rank.strategies import run_strategy

CANDIDATES = ["a", "bb", "ccc", "dddd"]


def test_both_orders_ask_every_pair_twice_and_random_once_in_a_text_seeded_order() -> None:
    pairs = [(0, 1), (1, 0), (2, 3), (3, 2)]
    both, cut = Asking().choose("q", CANDIDATES, pairs, Spend())
    assert both == [(0, 1), (1, 0), (2, 3), (3, 2)] and not cut
    once, _ = Asking("random", seed=1).choose("q", CANDIDATES, pairs, Spend())
    assert len(once) == 2 and {tuple(sorted(p)) for p in once} == {(0, 1), (2, 3)}
    reordered = ["dddd", "ccc", "bb", "a"]  # the same texts at other indices: the same shown order
    again, _ = Asking("random", seed=1).choose("q", reordered, [(3, 2), (1, 0)], Spend())
    shown = {(CANDIDATES[i], CANDIDATES[j]) for i, j in once}
    assert {(reordered[i], reordered[j]) for i, j in again} == shown
    with pytest.raises(ValueError, match="orders must be one of"):
        Asking("sometimes")  # type: ignore[arg-type]


def test_a_budget_keeps_whole_pairs_that_fit() -> None:
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    asked, cut = Asking(budget=Budget(max_calls=5)).choose("q", CANDIDATES, pairs, Spend())
    assert cut and len(asked) == 4  # two whole pairs; the fifth call would split one
    asked, cut = Asking(budget=Budget(max_calls=5)).choose("q", CANDIDATES, pairs, Spend(calls=5))
    assert cut and asked == []


def test_the_token_forecast_and_the_clock() -> None:
    spent = Spend(calls=2, prompt_tokens=150, completion_tokens=50)
    assert Budget(max_tokens=1000).allowance(spent) == 8  # 800 tokens left at 100 a call
    assert Budget(max_tokens=200).allowance(spent) == 0
    assert Budget(max_seconds=1.0).allowance(Spend(seconds=2.0)) == 0
    assert Budget().allowance(spent) is None and not Budget().limited
    with pytest.raises(ValueError, match="max_calls must be above 0"):
        Budget(max_calls=0)
    assert Prices(1.0, 2.0).cost(spent) == pytest.approx((150 + 100) / 1e6)
    assert Spend(1, 2, 3, 4, 0.5).as_record(Prices(1e6, 0))["cost_usd"] == 3.0


def test_single_orders_are_mirrored_so_debiasing_keeps_the_one_verdict() -> None:
    matrix = np.full((3, 3), np.nan)
    matrix[0, 1], matrix[2, 0] = 0.8, -0.4
    mirror_single_orders(matrix, [(0, 1), (2, 0)])
    assert matrix[1, 0] == -0.8 and matrix[0, 2] == 0.4


def test_a_cut_strategy_ranks_from_what_it_has_and_records_the_spend() -> None:
    calls: list[int] = []

    def scorer(queries):
        calls.append(len(queries))
        values = np.array([len(q.first) - len(q.second) for q in queries], dtype=float)
        return values, [Spend(calls=1, prompt_tokens=10) for _ in queries]

    items = [RankItem("q", CANDIDATES)]
    (full,) = run_strategy("full", items, scorer, asking=Asking())
    assert full.order == (3, 2, 1, 0) and full.usage == {
        **Spend(12, 0, 120, 0, full.usage["seconds"]).as_record(),
        "budget_cut": False,
    }
    (cut,) = run_strategy("knockout", items, scorer, asking=Asking(budget=Budget(max_calls=4)))
    assert cut.usage["calls"] == 4 and cut.usage["budget_cut"] and cut.n_forward == 4
    assert set(cut.order) == {0, 1, 2, 3}
