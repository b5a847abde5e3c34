"""The one loader of local LMs: kind, dtype, threads, adapters, and errors that say what to do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from llmblend.errors import LlmblendError, MissingExtraError  # noqa: E402
from llmblend.hf_loading import load_lm  # noqa: E402


def test_kind_is_read_from_the_config(tiny_causal_lm: Path, tiny_t5: Path) -> None:
    causal = load_lm(tiny_causal_lm)
    assert causal.kind == "causal" and not causal.model.training
    assert causal.model.dtype == torch.float32  # "auto" on the CPU
    assert load_lm(tiny_t5).kind == "seq2seq"
    assert load_lm(tiny_t5, dtype="bfloat16").model.dtype == torch.bfloat16


def test_threads_are_set_before_loading(tiny_causal_lm: Path) -> None:
    before = torch.get_num_threads()
    try:
        load_lm(tiny_causal_lm, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_an_adapter_goes_on_top_and_brings_its_tokenizer(tiny_causal_lm: Path, tmp_path: Path) -> None:
    base = load_lm(tiny_causal_lm)
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM")
    adapted = peft.get_peft_model(base.model, config)
    adapted.save_pretrained(str(tmp_path / "adapter"))
    loaded = load_lm(tiny_causal_lm, adapter=tmp_path / "adapter")
    assert isinstance(loaded.model, peft.PeftModel)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    trainable = load_lm(tiny_causal_lm, adapter=tmp_path / "adapter", trainable_adapter=True)
    assert any(p.requires_grad for p in trainable.model.parameters())
    base.tokenizer.add_tokens(["<|only-in-the-adapter|>"])
    base.tokenizer.save_pretrained(str(tmp_path / "adapter"))
    tokenizer = load_lm(tiny_causal_lm, adapter=tmp_path / "adapter").tokenizer
    assert "<|only-in-the-adapter|>" in tokenizer.get_vocab()


def test_failures_name_the_model_or_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LlmblendError, match="cannot load the fuser model"):
        load_lm(tmp_path / "missing", what="the fuser model")
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_lm(tmp_path, dtype="int4")
    with pytest.raises(ValueError, match="kind must be one of"):
        load_lm(tmp_path, kind="encoder")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"'transformers'.*pip install 'llmblend\[ml\]'"):
        load_lm(tmp_path, purpose="this test")
