"""Compact ranker folders: an fp16 delta over the base encoder that loads like a full folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.rank.base import PairQuery  # noqa: E402
from llmblend.rank.compact import ADDED_ROWS, save_compact  # noqa: E402
from llmblend.rank.pairranker import PairRanker  # noqa: E402
from llmblend.rank.registry import load_ranker  # noqa: E402

QUERIES = [
    PairQuery("what is the capital of france", "paris", "the capital of france is paris!"),
    PairQuery("write python code", "print('one')", "no"),
    PairQuery("give a number", "four", "three, or maybe five " * 5),
]


def fine_tuned(tiny_bert: Path) -> PairRanker:
    """A ranker whose layers, head and marker rows moved but whose base vocabulary did not."""
    torch.manual_seed(0)
    ranker = PairRanker.from_backbone(str(tiny_bert), candidate_max_length=12, length_feature=True)
    embeddings = ranker.module.pretrained_model.get_input_embeddings().weight
    with torch.no_grad():
        for name, param in ranker.module.named_parameters():
            if param is embeddings:
                param[ranker.tokenizer.vocab_size :] += 0.1
            elif "encoder.layer.0." in name or "head" in name or "length" in name:
                param.add_(0.05 * torch.randn_like(param))
    return ranker


def test_compact_folder_is_small_and_scores_like_the_full_one(tiny_bert: Path, tmp_path: Path) -> None:
    ranker = fine_tuned(tiny_bert)
    ranker.save_pretrained(tmp_path / "full")
    save_compact(ranker, tmp_path / "compact", base_model=str(tiny_bert))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "compact" / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
        assert all(handle.get_tensor(k).dtype == torch.float16 for k in keys)
    assert "pretrained_model.embeddings.word_embeddings.weight" + ADDED_ROWS in keys
    assert not any(".layer.1." in k for k in keys)  # unchanged layers are taken from the base
    assert any(".layer.0." in k for k in keys) and any(k.startswith("head_layer.") for k in keys)
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert (tmp_path / "compact" / "model.safetensors").stat().st_size < full_size / 3
    loaded = load_ranker(str(tmp_path / "compact"))
    assert isinstance(loaded, PairRanker) and loaded.config.length_feature
    np.testing.assert_allclose(loaded.compare_pairs(QUERIES), ranker.compare_pairs(QUERIES), atol=2e-3)


def test_trained_base_vocabulary_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    ranker = fine_tuned(tiny_bert)
    with torch.no_grad():
        ranker.module.pretrained_model.get_input_embeddings().weight[5] += 1.0
    with pytest.raises(LlmblendError, match="freeze_word_embeddings"):
        save_compact(ranker, tmp_path / "compact", base_model=str(tiny_bert))
    assert not (tmp_path / "compact").exists()


def test_cli_train_compact_writes_a_loadable_folder(tiny_bert: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmblend.cli import app

    ranker = fine_tuned(tiny_bert)
    ranker.save_pretrained(tmp_path / "best")
    out = tmp_path / "shipped"
    result = CliRunner().invoke(
        app, ["train", "compact", str(tmp_path / "best"), "--out", str(out), "--base", str(tiny_bert)]
    )
    assert result.exit_code == 0 and f"wrote {out}" in result.output, result.output
    loaded = PairRanker.from_pretrained(out)
    np.testing.assert_allclose(loaded.compare_pairs(QUERIES), ranker.compare_pairs(QUERIES), atol=2e-3)
