"""The alpaca-blend benchmark: split, candidates, oracle pairs, determinism."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from llmblend.data.alpaca_blend import (
    POOL_MODELS,
    AlpacaBlendConfig,
    build_alpaca_blend,
    stratified_split,
)
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.data.preferences import read_preferences
from llmblend.data.sources import alpaca_eval

pytestmark = pytest.mark.slow  # builds the benchmark from the whole AlpacaEval dump


def subsource(example_id: str) -> str:
    return example_id.split("/")[0]


def test_split_is_stratified_and_disjoint(alpaca_blend) -> None:
    out, summary = alpaca_blend
    train = load_mixinstruct(out / "train.jsonl")
    dev = load_mixinstruct(out / "dev.jsonl")
    assert (len(train), len(dev)) == (480, 120)
    assert not {e.instruction for e in train} & {e.instruction for e in dev}
    counts = Counter(subsource(e.id) for e in dev)
    assert counts == {"selfinstruct": 38, "oasst": 28, "koala": 23, "helpful_base": 19, "vicuna": 12}
    assert summary.dev_by_subsource == dict(sorted(counts.items()))


def test_examples_have_the_pool_scores_and_reference(alpaca_blend, data_dir: Path) -> None:
    out, _ = alpaca_blend
    dev = load_mixinstruct(out / "dev.jsonl")
    assert all(e.models == list(POOL_MODELS) for e in dev)
    assert all("gpt4_win" in c.scores for e in dev for c in e.candidates)
    oracle = alpaca_eval.read_oracle_scores(data_dir)
    example = dev[0]
    index = int(example.id.split("/")[1])
    assert example.candidate("gemma-7b-it").scores["gpt4_win"] == oracle["gemma-7b-it"][index]
    assert example.output and example.output not in [c.text for c in example.candidates]


def test_pairs_come_from_train_only_and_respect_the_margin(alpaca_blend) -> None:
    out, summary = alpaca_blend
    train_ids = {e.id for e in load_mixinstruct(out / "train.jsonl")}
    pairs = list(read_preferences(out / "pairs_train.jsonl"))
    assert len(pairs) == summary.pairs.sampled == 480 * 16
    assert {p.example_id for p in pairs} == train_ids
    assert all(p.margin >= 0.1 and p.chosen != p.rejected for p in pairs)
    models = {p.chosen_model for p in pairs} | {p.rejected_model for p in pairs}
    assert len(models) == 57 and "NullModel" not in models
    assert set(POOL_MODELS) < models
    info = json.loads((out / "build_info.json").read_text())
    assert info["pairs"]["near_ties"] == summary.pairs.near_ties > 0


def test_building_twice_is_byte_identical(alpaca_blend, data_dir: Path, tmp_path: Path) -> None:
    out, _ = alpaca_blend
    build_alpaca_blend(data_dir, tmp_path)
    for name in ("train.jsonl", "dev.jsonl", "pairs_train.jsonl", "build_info.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_split_depends_on_the_seed_only() -> None:
    groups = {"a": list(range(10)), "b": list(range(10, 25))}
    train, dev = stratified_split(groups, 0.2, seed=1)
    assert (len(train), len(dev)) == (20, 5)
    assert stratified_split({"b": groups["b"][::-1], "a": groups["a"]}, 0.2, seed=1) == (train, dev)
    assert stratified_split(groups, 0.2, seed=2) != (train, dev)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dev_fraction": 1.5}, "dev_fraction"),
        ({"pairs_per_instruction": 0}, "pairs_per_instruction"),
        ({"min_margin": -0.1}, "min_margin"),
        ({"pool": ("a",)}, "pool"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlpacaBlendConfig(**kwargs)


def test_unknown_pool_model_is_named(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-model"):
        build_alpaca_blend(data_dir, tmp_path, AlpacaBlendConfig(pool=("alpaca-7b", "no-such-model")))
