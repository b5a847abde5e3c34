"""Helpers the ranker-training tests share: synthetic preference pairs and a small training config
for the tiny random encoders of ``conftest.py``."""

from __future__ import annotations

import json
import random
from pathlib import Path

from llmblend.train.ranker import RankerTrainConfig

WORDS = [
    "the",
    "a",
    "is",
    "of",
    "and",
    "to",
    "in",
    "it",
    "this",
    "that",
    "what",
    "how",
    "one",
    "two",
    "three",
    "four",
    "five",
    "name",
    "city",
    "code",
]


def filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_synthetic_pairs(path: Path, n: int, seed: int) -> Path:
    """Preference pairs where the chosen answer says "correct" and the rejected one says "wrong"."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            record = {
                "prompt": f"question {filler(rng, 4)}",
                "chosen": f"{filler(rng, rng.randint(1, 4))} correct {filler(rng, rng.randint(1, 4))}",
                "rejected": f"{filler(rng, rng.randint(1, 4))} wrong {filler(rng, rng.randint(1, 4))}",
            }
            handle.write(json.dumps(record) + "\n")
    return path


def ranker_config(tmp_path: Path, backbone: Path, **overrides) -> RankerTrainConfig:
    """256 synthetic training pairs and 64 dev pairs in ``tmp_path``, 16-token texts, batch 16."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_synthetic_pairs(tmp_path / "train.jsonl", 256, seed=1)
    dev = write_synthetic_pairs(tmp_path / "dev.jsonl", 64, seed=2)
    settings = dict(
        train_file=str(train),
        dev_file=str(dev),
        output_dir=str(tmp_path / "run"),
        backbone=str(backbone),
        source_max_length=16,
        candidate_max_length=16,
        batch_size=16,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        epochs=2,
        eval_every=16,
        save_every=8,
        device="cpu",
    )
    settings.update(overrides)
    return RankerTrainConfig(**settings)
