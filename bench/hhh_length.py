"""Human agreement on HHH-alignment: the shipped PairRanker alone and with a length term.

P(a better than b) = σ(w_r · m + w_ℓ · tanh((len_a − len_b) / s)), ``m`` the ranker's debiased
margin (§3.2) and ``s`` the standard deviation of the character-length differences, is fitted on the
pairs of the train instructions the ranker's training held out (``held_out_pairs`` of its config:
never trained on, never dev, never HHH), each pair in both orders. It is then scored on the 221
human-labelled HHH pairs, a distribution neither the ranker nor the weights saw, next to the ranker
alone and "the longer answer wins".

    .venv/bin/python bench/hhh_length.py --out build/bench-hhh-length.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from llmblend.data.sources import locate_data_dir
from llmblend.eval.agreement import load_labels
from llmblend.rank.base import PairQuery
from llmblend.rank.calibration import logistic_fit
from llmblend.rank.combine import length_term
from llmblend.rank.pairranker import PairRanker
from llmblend.train.config import build_config
from llmblend.train.ranker import RankerTrainConfig, held_out_pairs
from llmblend.types import prompt_text

#: Stage 1's config: both training stages hold out the same instructions (same seed and fraction),
#: and this one reads the default alpaca-blend build.
CONFIG = Path("configs/pairranker-minilm-default.yaml")


def length_feature(queries, scale: float) -> np.ndarray:
    """The combination's length term for each query (first answer vs second)."""
    return length_term([len(q.first) for q in queries], [len(q.second) for q in queries], scale)


def fit_weights(margins: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[w_r, w_ℓ] of the symmetric logistic fit: each pair in both orders, so no intercept."""
    x = np.column_stack([np.concatenate([margins, -margins]), np.concatenate([lengths, -lengths])])
    y = np.concatenate([np.ones(len(margins)), np.zeros(len(margins))])
    return logistic_fit(x, y, np.ones(len(y)), 1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="the shipped ranker's training config")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--out", type=Path, default=Path("build/bench-hhh-length.json"))
    args = parser.parse_args()
    ranker = PairRanker.default(runtime=args.runtime, batch_size=16)

    # calibration: held-out train pairs, oriented so that ``first`` is the better answer
    labelled = held_out_pairs(build_config(RankerTrainConfig, args.config)).pairs
    held = [(p if p.overall > 0 else p.swapped()).query for p in labelled if p.overall]
    scale = float(np.std([len(q.first) - len(q.second) for q in held]))
    held_margins = np.asarray(ranker.compare_pairs(held))
    w_ranker, w_length = fit_weights(held_margins, length_feature(held, scale))

    pairs = load_labels("hhh", locate_data_dir())
    queries = [PairQuery(prompt_text(p.instruction), p.answer_a, p.answer_b) for p in pairs]
    truth = np.array([1.0 if p.label == "a" else -1.0 for p in pairs])
    margins = np.asarray(ranker.compare_pairs(queries))
    lengths = length_feature(queries, scale)
    combined = w_ranker * margins + w_length * lengths

    def accuracy(values: np.ndarray, mask: np.ndarray) -> float:
        return round(float(np.mean(np.sign(values[mask]) == truth[mask])), 4)

    subsets = {"all": np.ones(len(pairs), bool)}
    for name in sorted({p.source for p in pairs}):
        subsets[name] = np.array([p.source == name for p in pairs])
    result = {
        "calibration": {
            "pairs": len(held),
            "length_scale_chars": round(scale, 1),
            "w_ranker": round(float(w_ranker), 4),
            "w_length": round(float(w_length), 4),
            "accuracy_ranker_alone": round(float(np.mean(held_margins > 0)), 4),
            "accuracy_longer": round(float(np.mean(length_feature(held, scale) > 0)), 4),
        },
        "hhh": {
            name: {
                "pairs": int(mask.sum()),
                "ranker_alone": accuracy(margins, mask),
                "longer_answer": accuracy(lengths, mask),
                "ranker_plus_length": accuracy(combined, mask),
            }
            for name, mask in subsets.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
