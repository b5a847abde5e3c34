"""The llama.cpp-served fuser: the same input ids as training, real generation, failures as data."""

from __future__ import annotations

import pytest

from llmblend.fuse.base import FuseItem
from llmblend.fuse.inputs import encode_source

pytest.importorskip("llama_cpp")

from llmblend.fuse.llama_fuser import LlamaCppFuser, LlamaTokenizer

ITEM = FuseItem(
    "Name the primary colours of light.",
    ("Red, green and blue.", "Red, yellow, blue — the “painter’s” primaries. 😀", "Green."),
)


@pytest.fixture(scope="module")
def fuser() -> LlamaCppFuser:
    return LlamaCppFuser("local:gemma3-270m", threads=2, max_new_tokens=24)


@pytest.mark.slow
def test_llama_tokenizer_gives_the_training_ids(fuser: LlamaCppFuser) -> None:
    """Training tokenizes with transformers' Gemma tokenizer (read from the same GGUF); serving
    with llama.cpp's. The fuser input must be the same ids either way."""
    from llmblend.hf_loading import load_tokenizer

    hf = load_tokenizer("local:gemma3-270m")
    llama = LlamaTokenizer(fuser._model())
    for budget in (None, 6):
        options = {"max_candidate_tokens": budget, "max_source_tokens": 96}
        assert encode_source(
            llama, "causal", ITEM.instruction, "", ITEM.candidates, **options
        ) == encode_source(hf, "causal", ITEM.instruction, "", ITEM.candidates, **options)


@pytest.mark.slow
def test_fuses_with_the_base_model_and_reports_failures_as_data(fuser: LlamaCppFuser) -> None:
    (good,) = fuser.fuse([ITEM])
    assert good.ok and good.text and 0 < good.completion_tokens <= 24 and good.prompt_tokens > 40
    assert fuser.fuse([ITEM])[0].text == good.text  # greedy: repeatable
    cramped = LlamaCppFuser("local:gemma3-270m", threads=2, max_source_tokens=20)
    (bad,) = cramped.fuse([ITEM])  # the frame alone is longer than 20 tokens
    assert not bad.ok and bad.error.startswith("bad_input") and "max_source_tokens" in bad.error
