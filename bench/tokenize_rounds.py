"""Tokenizing across a strategy's rounds: how much of PairRanker's input work repeats itself.

Each round of a ranking strategy (bubble: N−1 rounds; sparse-refine: a few) asks for pairs of
texts the earlier rounds already tokenized. This bench records the pair queries every round of
``--strategy`` sends for the first ``--examples`` examples of a MixInstruct file (one scorer call
per round, all examples together, as ``llmblend rank`` batches them), then replays those calls
through ``PairRanker.encode_pairs`` with its token cache off and on, one thread, and reports
tokenized pairs/s and the cache's hits. Ranking itself is not timed (it is the same either way).

    .venv/bin/python bench/tokenize_rounds.py --strategy bubble --examples 48
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.rank.base import PairQuery, rank_items
from llmblend.rank.pairranker import PairRanker
from llmblend.rank.strategies import run_strategy


def recorded_rounds(ranker: PairRanker, examples, strategy: str) -> list[list[PairQuery]]:
    """The pair queries of each scorer call the strategy makes (random logits: only the pattern counts)."""
    rounds: list[list[PairQuery]] = []
    rng = np.random.default_rng(0)

    def record(queries):
        rounds.append(list(queries))
        return rng.normal(size=len(queries))

    run_strategy(strategy, rank_items(examples), record)
    return rounds


def replay_seconds(ranker: PairRanker, rounds: list[list[PairQuery]], batch_size: int) -> float:
    started = time.perf_counter()
    for queries in rounds:
        for start in range(0, len(queries), batch_size):
            ranker.encode_pairs(queries[start : start + batch_size])
    return time.perf_counter() - started


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--strategy", default="bubble")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    examples = load_mixinstruct(args.data)[: args.examples]
    ranker = PairRanker.default(runtime="fp32")
    rounds = recorded_rounds(ranker, examples, args.strategy)
    pairs = sum(len(r) for r in rounds)
    print(f"{args.strategy}: {len(rounds)} rounds, {pairs} pairs for {len(examples)} examples\n")
    print("| token cache | seconds | pairs/s | hits | misses |\n|---|---:|---:|---:|---:|")
    for size in (0, 8192):
        ranker.token_cache.resize(size)
        ranker.token_cache.clear()
        seconds = replay_seconds(ranker, rounds, args.batch_size)
        cache = ranker.token_cache
        label = "off" if size == 0 else f"{size} texts"
        print(f"| {label} | {seconds:.2f} | {pairs / seconds:.0f} | {cache.hits} | {cache.misses} |")


if __name__ == "__main__":
    main()
