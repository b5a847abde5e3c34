"""Training pairs from MixInstruct scores and preference files (§3.1)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmblend.errors import LlmblendError
from llmblend.train.pairs import example_pairs, load_pairs, mixinstruct_pairs
from llmblend.types import Candidate, Example


def _example() -> Example:
    return Example(
        id="x",
        instruction="name a city",
        candidates=[
            Candidate("a", "paris", {"bleu": 3.0, "rouge": 0.5}),
            Candidate("b", "rome", {"bleu": 1.0, "rouge": 0.5}),
            Candidate("c", "paris", {"bleu": 9.0, "rouge": 0.9}),  # duplicate text: dropped
            Candidate("d", "lyon", {"bleu": 2.0}),  # no rouge
        ],
    )


def test_pairs_are_deduplicated_and_labelled_per_metric() -> None:
    pairs = example_pairs(_example(), ["bleu", "rouge"], pairs_per_example=10, rng=random.Random(0))
    by_texts = {(p.query.first, p.query.second): p.labels for p in pairs}
    assert set(by_texts) == {("paris", "rome"), ("paris", "lyon"), ("rome", "lyon")}
    assert by_texts[("paris", "rome")] == (1, 0)  # rouge tie → no label
    assert by_texts[("paris", "lyon")] == (1, 0)  # lyon has no rouge
    assert by_texts[("rome", "lyon")] == (-1, 0)


def test_pairs_per_example_caps_each_metric() -> None:
    pairs = example_pairs(_example(), ["bleu"], pairs_per_example=2, rng=random.Random(0))
    assert len(pairs) == 2


def test_swapped_pairs_negate_labels() -> None:
    pair = example_pairs(_example(), ["bleu", "rouge"], 1, random.Random(0))[0]
    swapped = pair.swapped()
    assert swapped.query.first == pair.query.second and swapped.labels == tuple(-x for x in pair.labels)


def test_unknown_metric_names_the_present_ones() -> None:
    with pytest.raises(LlmblendError, match=r"\['bleu', 'rouge'\]"):
        mixinstruct_pairs([_example()], ["bleurt"], 5, seed=0)


def test_load_pairs_from_mixinstruct_sample(sample_file: Path) -> None:
    pair_set = load_pairs(sample_file, metrics=["bleu", "bertscore"], pairs_per_example=5, seed=0)
    assert pair_set.task_names == ("bleu", "bertscore")
    assert pair_set.pairs and all(len(p.labels) == 2 for p in pair_set.pairs)
    again = load_pairs(sample_file, metrics=["bleu", "bertscore"], pairs_per_example=5, seed=0)
    assert again.pairs == pair_set.pairs


def test_load_pairs_from_preferences(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": "q", "chosen": "same", "rejected": "same"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pair_set = load_pairs(path)
    assert pair_set.task_names == ("preference",)
    assert [(p.query.first, p.labels) for p in pair_set.pairs] == [("good", (1,))]
