"""Out of pool: pool-aware selection on arena-bench-v1 (17 models, GPT-4's 1–10 scores for 15).

The pool is fitted (``llmblend train pool``, default terms, cross-fitted) on one half of the
questions and picks on the other half; then the halves swap. Reported per half: the mean GPT-4
score of the pick, the best single model *of the evaluated half* (the strongest comparison: it is
chosen with hindsight), the pool's favourite, the longest answer, and the oracle. Only the 15
scored models are candidates.

    .venv/bin/python bench/pool_arena.py --out build/pool-arena.md
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmblend.data.convert import convert
from llmblend.data.mixinstruct import load_mixinstruct, write_mixinstruct
from llmblend.eval.ranking import fmt_number, markdown_table
from llmblend.rank.pool import PoolModel
from llmblend.rank.pool_ranker import PoolRanker
from llmblend.train.pool import DEFAULT_THRESHOLD_RULE, PoolSettings, train_pool_file

ORACLE = "gpt4_score"


def scored_only(examples):
    out = []
    for ex in examples:
        candidates = [c for c in ex.candidates if ORACLE in c.scores]
        if len(candidates) > 1:
            out.append(replace(ex, candidates=candidates))
    return out


def mean_of(examples, picks) -> float:
    """Mean oracle score of ``picks[k]``, the chosen candidate index of example k."""
    return float(np.mean([ex.candidates[k].scores[ORACLE] for ex, k in zip(examples, picks, strict=True)]))


def cached_embedder(examples):
    """One embedding per distinct answer, computed once for both halves (fit and pick)."""
    from llmblend.rank.embeddings import SentenceEmbedder

    texts = sorted({c.text for ex in examples for c in ex.candidates})
    vectors = dict(zip(texts, SentenceEmbedder.from_pretrained().encode(texts), strict=True))
    return lambda batch: np.array([vectors[t] for t in batch])


def where(indices, examples, picks):
    """The examples and picks at ``indices``."""
    return [examples[k] for k in indices], [picks[k] for k in indices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("build/pool-arena.md"))
    parser.add_argument(
        "--threshold-rule", default=DEFAULT_THRESHOLD_RULE, help="gated, best or one-se (llmblend train pool)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pool-arena-"))
    convert("arena-bench", args.data_dir, folder / "arena.jsonl")
    examples = scored_only(load_mixinstruct(folder / "arena.jsonl"))
    order = np.random.default_rng(0).permutation(len(examples))
    halves = [
        [examples[k] for k in order[: len(order) // 2]],
        [examples[k] for k in order[len(order) // 2 :]],
    ]
    header = ["fitted on → evaluated on", "pool pick", "pool pick where the best model answered",
              "best single model (hindsight, where it answered)",
              "pool's favourite (strongest present)",
              "longest", "oracle", "switched"]  # fmt: skip
    rows = []
    embed = cached_embedder(examples)
    for fit, test in ((0, 1), (1, 0)):
        train_file, test_file = folder / f"half{fit}.jsonl", folder / f"half{test}.jsonl"
        write_mixinstruct(halves[fit], train_file)
        write_mixinstruct(halves[test], test_file)
        pool_file = folder / f"pool{fit}.json"
        settings = PoolSettings(oracle=ORACLE)
        train_pool_file(
            [train_file], pool_file, settings=settings, embed=embed, threshold_rule=args.threshold_rule
        )
        pool = PoolModel.load(pool_file)
        rankings = PoolRanker(pool, None, embed=embed).rank(halves[test])
        models = sorted({c.model for ex in halves[test] for c in ex.candidates})
        per_model = {
            m: np.mean([c.scores[ORACLE] for ex in halves[test] for c in ex.candidates if c.model == m])
            for m in models
        }
        best = max(per_model, key=per_model.get)
        test_examples = halves[test]
        pool_picks = [r.best for r in rankings]
        favourites = [pool.favourite([c.model for c in ex.candidates]) for ex in test_examples]
        switched = np.mean([k != f for k, f in zip(pool_picks, favourites, strict=True)])
        longest = [int(np.argmax([len(c.text) for c in ex.candidates])) for ex in test_examples]
        oracle = [int(np.argmax([c.scores[ORACLE] for c in ex.candidates])) for ex in test_examples]
        answered = [k for k, ex in enumerate(test_examples) if any(c.model == best for c in ex.candidates)]
        rows.append([
            f"half {fit} ({len(halves[fit])}) → half {test} ({len(test_examples)})",
            fmt_number(mean_of(test_examples, pool_picks), 3),
            f"{fmt_number(mean_of(*where(answered, test_examples, pool_picks)), 3)} ({len(answered)})",
            f"{fmt_number(per_model[best], 3)} ({best})",
            fmt_number(mean_of(test_examples, favourites), 3),
            fmt_number(mean_of(test_examples, longest), 3),
            fmt_number(mean_of(test_examples, oracle), 3),
            f"{100 * switched:.0f}%",
        ])  # fmt: skip
        print(f"half {fit}: weights {pool.combination['weights']}, threshold {pool.combination['threshold']}")
    text = (
        f"# Out of pool: arena-bench-v1 ({len(examples)} questions, 15 GPT-4-scored models, "
        "mean 1–10 score)\n\n" + markdown_table((header, rows)) + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
