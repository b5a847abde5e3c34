"""How a ranking strategy's pairs are put to a costly scorer: in which orders, and within what budget.

PairRanker scores every pair in both orders (§3.2), which costs an LLM judge two calls a pair. With
``orders="random"`` each pair is asked once, in an order drawn from a hash of the seed and the two
answers, and the other order is taken as the opposite verdict: a judge's position bias then becomes
noise spread over both candidates instead of a skew (PRP, Qin et al., 2023), for half the calls.
The draw depends only on the seed and the texts, never on the batch or chunk a pair lands in.

A :class:`~llmblend.rank.budget.Budget` caps what each example may spend: when a round asks more
than the example has left, a seeded choice of whole pairs that fit is asked, and the example is
ranked from the comparisons made (least squares, which handles any comparison graph).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from llmblend.rank.base import PairQuery
from llmblend.rank.budget import Budget, Spend

#: Scores ordered pairs and says what each cost: ``(values, spends)`` with one
#: :class:`~llmblend.rank.budget.Spend` per query (``calls=1`` asked, ``cached=1`` read back).
MeteredScorer = Callable[[Sequence[PairQuery]], tuple[np.ndarray, Sequence[Spend]]]

Orders = Literal["both", "random"]
ORDERS: tuple[Orders, ...] = ("both", "random")


def _digest(*parts: str) -> int:
    joined = "\x1f".join(parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(joined).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Asking:
    """``orders``: ``"both"`` (every pair twice, debiased) or ``"random"`` (once, in a seeded order);
    ``budget``: the per-example cap; ``seed``: the draws of orders and of pairs cut by the budget."""

    orders: Orders = "both"
    budget: Budget = field(default_factory=Budget)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.orders not in ORDERS:
            raise ValueError(f"orders must be one of {', '.join(ORDERS)}; got {self.orders!r}")

    @property
    def calls_per_pair(self) -> int:
        return 2 if self.orders == "both" else 1

    def choose(
        self, source: str, candidates: Sequence[str], pairs: Sequence[tuple[int, int]], spent: Spend
    ) -> tuple[list[tuple[int, int]], bool]:
        """The ordered pairs to ask of those a strategy wants, and whether the budget cut them.

        ``pairs`` may hold both orders of a pair; each unordered pair is asked as a whole.
        """
        unordered = list(dict.fromkeys((min(i, j), max(i, j)) for i, j in pairs if i != j))
        allowance = self.budget.allowance(spent)
        cut = allowance is not None and allowance < len(unordered) * self.calls_per_pair
        if cut:
            assert allowance is not None
            rng = random.Random(_digest(str(self.seed), source, "budget", str(spent.calls)))
            rng.shuffle(unordered)
            unordered = sorted(unordered[: allowance // self.calls_per_pair])
        return [o for i, j in unordered for o in self._ordered(source, candidates, i, j)], cut

    def _ordered(self, source: str, candidates: Sequence[str], i: int, j: int) -> list[tuple[int, int]]:
        if self.orders == "both":
            return [(i, j), (j, i)]
        a, b = sorted((candidates[i], candidates[j]))
        i_first = (_digest(str(self.seed), source, a, b) & 1) == (candidates[i] == a)
        return [(i, j) if i_first else (j, i)]


def mirror_single_orders(matrix: np.ndarray, asked: Sequence[tuple[int, int]]) -> None:
    """Fill the unasked order of each pair asked once with the opposite value, so that the debiased
    comparison (§3.2) of a pair asked once is its one verdict."""
    for i, j in asked:
        if np.isnan(matrix[j, i]):
            matrix[j, i] = -matrix[i, j]
