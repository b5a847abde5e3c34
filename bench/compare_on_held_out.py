"""Compare ranker checkpoints on the train instructions a training config held out (never dev).

The config's ``val_fraction`` and seed give the held-out instructions and their sampled pairs, exactly
as ``llmblend train ranker`` drew them to pick ``best/``. Each model is scored on the same pairs
(debiased pairwise accuracy) and on top-1 selection among the 11 pool candidates of those
instructions (mean oracle score, next to the best single model and the oracle). This is how the
default ranker's stage 2 was chosen over stage 1 (MODEL_CARD.md).

    .venv/bin/python bench/compare_on_held_out.py configs/pairranker-minilm-default-stage2.yaml \\
        build/rankers/pairranker-minilm-default/best build/rankers/pairranker-minilm-default-stage2/best
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.eval.ranking import fmt_number, fmt_percent, markdown_table
from llmblend.rank.pairranker import PairRanker
from llmblend.train.config import build_config
from llmblend.train.ranker import RankerTrainConfig, held_out_pairs, pairwise_accuracy

ORACLE = "gpt4_win"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path, help="the training config whose held-out split to use")
    parser.add_argument("models", type=Path, nargs="+", help="PairRanker folders to compare")
    parser.add_argument("--train", type=Path, default=Path("build/alpaca-blend/train.jsonl"))
    parser.add_argument("--runtime", default="onnx-int8")
    parser.add_argument("--strategy", default="sparse-refine")
    args = parser.parse_args()
    config = build_config(RankerTrainConfig, args.config)
    if not config.val_fraction:
        parser.error(f"{args.config} holds nothing out (val_fraction is 0)")
    pairs = held_out_pairs(config)
    held_out = {p.query.source for p in pairs.pairs}
    examples = [ex for ex in load_mixinstruct(args.train) if ex.source in held_out]
    scores = np.array([[c.scores[ORACLE] for c in ex.candidates] for ex in examples])
    best = int(scores.mean(axis=0).argmax())
    rows = [
        ["oracle", "", fmt_number(float(scores.max(axis=1).mean()))],
        [f"model: {examples[0].candidates[best].model}", "", fmt_number(float(scores[:, best].mean()))],
    ]
    for folder in args.models:
        ranker = PairRanker.from_pretrained(folder, runtime=args.runtime, batch_size=32)
        accuracy = pairwise_accuracy(ranker, pairs.pairs)
        rankings = ranker.rank(examples, strategy=args.strategy)
        top1 = np.mean([scores[i, r.order[0]] for i, r in enumerate(rankings)])
        rows.append([str(folder), fmt_percent(accuracy), fmt_number(float(top1))])
        print(" | ".join(rows[-1]), flush=True)
    print(
        f"\n### Held-out train instructions of {args.config.name}: {len(examples)} instructions, "
        f"{len(pairs.pairs)} pairs ({args.runtime}, {args.strategy})\n"
    )
    print(markdown_table((["model", "pair accuracy", f"top-1 {ORACLE}"], rows)))


if __name__ == "__main__":
    main()
