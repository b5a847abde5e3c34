"""The converters ``llmblend data convert NAME`` offers, chosen by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmblend.data.alpaca_blend import POOL_MODELS
from llmblend.data.mixinstruct import write_mixinstruct
from llmblend.data.preferences import write_preferences
from llmblend.data.sources import alpaca_eval, fastchat, hh_rlhf, hhh, require_file, vicuna80
from llmblend.types import Example, PreferencePair


@dataclass(frozen=True, slots=True)
class Converter:
    name: str
    kind: Literal["examples", "pairs"]
    description: str
    load: Callable[[Path, Sequence[str] | None], Iterable[Example] | Iterable[PreferencePair]]


def _alpaca_eval(data_dir: Path, models: Sequence[str] | None) -> Iterable[Example]:
    return alpaca_eval.alpaca_eval_examples(data_dir, models or POOL_MODELS)


def _no_models(load: Callable[[Path], Iterable]) -> Callable[[Path, Sequence[str] | None], Iterable]:
    def wrapped(data_dir: Path, models: Sequence[str] | None) -> Iterable:
        if models:
            raise ValueError("--models only applies to alpaca-eval")
        return load(data_dir)

    return wrapped


CONVERTERS: dict[str, Converter] = {
    c.name: c
    for c in (
        Converter(
            "alpaca-eval",
            "examples",
            "AlpacaEval instructions; candidates from --models (default: the alpaca-blend pool), "
            "scores.gpt4_win = P(beats gpt4_1106_preview), output = gpt4_1106_preview's answer",
            _alpaca_eval,
        ),
        Converter(
            "mt-bench", "examples", "MT-bench first turns × 32 models", _no_models(fastchat.mt_bench_examples)
        ),
        Converter(
            "mt-bench-2turn",
            "examples",
            "MT-bench second turns: each model's own two-turn conversation as its candidate",
            _no_models(fastchat.mt_bench_two_turn_examples),
        ),
        Converter(
            "arena-bench",
            "examples",
            "arena-bench-v1 × 17 models, scores.gpt4_score (1-10)",
            _no_models(fastchat.arena_bench_examples),
        ),
        Converter(
            "lima-test",
            "examples",
            "LIMA-test × 4 models, scores.gpt4_score (1-10)",
            _no_models(fastchat.lima_test_examples),
        ),
        Converter(
            "vicuna80",
            "examples",
            "Vicuna-80 × 8 models, GPT-4 reviews as cmp_results",
            _no_models(vicuna80.vicuna80_examples),
        ),
        Converter(
            "hh-rlhf",
            "pairs",
            "hh-rlhf harmless-base test → chosen/rejected pairs",
            _no_models(lambda d: hh_rlhf.hh_rlhf_pairs(require_file(d, hh_rlhf.HARMLESS_TEST))),
        ),
        Converter(
            "hhh",
            "pairs",
            "HHH-alignment human-preference pairs",
            _no_models(lambda d: hhh.hhh_pairs(require_file(d, hhh.HHH_FILE))),
        ),
    )
}


def convert(name: str, data_dir: Path, out: Path, models: Sequence[str] | None = None) -> int:
    """Run converter ``name`` and write its output (MixInstruct or TRL JSONL); return the count."""
    if name not in CONVERTERS:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(CONVERTERS)}")
    converter = CONVERTERS[name]
    items = converter.load(data_dir, models)
    if converter.kind == "examples":
        return write_mixinstruct(items, out)  # type: ignore[arg-type]
    return write_preferences(items, out)  # type: ignore[arg-type]
