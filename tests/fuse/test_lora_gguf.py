"""GGUF export of peft LoRA adapters: a synthetic one read back, refusals, (slow) llama.cpp vs peft."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.fuse.lora_gguf import (  # noqa: E402
    LoraExportError,
    export_lora_gguf,
    read_safetensors,
)

HIDDEN, INTER, KV, RANK = 16, 32, 8, 4
#: (module, in, out) of the synthetic adapter's two layers, with the GGUF name each should get.
MODULES = {
    "self_attn.q_proj": (HIDDEN, HIDDEN, "attn_q"),
    "self_attn.k_proj": (HIDDEN, KV, "attn_k"),
    "self_attn.v_proj": (HIDDEN, KV, "attn_v"),
    "self_attn.o_proj": (HIDDEN, HIDDEN, "attn_output"),
    "mlp.gate_proj": (HIDDEN, INTER, "ffn_gate"),
    "mlp.up_proj": (HIDDEN, INTER, "ffn_up"),
    "mlp.down_proj": (INTER, HIDDEN, "ffn_down"),
}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """A safetensors file written by hand (F32, F16 or BF16, the last by truncating float32)."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        array = np.asarray(array, dtype=np.float32)
        if dtype == "F16":
            blob = array.astype("<f2").tobytes()
        elif dtype == "BF16":
            blob = (array.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        else:
            blob = array.astype("<f4").tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def lora_tensors(layers=(0, 1), *, prefix="base_model.model.model.", seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in layers:
        for module, (n_in, n_out, _) in MODULES.items():
            stem = f"{prefix}layers.{layer}.{module}"
            tensors[f"{stem}.lora_A.weight"] = rng.normal(size=(RANK, n_in)).astype(np.float32)
            tensors[f"{stem}.lora_B.weight"] = rng.normal(size=(n_out, RANK)).astype(np.float32)
    return tensors


def make_adapter(
    folder: Path, tensors: dict[str, np.ndarray] | None = None, *, dtype: str = "F32", **config
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "peft_type": "LORA",
        "r": RANK,
        "lora_alpha": 8,
        "target_modules": [m.split(".")[-1] for m in MODULES],
        "base_model_name_or_path": "/models/gemma3",
        "use_rslora": False,
        "use_dora": False,
        "alpha_pattern": {},
        "rank_pattern": {},
        **config,
    }
    (folder / "adapter_config.json").write_text(json.dumps(settings), encoding="utf-8")
    write_safetensors(
        folder / "adapter_model.safetensors", lora_tensors() if tensors is None else tensors, dtype
    )
    return folder


def read_gguf(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


# ---------------------------------------------------------------- the file written


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_export_writes_names_shapes_metadata(tmp_path: Path, dtype: str) -> None:
    source = lora_tensors()
    folder = make_adapter(tmp_path / "adapter", source)
    out = export_lora_gguf(folder, tmp_path / "out" / "lora.gguf", dtype=dtype)
    assert out == tmp_path / "out" / "lora.gguf"
    assert [p.name for p in out.parent.iterdir()] == ["lora.gguf"]  # no temporary file left

    fields, tensors = read_gguf(out)
    assert fields["general.architecture"] == "gemma3"
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == pytest.approx(8.0)
    want_type = gguf.GGMLQuantizationType.F16 if dtype == "f16" else gguf.GGMLQuantizationType.F32
    assert fields["general.file_type"] == (1 if dtype == "f16" else 0)

    expected = {}
    for layer in (0, 1):
        for module, (n_in, n_out, name) in MODULES.items():
            stem = f"base_model.model.model.layers.{layer}.{module}"
            expected[f"blk.{layer}.{name}.weight.lora_a"] = (source[f"{stem}.lora_A.weight"], [n_in, RANK])
            expected[f"blk.{layer}.{name}.weight.lora_b"] = (source[f"{stem}.lora_B.weight"], [RANK, n_out])
    assert set(tensors) == set(expected)
    for name, (array, ne) in expected.items():
        tensor = tensors[name]
        assert tensor.tensor_type == want_type, name
        assert list(tensor.shape) == ne, name  # ggml order: lora_a [in, r], lora_b [r, out]
        np.testing.assert_allclose(np.asarray(tensor.data, dtype=np.float32), array, rtol=1e-3, atol=1e-3)
        if dtype == "f32":
            np.testing.assert_array_equal(tensor.data, array)


def test_rslora_and_alpha_pattern_are_folded_into_lora_b(tmp_path: Path) -> None:
    source = lora_tensors()
    key = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"
    plain = export_lora_gguf(make_adapter(tmp_path / "plain", source), tmp_path / "plain.gguf", dtype="f32")
    rs = export_lora_gguf(
        make_adapter(tmp_path / "rs", source, use_rslora=True), tmp_path / "rs.gguf", dtype="f32"
    )
    pattern = export_lora_gguf(
        make_adapter(tmp_path / "pat", source, alpha_pattern={"down_proj": 32}),
        tmp_path / "pat.gguf",
        dtype="f32",
    )
    name = "blk.1.ffn_down.weight.lora_b"
    np.testing.assert_array_equal(read_gguf(plain)[1][name].data, source[key])
    # peft: alpha / sqrt(r); llama.cpp: alpha / r, so lora_b carries sqrt(r)
    np.testing.assert_allclose(read_gguf(rs)[1][name].data, source[key] * math.sqrt(RANK), rtol=1e-6)
    # down_proj alone has alpha 32 instead of 8
    np.testing.assert_allclose(read_gguf(pattern)[1][name].data, source[key] * 4, rtol=1e-6)
    np.testing.assert_array_equal(
        read_gguf(pattern)[1]["blk.1.ffn_up.weight.lora_b"].data,
        source["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"],
    )


@pytest.mark.parametrize("stored", ["F16", "BF16"])
def test_half_precision_safetensors_are_read(tmp_path: Path, stored: str) -> None:
    source = lora_tensors(layers=(0,))
    write_safetensors(tmp_path / "w.safetensors", source, stored)
    back = read_safetensors(tmp_path / "w.safetensors")
    assert set(back) == set(source)
    for name, array in source.items():
        assert back[name].dtype == np.float32
        np.testing.assert_allclose(back[name], array, rtol=1e-2 if stored == "BF16" else 1e-3, atol=1e-2)


def test_multimodal_prefix_and_block_count(tmp_path: Path) -> None:
    """Gemma3ForConditionalGeneration's ``model.language_model.`` is dropped; n_blocks may be larger."""
    folder = make_adapter(
        tmp_path / "a", lora_tensors(layers=(0, 5), prefix="base_model.model.model.language_model.")
    )
    _, tensors = read_gguf(export_lora_gguf(folder, tmp_path / "a.gguf", n_blocks=18))
    assert "blk.5.attn_q.weight.lora_a" in tensors and "blk.0.ffn_down.weight.lora_b" in tensors


def test_export_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "lora.gguf"
    out.write_bytes(b"old")
    export_lora_gguf(make_adapter(tmp_path / "a"), out)
    assert out.read_bytes()[:4] == b"GGUF"


# ---------------------------------------------------------------- refusals


def _refused(tmp_path: Path, tensors=None, match: str = "", **kwargs) -> None:
    config = kwargs.pop("config", {})
    folder = make_adapter(tmp_path / "bad", tensors, **config)
    out = tmp_path / "bad.gguf"
    with pytest.raises(LoraExportError, match=match):
        export_lora_gguf(folder, out, **kwargs)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unknown_module_is_named(tmp_path: Path) -> None:
    tensors = lora_tensors(layers=(0,))
    tensors["base_model.model.model.layers.0.self_attn.qkv_fused.lora_A.weight"] = np.ones(
        (RANK, 4), np.float32
    )
    tensors["base_model.model.model.layers.0.self_attn.qkv_fused.lora_B.weight"] = np.ones(
        (4, RANK), np.float32
    )
    _refused(tmp_path, tensors, match=r"model\.layers\.0\.self_attn\.qkv_fused")


def test_layer_beyond_n_blocks_is_named(tmp_path: Path) -> None:
    _refused(tmp_path, lora_tensors(layers=(0, 3)), match=r"model\.layers\.3\.", n_blocks=2)


def test_lm_head_and_embeddings_are_refused(tmp_path: Path) -> None:
    head = lora_tensors(layers=(0,))
    head["base_model.model.lm_head.lora_A.weight"] = np.ones((RANK, HIDDEN), np.float32)
    head["base_model.model.lm_head.lora_B.weight"] = np.ones((50, RANK), np.float32)
    _refused(tmp_path / "h", head, match=r"lm_head \(output\)")
    embed = lora_tensors(layers=(0,))
    embed["base_model.model.model.embed_tokens.lora_embedding_A"] = np.ones((RANK, 50), np.float32)
    embed["base_model.model.model.embed_tokens.lora_embedding_B"] = np.ones((HIDDEN, RANK), np.float32)
    _refused(tmp_path / "e", embed, match=r"embed_tokens\.lora_embedding_A")


def test_half_pairs_and_bad_shapes_are_refused(tmp_path: Path) -> None:
    half = lora_tensors(layers=(0,))
    del half["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"]
    _refused(tmp_path / "half", half, match=r"missing for: model\.layers\.0\.mlp\.up_proj")
    shape = lora_tensors(layers=(0,))
    shape["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"] = np.ones(
        (INTER, RANK + 1), np.float32
    )
    _refused(tmp_path / "shape", shape, match="up_proj: lora_A")


@pytest.mark.parametrize(
    ("arch", "match"), [("llama", "not supported.*gemma3"), ("no-such-arch", "unknown GGUF architecture")]
)
def test_unsupported_architectures(tmp_path: Path, arch: str, match: str) -> None:
    _refused(tmp_path, match=match, arch=arch)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"peft_type": "IA3"}, "IA3"),
        ({"lora_alpha": None}, "lora_alpha"),
        ({"trainable_token_indices": [1, 2]}, "trainable_token_indices"),
    ],
)
def test_unsupported_configs(tmp_path: Path, config: dict, match: str) -> None:
    _refused(tmp_path, match=match, config=config)


def test_f16_overflow_and_dtype(tmp_path: Path) -> None:
    big = lora_tensors(layers=(0,))
    big["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"][0, 0] = 1e6
    _refused(tmp_path / "big", big, match="overflows float16")
    export_lora_gguf(make_adapter(tmp_path / "ok", big), tmp_path / "ok.gguf", dtype="f32")
    _refused(tmp_path / "dt", match="dtype", dtype="q8_0")


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(LoraExportError, match="does not exist"):
        export_lora_gguf(tmp_path / "nowhere", tmp_path / "x.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlmblendError, match=r"adapter_config\.json"):
        export_lora_gguf(tmp_path / "empty", tmp_path / "x.gguf")
    folder = make_adapter(tmp_path / "bin")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(LoraExportError, match="safe_serialization"):
        export_lora_gguf(folder, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


# ---------------------------------------------------------------- llama.cpp applies what peft trained

PROMPTS = ("The capital of France is", "Here is a short story about a dog named Max.")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NEW_TOKENS = 12
#: Standard deviation of the random lora_B (alpha 16, r 8: scale 2). Big enough to change Gemma-3-270M's
#: greedy continuations of both prompts within 12 tokens, small enough to leave them fluent.
B_STD = 0.03


@pytest.mark.slow
def test_llama_cpp_applies_the_exported_adapter_like_peft(tmp_path: Path) -> None:
    """Gemma-3-270M: peft adapter (transformers, dequantised Q4) vs its GGUF export (llama.cpp, Q4).

    Both run the same prompt token ids. The adapter must change llama.cpp's greedy output, llama.cpp
    with it must continue as transformers with it does, and the change it makes to the next-token
    logits must be the one peft makes (same direction, same size), not merely some change.
    """
    llama_cpp = pytest.importorskip("llama_cpp")
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    pytest.importorskip("transformers")
    from llmblend.backends.llama_cpp import resolve_model

    try:
        base_gguf = resolve_model("local:gemma3-270m")[0]
    except LlmblendError as exc:
        pytest.skip(f"the packaged Gemma-3-270M is not installed: {exc}")
    from llmblend.hf_loading import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = load_model(str(base_gguf), dtype="float32")
        config = peft.LoraConfig(
            r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM"
        )
        torch.manual_seed(0)
        model = peft.get_peft_model(model, config).eval()
        generator = torch.Generator().manual_seed(0)
        adapted = 0
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".lora_B." in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * B_STD)
                    adapted += 1
        assert adapted == 7 * model.config.num_hidden_layers
        model.save_pretrained(tmp_path / "adapter")
        lora_gguf = export_lora_gguf(tmp_path / "adapter", tmp_path / "adapter.gguf")

        def hf_run(ids: list[int]) -> tuple[np.ndarray, list[int]]:
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1].float().numpy()
                out = model.generate(
                    torch.tensor([ids]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
                )
            return logits, out[0, len(ids) :].tolist()

        def cpp_run(llm, ids: list[int]) -> tuple[np.ndarray, list[int]]:
            llm.reset()
            llm.eval(ids)
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            tokens = []
            for token in llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
                tokens.append(int(token))
                if len(tokens) == NEW_TOKENS:
                    break
            return logits, tokens

        def llama(lora: Path | None):
            extra = {"lora_path": str(lora)} if lora else {}
            return llama_cpp.Llama(
                model_path=str(base_gguf), n_ctx=64, n_batch=64, n_threads=1, logits_all=True, seed=0,
                verbose=False, **extra,
            )  # fmt: skip

        plain, with_lora = llama(None), llama(lora_gguf)
        try:
            ids = [plain.tokenize(prompt.encode(), add_bos=True) for prompt in PROMPTS]
            cpp_base = [cpp_run(plain, i) for i in ids]
            cpp_lora = [cpp_run(with_lora, i) for i in ids]
            # the text API too: raw completion, greedy, no repetition penalty
            text = with_lora.create_completion(
                PROMPTS[0], max_tokens=NEW_TOKENS, temperature=0.0, repeat_penalty=1.0
            )["choices"][0]["text"]
        finally:
            plain.close()
            with_lora.close()
        hf_lora = [hf_run(i) for i in ids]
        with model.disable_adapter():
            hf_base = [hf_run(i) for i in ids]
    finally:
        torch.set_num_threads(threads)

    assert text.strip()
    for prompt, (cb_logits, cb_tokens), (cl_logits, cl_tokens), (hl_logits, hl_tokens), (hb_logits, _) in zip(
        PROMPTS, cpp_base, cpp_lora, hf_lora, hf_base, strict=True
    ):
        assert cl_tokens != cb_tokens, f"the adapter did not change llama.cpp's output for {prompt!r}"
        assert cl_tokens[:6] == hl_tokens[:6], (prompt, cl_tokens, hl_tokens)
        assert cl_logits.argmax() == hl_logits.argmax()
        top5 = set(np.argsort(-cl_logits)[:5]) & set(np.argsort(-hl_logits)[:5])
        assert len(top5) >= 4, prompt
        # the adapter's own effect on the logits, in each runtime
        d_cpp, d_hf = cl_logits - cb_logits, hl_logits - hb_logits
        cosine = float(d_cpp @ d_hf / (np.linalg.norm(d_cpp) * np.linalg.norm(d_hf)))
        ratio = float(np.linalg.norm(d_cpp) / np.linalg.norm(d_hf))
        assert cosine > 0.9, (prompt, cosine)
        assert 0.8 < ratio < 1.25, (prompt, ratio)
