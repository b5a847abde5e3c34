"""PairRanker strategies on real data: throughput, forwards, and quality vs number of comparisons.

Part 1 (throughput): the packaged all-MiniLM-L6-v2 as a PairRanker ranks alpaca-blend dev examples
(N = 11 candidates) with each strategy; pairs/s, examples/s and forwards per example.

Part 2 (quality vs comparisons, LLM-Blender §3.2's trade-off): a trained PairRanker scores every
ordered pair of every dev example once (the full matrix); each strategy then runs against those
cached logits (the model is deterministic, so this is exactly what live calls would return) and is
evaluated against the GPT-4 oracle: mean oracle score of the top-1 pick, % ≥ the best single model,
mean Spearman, next to the baselines.

    .venv/bin/python bench/bench_ranker_strategies.py --model build/rankers/pairranker-minilm-cpu/best
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.eval.ranking import correlation, selection_quality
from llmblend.rank.base import rank_items
from llmblend.rank.baselines import LongestRanker, MBRRanker
from llmblend.rank.pairranker import PairRanker
from llmblend.rank.strategies import full_matrix_scorer, run_strategy

STRATEGIES = ("max-logits", "max-wins", "sparse-refine", "knockout", "bubble")
ORACLE = "gpt4_win"


def throughput(examples, ranker: PairRanker, n_examples: int) -> None:
    print(f"\n## Throughput: {n_examples} dev examples, N = 11, lengths {ranker.config.max_length} max")
    print(f"{'strategy':<14} {'fwd/example':>11} {'pairs/s':>8} {'examples/s':>10} {'s/example':>9}")
    subset = examples[:n_examples]
    for name in STRATEGIES:
        started = time.perf_counter()
        rankings = ranker.rank(subset, strategy=name)
        seconds = time.perf_counter() - started
        forwards = sum(r.n_forward for r in rankings)
        print(
            f"{name:<14} {forwards / len(subset):>11.1f} {forwards / seconds:>8.1f} "
            f"{len(subset) / seconds:>10.3f} {seconds / len(subset):>9.2f}"
        )


def cached_scorer(ranker: PairRanker, examples):
    """Every ordered pair of every example scored once (timed); a scorer that looks them up."""
    started = time.perf_counter()
    scorer = full_matrix_scorer(ranker.pair_logits, rank_items(examples))
    seconds = time.perf_counter() - started
    pairs = sum(len(e.candidates) * (len(e.candidates) - 1) for e in examples)
    print(f"full matrices: {pairs} pair forwards in {seconds:.0f} s ({pairs / seconds:.1f} pairs/s)")
    return scorer


def quality(examples, ranker: PairRanker) -> None:
    print(f"\n## Quality vs comparisons on {len(examples)} dev instructions (oracle: {ORACLE})")
    scorer = cached_scorer(ranker, examples)
    rankings = {f"pairranker/{name}": run_strategy(name, rank_items(examples), scorer) for name in STRATEGIES}
    rankings["longest"] = LongestRanker().rank(examples)
    rankings["mbr:chrf"] = MBRRanker("chrf").rank(examples)
    selection = selection_quality(examples, rankings, ORACLE)
    spearman = {name: correlation(examples, r, ORACLE, name).spearman for name, r in rankings.items()}
    print(f"best single model: {selection.best_model} (mean {selection.best_model_mean:.4f})")
    print(f"{'method':<26} {'fwd/ex':>7} {'top-1 mean':>10} {'>= best':>8} {'top-3':>6} {'spearman':>9}")
    for row in selection.rows:
        if row.kind == "model" and row.method != f"model: {selection.best_model}":
            continue
        fwd = "" if row.mean_forward is None else f"{row.mean_forward:.1f}"
        rho = spearman.get(row.method)
        rho_text = "" if rho is None else f"{rho:.3f}"
        print(
            f"{row.method:<26} {fwd:>7} {row.mean_score:>10.4f} {row.at_least_best * 100:>7.1f}% "
            f"{row.top3 * 100:>5.1f}% {rho_text:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--model", type=Path, help="a trained PairRanker folder (part 2)")
    parser.add_argument("--throughput-examples", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N dev instructions for part 2")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    examples = load_mixinstruct(args.dev)
    if not args.skip_throughput:
        packaged = PairRanker.from_backbone(
            "sentence-transformers/all-MiniLM-L6-v2", source_max_length=48, candidate_max_length=104
        )
        throughput(examples, packaged, args.throughput_examples)
    if args.model:
        quality(examples[: args.limit], PairRanker.from_pretrained(args.model))


if __name__ == "__main__":
    main()
