"""LLM-judge ranking strategies vs judge calls, measured against GPT-4's recorded Vicuna-80 reviews.

The replay judge (``bench/replay_judge.py``, a measurement device, not a feature) answers each MT-bench
``pair-v2`` request with GPT-4's recorded verdict on that pair, through real HTTP and the project's
real :class:`~llmblend.rank.judge_ranker.JudgeRanker`. Each of the 80 questions has 7 candidates;
13 of their 21 pairs were reviewed and the other 8 are imputed from the answers' mean scores. The
reference ranking is least squares over GPT-4's score margins — over the completed matrix, and over
the recorded pairs only. For each strategy, order mode and budget: judge calls per question, mean
Kendall tau of its scores with the reference's, and how often its top-1 is a reference best (the
highest reference score, ties included) — hard verdicts (no logprobs), since the replay's
probabilities would be synthetic.

    .venv/bin/python bench/judge_strategies_replay.py --out build/bench-judge-replay.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmblend.backends.openai_http import OpenAIBackend
from llmblend.rank.budget import Budget
from llmblend.rank.judge_ranker import JudgeRanker
from replay_judge import ReplayJudge, load_replay

#: (strategy, orders, max calls per question or None)
RUNS = [
    ("full", "both", None),
    ("max-wins", "both", None),
    ("full", "random", None),
    ("sparse-refine", "both", None),
    ("sparse-refine", "random", None),
    ("bubble", "both", None),
    ("knockout", "both", None),
    ("knockout", "random", None),
    ("full", "random", 12),
    ("full", "random", 6),
    ("full", "both", 12),
]


def top1_hits(scores: np.ndarray, reference: np.ndarray) -> bool:
    return bool(reference[int(np.argmax(scores))] >= reference.max() - 1e-9)


def kendall(scores: np.ndarray, reference: np.ndarray) -> float:
    tau = kendalltau(scores, reference).statistic
    return 0.0 if np.isnan(tau) else float(tau)


def run(backend, examples, references, strategy, orders, max_calls) -> dict:
    ranker = JudgeRanker(
        backend, strategy=strategy, orders=orders, soft=False, budget=Budget(max_calls=max_calls)
    )
    started = time.perf_counter()
    rankings = ranker.rank(examples)
    seconds = time.perf_counter() - started
    result = {"strategy": strategy, "orders": orders, "max_calls": max_calls, "seconds": round(seconds, 2)}
    result["calls_per_question"] = float(np.mean([r.usage["calls"] for r in rankings]))
    scores = [np.asarray(r.scores) for r in rankings]
    for name, refs in references.items():
        pairs = list(zip(scores, refs, strict=True))
        result[f"kendall_{name}"] = round(float(np.mean([kendall(s, ref) for s, ref in pairs])), 4)
        result[f"top1_{name}"] = round(float(np.mean([top1_hits(s, ref) for s, ref in pairs])), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench-judge-replay.json"))
    parser.add_argument("--limit", type=int, default=None, help="first N questions")
    args = parser.parse_args()
    data = load_replay()
    questions = list(data)[: args.limit]
    examples = [q.example() for q in questions]
    references = {
        "completed": [q.reference_scores(completed=True) for q in questions],
        "recorded": [q.reference_scores(completed=False) for q in questions],
    }
    results = []
    with ReplayJudge(data) as judge:
        backend = OpenAIBackend(
            name="gpt-4-replay", model="gpt-4-replay", base_url=judge.base_url, concurrency=8, max_retries=0
        )
        for strategy, orders, max_calls in RUNS:
            results.append(run(backend, examples, references, strategy, orders, max_calls))
            print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"questions": len(questions), "results": results}, indent=1))
    columns = ("calls/q", "tau(c)", "top1(c)", "tau(r)", "top1(r)")
    print(f"{'strategy':<14} {'orders':<7} {'budget':>6} " + " ".join(f"{c:>8}" for c in columns))
    for r in results:
        budget = "-" if r["max_calls"] is None else str(r["max_calls"])
        print(
            f"{r['strategy']:<14} {r['orders']:<7} {budget:>6} {r['calls_per_question']:>8.1f} "
            f"{r['kendall_completed']:>8.3f} {r['top1_completed']:>8.3f} {r['kendall_recorded']:>8.3f} "
            f"{r['top1_recorded']:>8.3f}"
        )


if __name__ == "__main__":
    main()
