"""Best-of-n on a local model: SmolLM2-135M, n = 1, 4, 8, 16, picked by the shipped PairRanker.

16 seeded samples per instruction (temperature 0.7, top-p 0.95, at most ``--max-tokens`` tokens) of
the packaged SmolLM2-135M-Instruct behind its own ``llama_cpp.server``, on the first ``--limit``
alpaca-blend **dev** instructions (generated once into ``--samples``, resumable). Best-of-n uses the
first n seeds. Each pick is judged against GPT-4-turbo's answer (the records' ``output``) by
BERTScore (packaged MiniLM), BLEU and ROUGE-L, and by its length; the cost is the ranker's forward
passes and seconds. The default strategy (sparse-refine) and bubble (2(n−1) forwards) side by side;
n = 1 is the plain model. A 135M model's samples are weak, so the curve shows the machinery and
its cost more than what best-of-n does for a strong model.

    .venv/bin/python bench/best_of_n_smollm2.py --limit 30 --out build/bench-best-of-n.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmblend.backends.base import GenerationParams
from llmblend.backends.llama_server import LlamaServerBackend
from llmblend.blend.best_of_n import sample_slots
from llmblend.data.generate import close_backends, generate_dataset, read_instructions
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.eval.metrics import get_metric
from llmblend.rank.pairranker import PairRanker

NS = (1, 4, 8, 16)
METRICS = ("bertscore", "bleu", "rougeL")


def generate(instructions: Path, samples: Path, limit: int, max_tokens: int) -> float:
    items = read_instructions(instructions)[:limit]
    backend = LlamaServerBackend("local:smollm2-135m", name="smollm2-135m", threads=2)
    slots = sample_slots(
        backend, GenerationParams(max_tokens=max_tokens, temperature=0.7, top_p=0.95), max(NS)
    )

    async def run():
        try:
            return await generate_dataset(items, slots, samples)
        finally:
            await close_backends(slots)

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def first_seeds(example, n: int):
    """The example with only the samples of seeds 0..n-1."""
    keep = [c for c in example.candidates if any(f"seed={s})" in c.decoding_method for s in range(n))]
    return replace(example, candidates=keep)


def picks(ranker: PairRanker, examples, n: int, strategy: str) -> tuple[list[str], int, float]:
    subsets = [first_seeds(ex, n) for ex in examples]
    started = time.perf_counter()
    rankings = ranker.rank(subsets, strategy=strategy)
    seconds = time.perf_counter() - started
    chosen = [
        ex.candidates[r.best].text if r.best is not None else ""
        for ex, r in zip(subsets, rankings, strict=True)
    ]
    return chosen, sum(r.n_forward for r in rankings), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--samples", type=Path, default=Path("build/bench-best-of-n.samples.jsonl"))
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("build/bench-best-of-n.json"))
    args = parser.parse_args()
    generate_seconds = generate(args.data, args.samples, args.limit, args.max_tokens)
    examples = load_mixinstruct(args.samples)[: args.limit]
    references = {ex.id: ex.output for ex in load_mixinstruct(args.data)}
    refs = [references[ex.id] for ex in examples]
    ranker = PairRanker.default(runtime="onnx-int8")
    metrics = {name: get_metric(name) for name in METRICS}
    rows = []
    for n in NS:
        for strategy in ("sparse-refine", "bubble") if n > 1 else ("sparse-refine",):
            chosen, forwards, seconds = picks(ranker, examples, n, strategy)
            row = {
                "n": n,
                "strategy": strategy if n > 1 else "-",
                "forwards_per_example": forwards / len(examples),
            }
            row["rank_seconds"] = round(seconds, 2)
            for name, metric in metrics.items():
                row[name] = round(float(metric.score(chosen, refs).corpus), 4)
            row["mean_words"] = round(float(np.mean([len(t.split()) for t in chosen])), 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {"examples": len(examples), "generate_seconds": round(generate_seconds, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"{'n':>3} {'strategy':<14} {'fwd/ex':>7} {'BERTScore':>9} {'BLEU':>6} {'ROUGE-L':>7} {'words':>6}")
    for r in rows:
        print(
            f"{r['n']:>3} {r['strategy']:<14} {r['forwards_per_example']:>7.1f} {r['bertscore']:>9.4f} "
            f"{r['bleu']:>6.2f} {r['rougeL']:>7.4f} {r['mean_words']:>6.1f}"
        )


if __name__ == "__main__":
    main()
