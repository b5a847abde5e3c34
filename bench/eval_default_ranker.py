"""Every figure of the default ranker's model card, on data it was neither trained nor tuned on.

1. alpaca-blend dev (120 instructions × 11 models, GPT-4 oracle ``gpt4_win``): the model scores
   every ordered pair of every instruction once (the full matrix); each strategy then runs on those
   cached logits, which is exactly what live calls return (the model is deterministic). Reported:
   top-1 selection (mean oracle score, % ≥ the best single model, % in the oracle top 3), mean
   per-instruction Spearman, candidate-pair accuracy of the ranking, and direct pairwise accuracy
   of the debiased comparisons (all decided pairs, and pairs ≥ 0.1 apart as in training) — next to
   random, longest, MBR/consensus with four similarities, the best single model and the oracle.
2. Time to rank 11 candidates live, per strategy (a few dev instructions).
3. Out of domain: accuracy on the HHH-alignment pairs (human preferences), and per-question
   Spearman with GPT-4's 1–10 scores on arena-bench-v1 (15 scored models per question).

    .venv/bin/python bench/eval_default_ranker.py --out build/eval-default-ranker.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_ranker_strategies import cached_scorer
from llmblend.data.convert import convert
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.data.preferences import read_preferences
from llmblend.eval.ranking import (
    candidate_pair_accuracy,
    correlation,
    fmt_number,
    fmt_percent,
    markdown_table,
    selection_quality,
)
from llmblend.rank.base import PairQuery, rank_items
from llmblend.rank.pairranker import PairRanker
from llmblend.rank.registry import load_ranker
from llmblend.rank.strategies import run_strategy
from llmblend.types import prompt_text

STRATEGIES = ("full", "max-wins", "sparse-refine", "knockout", "bubble")
BASELINES = ("random", "longest", "mbr:embedding", "mbr:chrf", "mbr:bleu", "mbr:token-f1")
TRAINING_MARGIN = 0.1


def direct_pair_accuracy(examples, scorer, oracle: str, min_margin: float) -> tuple[float, int]:
    """Accuracy of the debiased comparison (f(a,b) − f(b,a)) / 2 on candidate pairs whose oracle
    scores differ by more than ``min_margin`` (> 0 always)."""
    correct = total = 0
    for example in examples:
        scored = [c for c in example.candidates if oracle in c.scores]
        for i, a in enumerate(scored):
            for b in scored[i + 1 :]:
                gap = a.scores[oracle] - b.scores[oracle]
                if abs(gap) <= min_margin or a.text == b.text:
                    continue
                ab, ba = scorer(
                    [PairQuery(example.source, a.text, b.text), PairQuery(example.source, b.text, a.text)]
                )
                correct += int(np.sign(ab - ba) == np.sign(gap))
                total += 1
    return (correct / total if total else float("nan")), total


def dev_figures(ranker: PairRanker, dev: Path, limit: int | None, lines: list[str]) -> None:
    examples = load_mixinstruct(dev)[:limit]
    oracle = "gpt4_win"
    started = time.perf_counter()
    scorer = cached_scorer(ranker, examples)
    lines.append(
        f"Full matrices of {len(examples)} dev instructions: {time.perf_counter() - started:.0f} s.\n"
    )
    rankings = {f"pairranker ({s})": run_strategy(s, rank_items(examples), scorer) for s in STRATEGIES}
    for spec in BASELINES:
        rankings[spec] = load_ranker(spec).rank(examples)
    selection = selection_quality(examples, rankings, oracle)
    rho = {m: correlation(examples, r, oracle, m) for m, r in rankings.items()}
    pairs = {m: candidate_pair_accuracy(examples, r, oracle, m) for m, r in rankings.items()}
    headers = [
        "method",
        "fwd/instr.",
        "top-1 gpt4_win",
        f"≥ {selection.best_model}",
        "oracle top-3",
        "Spearman",
        "pair acc. (ranking)",
    ]
    rows = []
    for row in selection.rows:
        if row.kind == "model" and row.method != f"model: {selection.best_model}":
            continue
        c, p = rho.get(row.method), pairs.get(row.method)
        rows.append(
            [
                row.method,
                "" if row.mean_forward is None else f"{row.mean_forward:.1f}",
                fmt_number(row.mean_score),
                fmt_percent(row.at_least_best),
                fmt_percent(row.top3),
                "" if c is None else fmt_number(c.spearman, 3),
                "" if p is None else fmt_percent(p.accuracy),
            ]
        )
    lines.append(
        f"### alpaca-blend dev: selection and agreement with the oracle (best single model "
        f"{selection.best_model}, mean {selection.best_model_mean:.4f})\n"
    )
    lines.append(markdown_table((headers, rows)) + "\n")
    every, n_every = direct_pair_accuracy(examples, scorer, oracle, 0.0)
    wide, n_wide = direct_pair_accuracy(examples, scorer, oracle, TRAINING_MARGIN)
    lines.append(
        f"Direct pairwise accuracy of the debiased comparison on dev: {every:.2%} of {n_every} "
        f"candidate pairs with different oracle scores; {wide:.2%} of {n_wide} pairs more than "
        f"{TRAINING_MARGIN} apart (as the training pairs).\n"
    )


def timing(ranker: PairRanker, dev: Path, n: int, lines: list[str]) -> None:
    examples = load_mixinstruct(dev)[:n]
    rows = []
    for strategy in STRATEGIES:
        started = time.perf_counter()
        rankings = ranker.rank(examples, strategy=strategy)
        seconds = time.perf_counter() - started
        forwards = sum(r.n_forward for r in rankings)
        rows.append([strategy, f"{forwards / n:.1f}", f"{seconds / n:.2f}", f"{forwards / seconds:.1f}"])
    lines.append(
        f"### Time to rank 11 candidates ({n} dev instructions, runtime {ranker.runtime}, "
        f"batch {ranker.batch_size})\n"
    )
    lines.append(markdown_table((["strategy", "forwards", "s / instruction", "pairs / s"], rows)) + "\n")


def hhh_figures(ranker: PairRanker, data_dir: Path, work: Path, lines: list[str]) -> None:
    path = work / "hhh.jsonl"
    convert("hhh", data_dir, path)
    pairs = list(read_preferences(path))
    margins = ranker.compare(
        [prompt_text(p.prompt) for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs]
    )
    longest = np.array([len(p.chosen.split()) - len(p.rejected.split()) for p in pairs], dtype=float)
    rows = []
    for subset in [*sorted({p.source for p in pairs}), "all"]:
        mask = np.array([subset in ("all", p.source) for p in pairs])
        rows.append(
            [
                subset,
                str(int(mask.sum())),
                fmt_percent(float(np.mean(margins[mask] > 0))),
                fmt_percent(float(np.mean(longest[mask] > 0))),
            ]
        )
    lines.append("### HHH-alignment (human preferences; PairRM, a 0.4B DeBERTa-v3-large, reports 84.62)\n")
    lines.append(markdown_table((["subset", "pairs", "pairranker acc.", "longest acc."], rows)) + "\n")


def arena_figures(
    ranker: PairRanker, data_dir: Path, work: Path, strategy: str, limit: int | None, lines: list[str]
) -> None:
    path = work / "arena.jsonl"
    convert("arena-bench", data_dir, path)
    examples = load_mixinstruct(path)[:limit]
    started = time.perf_counter()
    rankings = {f"pairranker ({strategy})": ranker.rank(examples, strategy=strategy)}
    seconds = time.perf_counter() - started
    for spec in ("random", "longest", "mbr:chrf"):
        rankings[spec] = load_ranker(spec).rank(examples)
    rows = []
    for method, ranking in rankings.items():
        c = correlation(examples, ranking, "gpt4_score", method)
        rows.append(
            [method, fmt_number(c.spearman, 3), fmt_number(c.pearson, 3), str(c.evaluated), str(c.skipped)]
        )
    lines.append(
        f"### arena-bench-v1: per-question agreement with GPT-4's scores ({len(examples)} questions, "
        f"ranked in {seconds:.0f} s)\n"
    )
    lines.append(markdown_table((["method", "Spearman", "Pearson", "questions", "skipped"], rows)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a PairRanker folder (default: the one that ships with llmblend)")
    parser.add_argument("--runtime", default=None, help="fp32, bf16, onnx or onnx-int8")
    parser.add_argument("--dev", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dev-limit", type=int, default=None, help="first N dev instructions (smoke runs)")
    parser.add_argument("--timing-examples", type=int, default=5)
    parser.add_argument("--arena-strategy", default="sparse-refine")
    parser.add_argument("--arena-limit", type=int, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["dev", "timing", "hhh", "arena"])
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    options = {"batch_size": 32, **({"runtime": args.runtime} if args.runtime else {})}
    ranker = (
        PairRanker.from_pretrained(args.model, **options) if args.model else PairRanker.default(**options)
    )
    lines = [f"## PairRanker {args.model or 'default'} (runtime {ranker.runtime})\n"]
    with tempfile.TemporaryDirectory() as work:
        steps = {
            "dev": lambda: dev_figures(ranker, args.dev, args.dev_limit, lines),
            "timing": lambda: timing(ranker, args.dev, args.timing_examples, lines),
            "hhh": lambda: hhh_figures(ranker, args.data_dir, Path(work), lines),
            "arena": lambda: arena_figures(
                ranker, args.data_dir, Path(work), args.arena_strategy, args.arena_limit, lines
            ),
        }
        for name, step in steps.items():
            if name not in args.skip:
                started, before = time.perf_counter(), len(lines)
                step()
                print("\n".join(lines[before:]), flush=True)
                lines.append(f"<!-- {name}: {time.perf_counter() - started:.0f} s -->\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
