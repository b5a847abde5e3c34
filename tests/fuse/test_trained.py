"""TrainedFuser (LLM-Blender §4): seq2seq and causal generation, batching, failures, save/load round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from llmblend.errors import LlmblendError, MissingExtraError  # noqa: E402
from llmblend.fuse import Fuser  # noqa: E402
from llmblend.fuse.base import FuseItem  # noqa: E402
from llmblend.fuse.inputs import encode_source  # noqa: E402
from llmblend.fuse.trained import ADAPTER_SETTINGS_FILE, TrainedFuser  # noqa: E402
from llmblend.hf_loading import import_peft  # noqa: E402
from llmblend.hf_loading import resolve_weights as resolve_base  # noqa: E402

ITEMS = [
    FuseItem("what is the capital of france?", ("paris.", "the capital of france is paris.", "lyon")),
    FuseItem("write a short python code.", ("print('one')",), input="one line"),
    FuseItem("why is it correct?", ("it is correct.", "two is better than one, so it is correct.", "no")),
    FuseItem("name a city.", ("paris", "a city")),
    FuseItem("explain this answer in two long sentences.", ("this is good. that is bad.", "yes", "it is")),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_fuser_package_imports_without_torch():
    code = (
        "import sys, llmblend.fuse, llmblend.fuse.inputs, llmblend.fuse.trained, llmblend.train.fuser\n"
        "print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_tiny_t5_fuses_with_token_counts(tiny_t5: Path):
    fuser = TrainedFuser.from_pretrained(tiny_t5, max_new_tokens=6, batch_size=2)
    assert isinstance(fuser, Fuser) and fuser.kind == "seq2seq" and not fuser.is_adapter
    results = fuser.fuse(ITEMS)
    assert len(results) == len(ITEMS)
    for item, fused in zip(ITEMS, results, strict=True):
        assert fused.ok, fused.error
        assert fused.text == fused.text.strip()
        assert 1 <= fused.completion_tokens <= 6
        assert fused.prompt_tokens == len(fuser.encode(item)) > 0
        assert fused.latency_s > 0 and fused.fuser == fuser.name
        assert fused.extra["finish_reason"] in ("stop", "length")
    # only the first top_k candidates are read
    three = FuseItem("q", ("a", "b", "c"))
    assert fuser.encode(three) == fuser.encode(FuseItem("q", ("a", "b", "c", "d", "e")))


def test_causal_fuser_batched_equals_one_by_one(tiny_causal_lm: Path):
    batched = TrainedFuser.from_pretrained(tiny_causal_lm, max_new_tokens=12, batch_size=5)
    assert batched.kind == "causal"
    widths = {len(batched.encode(item)) for item in ITEMS}
    assert len(widths) == len(ITEMS)  # every batch is padded on the left
    together = batched.fuse(ITEMS)
    batched.batch_size = 1
    alone = batched.fuse(ITEMS)
    assert [f.text for f in together] == [f.text for f in alone]
    assert [f.completion_tokens for f in together] == [f.completion_tokens for f in alone]
    assert all(f.ok and 1 <= f.completion_tokens <= 12 for f in together)
    assert len({f.text for f in together}) > 1  # the answers depend on the prompt


def test_failures_come_back_as_data(tiny_causal_lm: Path, monkeypatch):
    fuser = TrainedFuser.from_pretrained(tiny_causal_lm, max_new_tokens=4, batch_size=4)
    one = len(encode_source(fuser.tokenizer, "causal", "q", "", ["a"]))
    three = len(encode_source(fuser.tokenizer, "causal", "q", "", ["a", "b", "c"]))
    assert three > one + 2
    fuser.max_source_tokens = one + 2  # room for one short candidate, not for three
    results = fuser.fuse([FuseItem("q", ("a",)), FuseItem("q", ("a", "b", "c"))])
    assert results[0].ok and results[0].completion_tokens >= 1
    assert not results[1].ok and "does not fit in max_source_tokens" in results[1].error
    assert results[1].text == ""

    fuser.max_source_tokens = 1024
    real = fuser._generate
    poisoned = len(fuser.encode(ITEMS[2]))

    def failing(chunk):
        if any(len(row.ids) == poisoned for row in chunk):
            raise RuntimeError("out of memory")
        return real(chunk)

    monkeypatch.setattr(fuser, "_generate", failing)
    results = fuser.fuse(ITEMS)
    assert [f.ok for f in results] == [True, True, False, True, True]  # retried one by one: only one fails
    assert "RuntimeError: out of memory" in results[2].error


def test_full_model_round_trip(tiny_t5: Path, tmp_path: Path):
    fuser = TrainedFuser.from_pretrained(tiny_t5, max_new_tokens=5, max_candidate_tokens=7, top_k=2)
    folder = fuser.save_pretrained(tmp_path / "fuser")
    section = json.loads((folder / "config.json").read_text())["llmblend"]
    assert section["kind"] == "seq2seq" and section["adapter"] is False
    assert section["base_model"] == str(tiny_t5.resolve())
    loaded = TrainedFuser.from_pretrained(folder)
    assert (loaded.max_new_tokens, loaded.max_candidate_tokens, loaded.top_k) == (5, 7, 2)
    assert [f.text for f in loaded.fuse(ITEMS)] == [f.text for f in fuser.fuse(ITEMS)]
    assert TrainedFuser.from_pretrained(folder, max_new_tokens=3).max_new_tokens == 3  # the caller wins


def _lora_fuser(base: Path):
    peft = pytest.importorskip("peft")
    fuser = TrainedFuser.from_pretrained(base, max_new_tokens=8, max_source_tokens=300)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    fuser.model = peft.get_peft_model(fuser.model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in fuser.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 2.0)  # a fresh adapter is a no-op (B = 0); make it change the outputs
    return fuser


def test_adapter_folder_loads_alone_and_finds_its_base(tiny_causal_lm: Path, tmp_path: Path):
    fuser = _lora_fuser(tiny_causal_lm)
    assert fuser.is_adapter
    expected = [f.text for f in fuser.fuse(ITEMS)]
    base_texts = [f.text for f in TrainedFuser.from_pretrained(tiny_causal_lm, max_new_tokens=8).fuse(ITEMS)]
    assert expected != base_texts
    folder = fuser.save_pretrained(tmp_path / "adapter")
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_SETTINGS_FILE} <= names
    assert "model.safetensors" not in names and "tokenizer_config.json" in names
    section = json.loads((folder / ADAPTER_SETTINGS_FILE).read_text())["llmblend"]
    assert section["adapter"] is True and section["base_model"] == str(tiny_causal_lm.resolve())

    loaded = TrainedFuser.from_pretrained(folder)  # the folder alone: its settings name the base
    assert loaded.is_adapter and loaded.kind == "causal" and loaded.max_source_tokens == 300
    assert [f.text for f in loaded.fuse(ITEMS)] == expected

    explicit = TrainedFuser.from_pretrained(tiny_causal_lm, adapter=folder)  # base + adapter=
    assert [f.text for f in explicit.fuse(ITEMS)] == expected
    with pytest.raises(LlmblendError, match="is itself an adapter folder"):
        TrainedFuser.from_pretrained(folder, adapter=folder)

    # a plain peft adapter (no llmblend.json) finds its base through base_model_name_or_path
    (folder / ADAPTER_SETTINGS_FILE).unlink()
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(tiny_causal_lm)
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    plain = TrainedFuser.from_pretrained(folder, max_source_tokens=300, max_new_tokens=8)
    assert [f.text for f in plain.fuse(ITEMS)] == expected


def test_resolve_base_splits_gguf_paths(tmp_path: Path):
    gguf = tmp_path / "model-q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_base(str(gguf)) == (str(tmp_path), "model-q4.gguf")
    assert resolve_base("org/model", "file.gguf") == ("org/model", "file.gguf")
    assert resolve_base(str(tmp_path)) == (str(tmp_path), None)
    with pytest.raises(LlmblendError, match="contradicts"):
        resolve_base(str(gguf), "other.gguf")
    with pytest.raises(LlmblendError, match="unknown local model"):
        resolve_base("local:nope")


def test_missing_peft_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match=r"'peft'.*pip install 'llmblend\[ml\]'"):
        import_peft("loading a LoRA adapter")


def test_bad_settings_are_refused(tiny_t5: Path):
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        TrainedFuser.from_pretrained(tiny_t5, max_new_tokens=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        TrainedFuser.from_pretrained(tiny_t5, dtype="int4")
    with pytest.raises(LlmblendError, match="cannot load the fuser model"):
        TrainedFuser.from_pretrained(tiny_t5 / "missing-folder")
