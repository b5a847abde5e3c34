"""Calibration of the shipped PairRanker's P(a better than b): ECE and Brier score before and after.

The temperature is fitted on one hash half of alpaca-blend **dev** (pairs whose ``gpt4_win`` differ
by more than 0.1; the ranker was trained on train, so train pairs would be in-sample) and reported
on the other half, and on the 221 human-labelled HHH-alignment pairs (a different distribution the
temperature never saw). Every pair counts in both orders. ``--write`` stores the temperature in the
packaged model (what ``llmblend train calibrate build/alpaca-blend/dev.jsonl --write`` does).

    .venv/bin/python bench/calibration.py --out build/bench-calibration.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.data.sources import locate_data_dir
from llmblend.eval.agreement import load_labels
from llmblend.rank.base import PairQuery
from llmblend.rank.calibration import brier_score, expected_calibration_error, probabilities
from llmblend.rank.pairranker import DEFAULT_MODEL_DIR, PairRanker
from llmblend.train.calibrate import calibrate, write_temperature
from llmblend.types import prompt_text


def hhh_figures(ranker: PairRanker, temperature: float) -> dict:
    pairs = load_labels("hhh", locate_data_dir())
    queries = [PairQuery(prompt_text(p.instruction), p.answer_a, p.answer_b) for p in pairs]
    margins = np.asarray(ranker.compare_pairs(queries))
    outcomes = np.array([1.0 if p.label == "a" else 0.0 for p in pairs])
    both, truth = np.concatenate([margins, -margins]), np.concatenate([outcomes, 1 - outcomes])
    before, after = probabilities(both), probabilities(both, temperature)
    return {
        "pairs": len(pairs),
        "ece_before": round(expected_calibration_error(before, truth), 4),
        "ece_after": round(expected_calibration_error(after, truth), 4),
        "brier_before": round(brier_score(before, truth), 4),
        "brier_after": round(brier_score(after, truth), 4),
        "accuracy": round(float(np.mean((margins > 0) == (outcomes > 0.5))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/alpaca-blend/dev.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("build/bench-calibration.json"))
    parser.add_argument("--write", action="store_true", help="store the temperature in the packaged model")
    args = parser.parse_args()
    ranker = PairRanker.default(runtime="onnx-int8")
    dev = calibrate(ranker.compare_pairs, load_mixinstruct(args.data), "gpt4_win")
    result = {"alpaca_blend_dev_holdout": dev.as_dict(), "hhh": hhh_figures(ranker, dev.temperature)}
    if args.write:
        write_temperature(DEFAULT_MODEL_DIR, dev.temperature)
        result["stored_in"] = str(DEFAULT_MODEL_DIR)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
