"""Does a ranker judge better when it sees whole answers? Pair token budget 256 / 384 / 512.

The shipped ranker was trained with a 256-token pair budget (each answer gets about 104 tokens),
``--model`` may name one trained with another; MiniLM has 512 positions. For each budget: accuracy
of the debiased comparison on the alpaca-blend dev candidate pairs whose oracle scores differ by
more than 0.1 (the pairs that move a pick), and pairs per second, all in one run (runtime
``onnx``, exact).

    .venv/bin/python bench/ranker_budget.py [--model DIR] [--budgets 256 384] [--max-pairs 1000]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.rank.base import PairQuery
from llmblend.rank.pairranker import PairRanker

ORACLE = "gpt4_win"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--model", default=None, help="a PairRanker folder (default: the shipped one)")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 384, 512], help="tokens per pair")
    parser.add_argument("--max-pairs", type=int, default=300)
    args = parser.parse_args()
    pairs = []
    for ex in load_mixinstruct(args.data):
        for i, a in enumerate(ex.candidates):
            for b in ex.candidates[i + 1 :]:
                if abs(a.scores[ORACLE] - b.scores[ORACLE]) > 0.1 and a.text != b.text:
                    sign = np.sign(a.scores[ORACLE] - b.scores[ORACLE])
                    pairs.append((PairQuery(ex.source, a.text, b.text), sign))
    pairs = pairs[: args.max_pairs]
    queries = [q for q, _ in pairs]
    truth = np.array([s for _, s in pairs])
    print(f"{len(pairs)} dev pairs > 0.1 apart; runtime {args.runtime}")
    if args.model:
        ranker = PairRanker.from_pretrained(args.model, runtime=args.runtime, batch_size=16)
    else:
        ranker = PairRanker.default(runtime=args.runtime, batch_size=16)
    print(f"ranker {args.model or 'shipped'}, trained at {ranker.config.max_length} tokens per pair")
    print("| pair budget (tokens) | tokens per answer | accuracy | pairs/s |")
    print("|---:|---:|---:|---:|")
    for budget in args.budgets:
        ranker.config = replace(ranker.config, max_length=budget)
        per_answer = (budget - ranker.config.source_max_length) // 2
        started = time.perf_counter()
        margins = ranker.compare_pairs(queries)
        seconds = time.perf_counter() - started
        accuracy = float(np.mean(np.sign(margins) == truth))
        print(f"| {budget} | ≤ {per_answer} | {100 * accuracy:.1f}% | {2 * len(queries) / seconds:.1f} |")


if __name__ == "__main__":
    main()
