"""PairRanker runtimes on CPU: fp32 torch, bf16 autocast, ONNX Runtime fp32 (fused) and int8.

Builds N labelled dev pairs (seeded) from a MixInstruct file, two candidates of one instruction
whose oracle scores (``gpt4_win``) differ by at least ``--min-margin``, and scores them with each
runtime as debiased comparisons (both orders, halved, as ``PairRanker.compare_pairs``). Reports
pairs/s (tokenisation included, export excluded; a warm-up batch first), the one-time export
time of the ONNX variants, pairwise accuracy against the oracle, and sign agreement and max
|Δ margin| against fp32 torch, as a Markdown table.

    .venv/bin/python bench/bench_ranker_runtimes.py --pairs 600
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmblend.data.mixinstruct import read_mixinstruct
from llmblend.rank.base import PairQuery
from llmblend.rank.pairranker import DEFAULT_MODEL_DIR, RUNTIMES, PairRanker

ORACLE = "gpt4_win"
WARMUP = 8


@dataclass(frozen=True, slots=True)
class Result:
    runtime: str
    margins: np.ndarray
    seconds: float
    setup: str


def dev_pairs(path: Path, n: int, min_margin: float, seed: int) -> tuple[list[PairQuery], np.ndarray]:
    """``n`` random pairs of distinct answers to one instruction whose oracle scores differ by at
    least ``min_margin``, in random order, with their labels (+1: ``first`` is better)."""
    rng = random.Random(seed)
    pool: list[tuple[PairQuery, int]] = []
    for example in read_mixinstruct(path):
        scored = {c.text: c.scores[ORACLE] for c in example.candidates if ORACLE in c.scores}
        for (a, score_a), (b, score_b) in itertools.combinations(scored.items(), 2):
            if abs(score_a - score_b) >= min_margin:
                if rng.random() < 0.5:
                    a, b, score_a, score_b = b, a, score_b, score_a
                pool.append((PairQuery(example.source, a, b), 1 if score_a > score_b else -1))
    if not pool:
        raise SystemExit(f"{path}: no pair of candidates differs by {min_margin} in {ORACLE}")
    sample = rng.sample(pool, min(n, len(pool)))
    return [q for q, _ in sample], np.array([label for _, label in sample])


def run(args: argparse.Namespace, queries: list[PairQuery]) -> list[Result]:
    """Every runtime on ``queries``; fp32 torch first (the reference). The first call of an ONNX
    runtime exports, fuses (and quantizes) the graph into the cache: timed apart as set-up."""
    results = []
    for runtime in RUNTIMES:
        ranker = PairRanker.from_pretrained(
            args.model, device="cpu", batch_size=args.batch_size, runtime=runtime
        )
        started = time.perf_counter()
        ranker.compare_pairs(queries[:WARMUP])
        setup = time.perf_counter() - started
        started = time.perf_counter()
        margins = ranker.compare_pairs(queries)
        results.append(Result(runtime, margins, time.perf_counter() - started, f"{setup:.1f} s"))
    return results


def default_runtime(results: list[Result], labels: np.ndarray, max_loss: float = 0.005) -> str:
    """The fastest runtime whose pairwise accuracy is at most ``max_loss`` below fp32's."""
    reference = accuracy(results[0].margins, labels)
    eligible = [r for r in results if accuracy(r.margins, labels) >= reference - max_loss]
    return min(eligible, key=lambda r: r.seconds).runtime


def accuracy(margins: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.sign(margins) == labels))


def table(results: list[Result], labels: np.ndarray) -> str:
    reference = results[0].margins
    lines = [
        "| runtime | pairs/s | setup | accuracy vs oracle | sign agreement vs fp32 | max abs Δ margin "
        "| mean abs Δ margin |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        correct = accuracy(r.margins, labels)
        agree = float(np.mean(np.sign(r.margins) == np.sign(reference)))
        delta = np.abs(r.margins - reference)
        rate = len(r.margins) / r.seconds
        lines.append(
            f"| {r.runtime} | {rate:.1f} | {r.setup} | {correct:.3f} | {agree:.3f} "
            f"| {delta.max():.2g} | {delta.mean():.2g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="default: the shipped ranker")
    parser.add_argument("--dev", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--min-margin", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    queries, labels = dev_pairs(args.dev, args.pairs, args.min_margin, args.seed)
    with tempfile.TemporaryDirectory(prefix="llmblend-onnx-bench-") as scratch:
        os.environ["LLMBLEND_CACHE"] = scratch  # a fresh ONNX cache, so the export is timed
        results = run(args, queries)
    print(
        f"\n## PairRanker runtimes: {args.model}, {len(labels)} dev pairs "
        f"(|Δ {ORACLE}| ≥ {args.min_margin}), batch {args.batch_size}, "
        f"{args.threads or torch.get_num_threads()} threads\n"
    )
    print(table(results, labels))
    print(f"\nfastest runtime within 0.5 point of fp32's accuracy: {default_runtime(results, labels)}")


if __name__ == "__main__":
    main()
