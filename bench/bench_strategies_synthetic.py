"""PairRanker inference strategies (LLM-Blender §3.2) on synthetic items with a known best answer.

Run: .venv/bin/python bench/bench_strategies_synthetic.py [--items 2000] [--n 11] [--seed 0]

Each item has N candidates with hidden quality q ~ N(0, 1). The synthetic scorer answers
f(i, j) = p_i − p_j + bias + ε_ij (bias 0.7, ε_ij independent per ordered pair), where p is the
quality the ranker perceives: p = q in the "pair noise" settings, p = q + N(0, 0.5²) in the
"systematic" one (a ranker that misjudges a candidate does so in every comparison, which no
strategy can average away). Per strategy: forward passes per item, scorer calls for the whole batch,
top-1 accuracy and mean Spearman ρ of the scores with q, and how often its top-1 equals full's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr

from llmblend.rank.base import PairQuery, RankItem
from llmblend.rank.strategies import run_strategy

STRATEGIES = ("full", "max-wins", "sparse-refine", "bubble", "knockout")
SETTINGS = {  # name → (pair noise σ, systematic noise τ)
    "pair noise σ=0.5": (0.5, 0.0),
    "pair noise σ=1.0": (1.0, 0.0),
    "systematic τ=0.5 + pair σ=0.25": (0.25, 0.5),
}

HEADER = "{:<14} {:>8} {:>5} {:>6} {:>8} {:>11} {:>5}"
ROW = "{:<14} {:>8.1f} {:>5} {:>6.3f} {:>8.3f} {:>11.3f} {:>5.1f}"


class Scorer:
    """f(i, j) = p_i − p_j + bias + ε; candidate texts are "k:i". Counts its calls."""

    def __init__(self, perceived: np.ndarray, sigma: float, seed: int, bias: float = 0.7) -> None:
        self.perceived = perceived
        n_items, n = perceived.shape
        self.noise = sigma * np.random.default_rng(seed).normal(size=(n_items, n, n))
        self.bias = bias
        self.calls = 0

    def __call__(self, queries: Sequence[PairQuery]) -> np.ndarray:
        self.calls += 1
        idx = np.array([[*map(int, q.first.split(":")), int(q.second.split(":")[1])] for q in queries])
        k, i, j = idx.T
        return self.perceived[k, i] - self.perceived[k, j] + self.bias + self.noise[k, i, j]


def evaluate(items: list[RankItem], quality: np.ndarray, perceived: np.ndarray, sigma: float, seed: int):
    """One row per strategy: name, forwards/item, calls, top-1, Spearman, top-1 = full's, seconds."""
    rows, full_best = [], None
    for name in STRATEGIES:
        scorer = Scorer(perceived, sigma, seed)  # the same noise for every strategy
        start = time.perf_counter()
        rankings = run_strategy(name, items, scorer)
        seconds = time.perf_counter() - start
        best = np.array([r.best for r in rankings])
        full_best = best if full_best is None else full_best
        top1 = np.mean(best == quality.argmax(1))
        rho = np.mean([spearmanr(r.scores, q)[0] for r, q in zip(rankings, quality, strict=True)])
        forwards = np.mean([r.n_forward for r in rankings])
        rows.append((name, forwards, scorer.calls, top1, rho, np.mean(best == full_best), seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--n", type=int, default=11, help="candidates per item")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    quality = rng.normal(size=(args.items, args.n))
    items = [RankItem(f"source {k}", [f"{k}:{i}" for i in range(args.n)]) for k in range(args.items)]
    print(f"{args.items} items × N = {args.n} candidates, seed {args.seed}, position bias 0.7")
    for setting, (sigma, tau) in SETTINGS.items():
        perceived = quality + tau * rng.normal(size=quality.shape)
        print(f"\n{setting}")
        print(HEADER.format("strategy", "fwd/item", "calls", "top-1", "spearman", "=full top-1", "sec"))
        for row in evaluate(items, quality, perceived, sigma, seed=args.seed + 1):
            print(ROW.format(*row))


if __name__ == "__main__":
    main()
