"""The ranker that ships with llmblend: small, offline, and better than the longest answer on dev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from llmblend.cli import app
from llmblend.data.mixinstruct import load_mixinstruct, write_mixinstruct
from llmblend.eval.ranking import candidate_pair_accuracy, correlation
from llmblend.rank.baselines import LongestRanker
from llmblend.rank.pairranker import DEFAULT_MODEL_DIR, DEFAULT_RUNTIME, PairRanker

#: The first 60 of alpaca-blend dev's 120 instructions (never trained or tuned on): Spearman 0.486
#: vs longest's 0.420, pair accuracy 0.694 vs 0.663 (all 120: 0.424 vs 0.376; on the first 30 the
#: two are within 0.003). Half the slice, half the ~3 minutes of one-pair-per-forward int8.
DEV_SLICE = 60
MAX_SHIPPED_MB = 25


def test_shipped_folder_is_small_and_documented() -> None:
    files = [f for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()]
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file() and (DEFAULT_MODEL_DIR / "config.json").is_file()
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    assert size_mb <= MAX_SHIPPED_MB, f"the shipped ranker takes {size_mb:.1f} MB"
    settings = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["llmblend"]
    assert settings["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # packaged, so offline


@pytest.mark.slow
def test_default_ranker_beats_longest_on_a_dev_slice(alpaca_blend) -> None:
    out, _ = alpaca_blend
    examples = load_mixinstruct(out / "dev.jsonl")[:DEV_SLICE]
    ranker = PairRanker.default()
    assert ranker.runtime == DEFAULT_RUNTIME and ranker.strategy == "sparse-refine"
    assert ranker.config.length_feature
    ours = ranker.rank(examples)
    longest = LongestRanker().rank(examples)
    ours_rho = correlation(examples, ours, "gpt4_win").spearman
    longest_rho = correlation(examples, longest, "gpt4_win").spearman
    assert ours_rho > longest_rho, (ours_rho, longest_rho)
    ours_acc = candidate_pair_accuracy(examples, ours, "gpt4_win").accuracy
    longest_acc = candidate_pair_accuracy(examples, longest, "gpt4_win").accuracy
    assert ours_acc > longest_acc, (ours_acc, longest_acc)


@pytest.mark.slow
def test_cli_rank_and_compare_use_the_shipped_ranker(alpaca_blend, tmp_path: Path) -> None:
    out, _ = alpaca_blend
    small = tmp_path / "dev3.jsonl"
    write_mixinstruct(load_mixinstruct(out / "dev.jsonl")[:3], small)
    runner = CliRunner()
    result = runner.invoke(app, ["rank", str(small), "--out", str(tmp_path / "ranked.jsonl")])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["ranking"]["ranker"] == "default" for r in records)
    compare = runner.invoke(
        app,
        [
            "compare",
            "Name three primary colours.",
            "The primary colours of pigment are red, yellow and blue; of light, red, green and blue.",
            "idk",
        ],
    )
    assert compare.exit_code == 0 and compare.output.startswith("better: A"), compare.output
