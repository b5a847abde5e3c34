"""The cascade on alpaca-blend dev: judge calls per example and the pick's quality, vs the judge alone.

The judge is the packaged SmolLM2-135M-Instruct behind its own ``llama_cpp.server`` on 127.0.0.1
(GPT-Rank prompt, soft margins from logprobs); the first ranker is the shipped PairRanker. Runs,
all on the same first ``--limit`` dev examples (11 candidates each):

* ``pairranker``: the shipped ranker alone (no judge calls);
* ``judge knockout``: the judge alone, single elimination, each match once in a seeded order (N−1 calls);
* ``cascade top-3``: PairRanker shortlists 3, the judge plays all 3 pairs in both orders (6 calls);
* ``cascade top-3, margin``: the same, only where PairRanker's top-two gap is below a margin
  calibrated on **train** (:func:`~llmblend.rank.cascade.calibrate_margin`: the smallest gap above
  which PairRanker's pick is within 0.1 ``gpt4_win`` of the best in 80% of train examples, read from
  ``llmblend rank build/alpaca-blend/train.jsonl --out build/alpaca-blend/train.ranked.jsonl``).

Quality is the mean ``gpt4_win`` of the pick (the oracle). A 135M judge is weak: the point here is
the calls it takes, and whether the cascade keeps the judge's cost bounded.

    .venv/bin/python bench/judge_cascade.py --limit 20 --out build/bench-judge-cascade.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llmblend.backends.llama_server import LlamaServerBackend
from llmblend.data.jsonl import read_jsonl
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.rank.cascade import CascadeRanker, calibrate_margin, top_gap
from llmblend.rank.judge_ranker import JudgeRanker
from llmblend.rank.pairranker import PairRanker
from llmblend.types import Ranking

ORACLE = "gpt4_win"
NEAR_BEST = 0.1


def oracle(example) -> np.ndarray:
    return np.array([c.scores[ORACLE] for c in example.candidates])


def calibrated_margin(ranked_train: Path) -> float:
    """The margin from the shipped ranker's rankings of train (``llmblend rank`` output, sparse-refine)."""
    gaps, agrees = [], []
    for record in read_jsonl(ranked_train):
        ranking = Ranking.from_scores(record["ranking"]["scores"])
        scores = np.array([c["scores"][ORACLE] for c in record["candidates"]])
        gaps.append(top_gap(ranking))
        agrees.append(scores[ranking.best] >= scores.max() - NEAR_BEST)
    return calibrate_margin(gaps, agrees, target=0.8)


def measure(name: str, ranker, examples, strategy: str | None) -> dict:
    started = time.perf_counter()
    rankings = ranker.rank(examples, strategy=strategy)
    seconds = time.perf_counter() - started
    usages = [r.usage or {} for r in rankings]
    picks = [oracle(ex)[r.best] for ex, r in zip(examples, rankings, strict=True)]
    return {
        "run": name,
        "examples": len(examples),
        "judge_calls_per_example": float(np.mean([u.get("calls", 0) for u in usages])),
        "judged_share": float(np.mean([u.get("judged", u.get("calls", 0) > 0) for u in usages])),
        "tokens_per_example": float(
            np.mean([u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usages])
        ),
        "mean_gpt4_win": round(float(np.mean(picks)), 4),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend"))
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("build/bench-judge-cascade.json"))
    args = parser.parse_args()
    dev = load_mixinstruct(args.data / "dev.jsonl")[: args.limit]
    train = load_mixinstruct(args.data / "train.jsonl")
    pairranker = PairRanker.default(runtime="onnx-int8")
    margin = calibrated_margin(args.data / "train.ranked.jsonl")
    judge, both = (
        JudgeRanker(
            LlamaServerBackend("local:smollm2-135m", name="smollm2-judge", threads=2, n_ctx=4096),
            prompt="gpt-rank",
            orders=orders,
            soft=True,
        )
        for orders in ("random", "both")
    )
    best_model = max(
        {c.model for ex in dev for c in ex.candidates},
        key=lambda m: np.mean([c.scores[ORACLE] for ex in train for c in ex.candidates if c.model == m]),
    )
    runs = [
        ("pairranker", pairranker, "sparse-refine"),
        ("judge knockout (random orders)", judge, "knockout"),
        ("cascade top-3 (full, both orders)", CascadeRanker(pairranker, both, top_m=3), "full"),
        (
            f"cascade top-3, margin {margin:.3f}",
            CascadeRanker(pairranker, both, top_m=3, margin=margin),
            "full",
        ),
    ]
    results = []
    for name, ranker, strategy in runs:
        results.append(measure(name, ranker, dev, strategy))
        print(json.dumps(results[-1]), flush=True)
    best = [next(c.scores[ORACLE] for c in ex.candidates if c.model == best_model) for ex in dev]
    summary = {
        "examples": len(dev),
        "calibrated_margin": margin,
        "best_model_on_train": best_model,
        "best_model_gpt4_win": round(float(np.mean(best)), 4),
        "oracle_gpt4_win": round(float(np.mean([oracle(ex).max() for ex in dev])), 4),
        "results": results,
    }
    judge.close()
    both.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
