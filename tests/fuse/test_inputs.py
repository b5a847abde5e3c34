"""GenFuser inputs (LLM-Blender §4): the verbatim seq2seq string, the causal prompt, token budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmblend.backends.base import COMPLETION_TEMPLATE
from llmblend.fuse.inputs import (
    FUSE_REQUEST,
    causal_messages,
    causal_prompt,
    causal_user_message,
    encode_source,
    seq2seq_input,
    token_ids,
    truncate_to_tokens,
)
from llmblend.types import Message

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def t5_tokenizer(tiny_t5: Path):
    return transformers.AutoTokenizer.from_pretrained(tiny_t5)


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_causal_lm: Path):
    return transformers.AutoTokenizer.from_pretrained(tiny_causal_lm)


@pytest.fixture(scope="module")
def plain_tokenizer(tiny_causal_lm_plain: Path):
    return transformers.AutoTokenizer.from_pretrained(tiny_causal_lm_plain)


def test_seq2seq_input_is_llm_blenders_string():
    text = seq2seq_input(
        "Name the capital of France.",
        "Answer in one word.",
        ["Paris", "The capital is Paris.", "Lyon"],
    )
    assert text == (
        "Instruction: Name the capital of France.</s>Input: Answer in one word.</s>"
        "Candidate 0: <extra_id_0>:Paris</s>Candidate 1: <extra_id_1>:The capital is Paris.</s>"
        "Candidate 2: <extra_id_2>:Lyon</s>Summarize candidates into a better one for the given instruction:"
    )


def test_seq2seq_input_with_no_input_and_a_conversation():
    conversation = [Message("user", "hi"), Message("assistant", "hello"), Message("user", "two?")]
    text = seq2seq_input(conversation, "", ["a", "b"])
    assert text == (
        "Instruction: user: hi\n\nassistant: hello\n\nuser: two?</s>Input: </s>"
        "Candidate 0: <extra_id_0>:a</s>Candidate 1: <extra_id_1>:b</s>" + FUSE_REQUEST
    )


def test_seq2seq_input_cuts_candidates_on_token_boundaries(t5_tokenizer):
    text = seq2seq_input(
        "write one",
        "",
        ["one two three four five", "yes no"],
        tokenizer=t5_tokenizer,
        max_candidate_tokens=3,
    )
    # the word-level tokenizer decodes with spaces; a cut candidate gets "..." as in LLM-Blender
    assert text == (
        "Instruction: write one</s>Input: </s>Candidate 0: <extra_id_0>:one two three...</s>"
        "Candidate 1: <extra_id_1>:yes no</s>" + FUSE_REQUEST
    )
    # T5 reads the separators and sentinels as single special tokens
    tokens = t5_tokenizer.convert_ids_to_tokens(t5_tokenizer(text)["input_ids"])
    assert tokens.count("</s>") == 5 and "<extra_id_0>" in tokens and "<extra_id_1>" in tokens


def test_truncate_to_tokens_cuts_on_the_budget(chat_tokenizer):
    text = "the capital of france is paris, and the best answer is not always the longest."
    ids = token_ids(chat_tokenizer, text)
    assert len(ids) > 8
    for budget in (1, 5, 8):
        cut = truncate_to_tokens(chat_tokenizer, text, budget)
        assert token_ids(chat_tokenizer, cut) == ids[:budget]
        assert text.startswith(cut)
    assert truncate_to_tokens(chat_tokenizer, text, 5, suffix="...").endswith("...")
    assert truncate_to_tokens(chat_tokenizer, text, len(ids)) == text  # within budget: unchanged
    assert truncate_to_tokens(chat_tokenizer, text, None) == text
    assert truncate_to_tokens(chat_tokenizer, text, 0) == ""
    with pytest.raises(ValueError, match="max_tokens must be >= 0"):
        truncate_to_tokens(chat_tokenizer, text, -1)


def test_causal_user_message_layout():
    content = causal_user_message("Name a city.", "In France.", ["Paris", "Lyon is one"])
    assert content == (
        "Instruction: Name a city.\n\nInput: In France.\n\nCandidate 0:\nParis\n\nCandidate 1:\nLyon is one"
        "\n\nSummarize candidates into a better one for the given instruction:"
    )
    assert "Input:" not in causal_user_message("Name a city.", "", ["Paris"])
    assert causal_messages("q", "", ["a"]) == [
        {"role": "user", "content": causal_user_message("q", "", ["a"])}
    ]


def test_causal_prompt_uses_the_chat_template_when_there_is_one(chat_tokenizer):
    prompt = causal_prompt(chat_tokenizer, "name a city.", "", ["paris", "lyon"])
    content = causal_user_message("name a city.", "", ["paris", "lyon"])
    assert prompt == f"<|user|>\n{content}<|eos|>\n<|assistant|>\n"  # the tiny template, generation prompt on


def test_causal_prompt_uses_the_completion_template_otherwise(plain_tokenizer):
    prompt = causal_prompt(plain_tokenizer, "name a city.", "", ["paris", "lyon"])
    content = causal_user_message("name a city.", "", ["paris", "lyon"])
    assert prompt == COMPLETION_TEMPLATE.replace("{prompt}", content)
    assert prompt.startswith("### Instruction:\nInstruction: name a city.") and prompt.endswith(
        "### Response:\n"
    )


def test_encode_source_keeps_the_request_within_the_budget(chat_tokenizer, t5_tokenizer):
    long = " ".join(["the best answer is not always the longest"] * 30)
    full = encode_source(chat_tokenizer, "causal", long, "", [long, "paris", long])
    for budget in (120, 200):
        ids = encode_source(
            chat_tokenizer, "causal", long, "", [long, "paris", long], max_source_tokens=budget
        )
        assert len(full) > budget >= len(ids) > budget - 30
        text = chat_tokenizer.decode(ids)
        assert text.endswith(FUSE_REQUEST + "<|eos|>\n<|assistant|>\n")  # the request and frame survive
        assert "Candidate 1:\nparis\n\nCandidate 2:" in text  # the short candidate is not cut
    # seq2seq: the tokenizer appends </s> (id 1)
    ids = encode_source(t5_tokenizer, "seq2seq", long, "", [long, "paris"], max_source_tokens=50)
    assert len(ids) <= 50 and ids[-1] == 1
    assert t5_tokenizer.decode(ids).endswith(
        "summarize candidates into a better one for the given instruction : </s>"
    )


def test_encode_source_applies_the_candidate_budget_first(chat_tokenizer):
    text = "one two three four five six seven eight nine ten"
    ids = encode_source(chat_tokenizer, "causal", "q", "", [text], max_candidate_tokens=3)
    cut = truncate_to_tokens(chat_tokenizer, text, 3)
    assert f"Candidate 0:\n{cut}...\n\n" in chat_tokenizer.decode(ids)


def test_encode_source_says_when_the_frame_alone_is_too_long(chat_tokenizer):
    with pytest.raises(ValueError, match="does not fit in max_source_tokens=10"):
        encode_source(chat_tokenizer, "causal", "q", "", ["a", "b", "c"], max_source_tokens=10)
    with pytest.raises(ValueError, match="kind must be one of"):
        encode_source(chat_tokenizer, "decoder", "q", "", ["a"])
    with pytest.raises(ValueError, match="at least one candidate"):
        seq2seq_input("q", "", [])
