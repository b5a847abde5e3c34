"""Packaging a trained adapter into the small folder that ships: GGUF + f16 peft weights + settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("gguf")


def tiny_gemma3_adapter(folder: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
    )  # fmt: skip
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(Gemma3ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    model.save_pretrained(str(folder))
    section = {"type": "trained-fuser", "kind": "causal", "adapter": True, "base_model": "local:gemma3-270m"}
    (folder / "llmblend.json").write_text(json.dumps({"llmblend": {**section, "name": "trained"}}))
    (folder / "tokenizer.json").write_text("{}")  # a big file packaging must leave out
    return folder


def test_package_writes_gguf_f16_weights_and_settings(tmp_path: Path) -> None:
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    from llmblend.fuse.llama_fuser import package_fuser

    adapter = tiny_gemma3_adapter(tmp_path / "best")
    out = package_fuser(adapter, tmp_path / "shipped", name="tiny-fuser")
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter.gguf", "adapter_config.json", "adapter_model.safetensors", "llmblend.json",
    ]  # fmt: skip
    weights, original = (
        load_file(str(out / "adapter_model.safetensors")),
        load_file(str(adapter / "adapter_model.safetensors")),
    )
    assert weights.keys() == original.keys() and {str(v.dtype) for v in weights.values()} == {"float16"}
    assert len(GGUFReader(str(out / "adapter.gguf")).tensors) == 2 * 7 * 2  # A and B, 7 modules, 2 layers
    settings = json.loads((out / "llmblend.json").read_text())["llmblend"]
    assert settings["name"] == "tiny-fuser" and settings["base_model"] == "local:gemma3-270m"


def test_package_refuses_a_folder_that_is_not_a_trained_fuser(tmp_path: Path) -> None:
    from llmblend.errors import LlmblendError
    from llmblend.fuse.llama_fuser import package_fuser

    with pytest.raises(LlmblendError, match=r"llmblend\.json"):
        package_fuser(tmp_path, tmp_path / "out")
