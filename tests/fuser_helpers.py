"""Ranked MixInstruct files for the fuser's training tests (``test_fuser.py``, ``test_ddp.py``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

#: A tiny LoRA run: small budgets, a high learning rate, no warmup, no LoRA dropout, on the CPU.
SMALL_LORA_RUN = dict(
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    lr=1e-2,
    warmup_ratio=0.0,
    max_source_tokens=160,
    max_target_tokens=24,
    max_candidate_tokens=16,
    max_new_tokens=6,
    device="cpu",
)

WORDS = [
    *("the", "a", "is", "of", "and", "to", "in", "it", "this", "that", "what", "how"),
    *("one", "two", "three", "four", "five", "name", "city", "code", "paris"),
]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_ranked(path: Path, n: int, seed: int, *, n_candidates: int = 5) -> Path:
    """Ranked MixInstruct records: candidate i of a record is "cand i ...", ranked in a random order."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            order = list(range(n_candidates))
            rng.shuffle(order)
            record = {
                "id": f"r{i}",
                "instruction": f"what is {words(rng, 3)}?",
                "input": words(rng, 2) if i % 2 else "",
                "output": f"{words(rng, rng.randint(2, 8))}.",
                "candidates": [
                    {"model": f"m{j}", "text": f"cand {j} {words(rng, rng.randint(1, 6))}"}
                    for j in range(n_candidates)
                ],
                "cmp_results": None,
                "ranking": {
                    "ranker": "test",
                    "strategy": "full",
                    "order": order,
                    "scores": [0.0] * n_candidates,
                },
            }
            handle.write(json.dumps(record) + "\n")
    return path
