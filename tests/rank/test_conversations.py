"""Conversations: the latest turns fill the source budget; conversations are compared by what differs."""

from __future__ import annotations

import pytest

from llmblend.rank.pairranker import SOURCE_TOKEN, PairRanker
from llmblend.types import Message, is_flattened_conversation, prompt_text, split_conversations


@pytest.fixture(scope="module")
def ranker() -> PairRanker:
    return PairRanker.default(runtime="onnx-int8")


def _turns(n: int) -> list[Message]:
    return [Message("user" if k % 2 == 0 else "assistant", f"turn {k} " + "filler " * 20) for k in range(n)]


def test_a_long_conversation_keeps_its_latest_turns_and_an_instruction_its_start(ranker) -> None:
    conversation = prompt_text([*_turns(6), Message("user", "What is the capital of France?")])
    ids = ranker._source_ids(conversation)
    assert len(ids) == ranker.config.source_max_length
    text = ranker.tokenizer.decode(ids)
    assert "capital of france" in text.lower() and "turn 0" not in text  # cut from the left
    marker = ranker.tokenizer.convert_tokens_to_ids(SOURCE_TOKEN)
    assert (
        ids[1] == marker
        and ids[0] == ranker.tokenizer.convert_tokens_to_ids("[CLS]")
        and ids[-1] == ranker.tokenizer.convert_tokens_to_ids("[SEP]")
    )
    instruction = "What is the capital of France? " + "Please answer in detail. " * 30
    assert (
        "capital of france" in ranker.tokenizer.decode(ranker._source_ids(instruction)).lower()
    )  # the start


def test_a_short_conversation_is_encoded_whole(ranker) -> None:
    short = prompt_text(
        [Message("user", "Hi."), Message("assistant", "Hello!"), Message("user", "Name a colour.")]
    )
    full = ranker.tokenizer(SOURCE_TOKEN + short)["input_ids"]
    assert ranker._source_ids(short) == full


def test_split_conversations_shares_the_history_and_keeps_what_differs() -> None:
    history = [Message("user", "Name a metal."), Message("assistant", "Iron."), Message("user", "Another?")]
    a, b = [*history, Message("assistant", "Copper.")], [*history, Message("assistant", "Wood.")]
    source, x, y = split_conversations(a, b)
    assert source == history and (x, y) == ("Copper.", "Wood.")
    own_a = [history[0], Message("assistant", "Tin."), history[2], Message("assistant", "Lead.")]
    source, x, y = split_conversations(own_a, b)
    assert source == "Name a metal." and x.startswith("assistant: Tin.") and is_flattened_conversation(x)
    assert not is_flattened_conversation("user: is this a conversation? no.")


def test_compare_conversations_prefers_the_better_last_turn_in_either_order(ranker) -> None:
    history = [
        Message("user", "What is the capital of France?"),
        Message("assistant", "Paris."),
        Message("user", "And of Italy?"),
    ]
    good, bad = (
        [*history, Message("assistant", "Rome is the capital of Italy.")],
        [*history, Message("assistant", "Bananas.")],
    )
    forward = ranker.compare_conversations([good], [bad])
    backward = ranker.compare_conversations([bad], [good])
    assert forward[0] > 0 and backward[0] == pytest.approx(-forward[0])
    expected = ranker.compare([prompt_text(history)], ["Rome is the capital of Italy."], ["Bananas."])
    assert forward[0] == pytest.approx(expected[0])


def test_mt_bench_second_turns_convert_to_whole_continuations(data_dir) -> None:
    from llmblend.data.sources.fastchat import mt_bench_two_turn_examples

    examples = mt_bench_two_turn_examples(data_dir)
    assert len(examples) == 80 and all(len(ex.candidates) == 32 for ex in examples)
    first = examples[0]
    assert isinstance(first.instruction, str) and first.extra["second_turn"]
    assert all(
        c.text.startswith("assistant: ") and first.extra["second_turn"] in c.text for c in first.candidates
    )


def test_the_cli_and_the_gateway_compare_conversations(tmp_path, scripted_server) -> None:
    import json

    import httpx
    from typer.testing import CliRunner

    from llmblend.cli import app
    from llmblend.serve.app import ServeSettings
    from serve_helpers import scripted_config, start_gateway

    history = [{"role": "user", "content": "What is the capital of Italy?"}]
    good = [*history, {"role": "assistant", "content": "Rome is the capital of Italy."}]
    bad = [*history, {"role": "assistant", "content": "Bananas."}]
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text(json.dumps(bad))
    (tmp_path / "broken.json").write_text('[{"role": "user"}]')
    runner = CliRunner()
    args = [
        "compare-conversations",
        str(tmp_path / "a.json"),
        str(tmp_path / "b.json"),
        "--runtime",
        "onnx-int8",
    ]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0 and result.output.startswith("better: A"), result.output
    broken = runner.invoke(
        app, ["compare-conversations", str(tmp_path / "broken.json"), str(tmp_path / "b.json")]
    )
    assert broken.exit_code == 2 and "not a JSON list of {role, content} messages" in broken.output
    live = start_gateway(ServeSettings(scripted_config(scripted_server, ranker={"runtime": "onnx-int8"})))
    try:
        body = {"messages": history, "a": "Rome is the capital of Italy.", "b": "Bananas."}
        compared = httpx.post(f"{live.v1}/compare", json=body).json()
        both = httpx.post(f"{live.v1}/compare", json={**body, "instruction": "x"})
    finally:
        live.stop()
    assert compared["better"] == "a" and 0.5 < compared["probability"] < 1.0
    assert both.status_code == 400 and "either instruction or messages" in both.text
