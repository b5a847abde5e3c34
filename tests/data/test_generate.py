"""The resumable MixInstruct generation job: records, partial failures, retries, the failed file.

These unit tests drive the job with a scripted in-process backend (to control exactly which call
fails); tests/backends/test_generate_http.py runs it against real HTTP and a real kill -9.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.backends.config import Slot
from llmblend.data.generate import (
    Instruction,
    failed_path_for,
    generate_dataset,
    read_instructions,
)
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.errors import BackendResponseError, DataFormatError
from llmblend.types import Message, Prompt, prompt_text


class ScriptedBackend(Backend):
    """Answers "<name>: <prompt>"; fails with a 500-style error for prompts in ``failing``."""

    def __init__(self, name: str, failing: set[str] | None = None) -> None:
        self.name = name
        self.failing = failing or set()
        self.asked: list[tuple[str, str]] = []

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        text = prompt_text(prompt)
        self.asked.append((text, params.decoding_method))
        await asyncio.sleep(0.001)
        if text in self.failing:
            raise BackendResponseError("server said 500", status=500, retryable=True)
        return Generation(f"{self.name}: {text}", self.name, prompt_tokens=3, completion_tokens=5)


def slots_of(*backends: ScriptedBackend) -> list[Slot]:
    variants = [GenerationParams(temperature=0.7, seed=0), GenerationParams(temperature=0.7, seed=1)]
    return [Slot(backend, params) for backend in backends for params in variants]


ITEMS = [Instruction(f"i{n}", f"question {n}") for n in range(6)]


def run(items, slots, out):
    return asyncio.run(generate_dataset(items, slots, out, max_in_flight=3))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_instruction_gets_every_slot_in_input_order(tmp_path: Path) -> None:
    out = tmp_path / "mix.jsonl"
    report = run(ITEMS, slots_of(ScriptedBackend("a"), ScriptedBackend("b")), out)
    examples = load_mixinstruct(out)  # a valid MixInstruct file
    assert [e.id for e in examples] == [item.id for item in ITEMS]
    for example in examples:
        assert [(c.model, c.decoding_method) for c in example.candidates] == [
            ("a", "top_p_sampling(t=0.7,p=1,seed=0)"),
            ("a", "top_p_sampling(t=0.7,p=1,seed=1)"),
            ("b", "top_p_sampling(t=0.7,p=1,seed=0)"),
            ("b", "top_p_sampling(t=0.7,p=1,seed=1)"),
        ]
        assert example.candidates[2].text == f"b: {example.instruction}"
        entries = example.extra["generation"]
        assert [e["error"] for e in entries] == [None] * 4
        assert entries[0]["completion_tokens"] == 5
    assert (report.written, report.candidates, report.failed_slots) == (6, 24, 0)
    assert report.usage.backends["a"].calls == 12


def test_a_failing_backend_leaves_the_others_and_is_retried_next_run(tmp_path: Path) -> None:
    out = tmp_path / "mix.jsonl"
    good, flaky = ScriptedBackend("good"), ScriptedBackend("flaky", failing={"question 2", "question 4"})
    report = run(ITEMS, slots_of(good, flaky), out)
    assert report.failed_slots == 4
    record = {r["id"]: r for r in lines(out)}["i2"]
    assert [c["model"] for c in record["candidates"]] == ["good", "good"]
    errors = [e for e in record["generation"] if e["error"]]
    assert {e["model"] for e in errors} == {"flaky"} and len(errors) == 2
    assert errors[0]["error"] == "bad_response: server said 500"

    flaky.failing.clear()
    good.asked.clear()
    flaky.asked.clear()
    report = run(ITEMS, slots_of(good, flaky), out)
    assert good.asked == []  # nothing that succeeded is asked again
    assert sorted(flaky.asked) == sorted(
        (f"question {n}", f"top_p_sampling(t=0.7,p=1,seed={s})") for n in (2, 4) for s in (0, 1)
    )
    assert (report.already_done, report.written, report.failed_slots) == (4, 2, 0)
    records = lines(out)
    assert [r["id"] for r in records] == [item.id for item in ITEMS]  # one line each, input order
    fixed = records[2]
    assert [c["model"] for c in fixed["candidates"]] == ["good", "good", "flaky", "flaky"]
    assert all(e["error"] is None for e in fixed["generation"])


def test_instructions_nobody_answered_wait_in_the_failed_file(tmp_path: Path) -> None:
    out = tmp_path / "mix.jsonl"
    backend = ScriptedBackend("only", failing={"question 1"})
    run(ITEMS, slots_of(backend), out)
    assert [r["id"] for r in lines(out)] == ["i0", "i2", "i3", "i4", "i5"]
    failed = lines(failed_path_for(out))
    assert [(r["id"], r["candidates"]) for r in failed] == [("i1", [])]
    assert all("bad_response" in e["error"] for e in failed[0]["generation"])

    backend.failing.clear()
    report = run(ITEMS, slots_of(backend), out)
    assert report.written == 1
    assert [r["id"] for r in lines(out)] == [item.id for item in ITEMS]
    assert not failed_path_for(out).exists()


def test_a_torn_line_and_superseded_lines_are_cleaned_up(tmp_path: Path) -> None:
    out = tmp_path / "mix.jsonl"
    backend = ScriptedBackend("a")
    run(ITEMS[:3], slots_of(backend), out)
    complete = out.read_text()
    first = complete.splitlines()[0]
    out.write_text(complete + first + "\n" + '{"id": "i5", "instruction": "quest')  # duplicate + torn
    backend.asked.clear()
    run(ITEMS, slots_of(backend), out)
    assert sorted({text for text, _ in backend.asked}) == ["question 3", "question 4", "question 5"]
    assert [r["id"] for r in lines(out)] == [item.id for item in ITEMS]


def test_reading_instructions(tmp_path: Path) -> None:
    txt = tmp_path / "questions.txt"
    txt.write_text("What is 2+2?\n\nName a colour.\n")
    items = read_instructions(txt)
    assert [i.instruction for i in items] == ["What is 2+2?", "Name a colour."]
    assert read_instructions(txt)[0].id == items[0].id  # stable ids for resuming

    jsonl = tmp_path / "in.jsonl"
    records = [
        {"id": "x", "instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": [{"role": "user", "content": "Hi"}], "input": "there"},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    first, second = read_instructions(jsonl)
    assert (first.id, first.prompt, first.output) == ("x", "Translate\n\nbonjour", "hello")
    assert second.prompt == [Message("user", "Hi\n\nthere")]

    jsonl.write_text(json.dumps({"id": "x", "instruction": 3}) + "\n")
    with pytest.raises(DataFormatError, match=r"in\.jsonl:1: instruction"):
        read_instructions(jsonl)
    txt.write_text("same\nsame\n")
    with pytest.raises(DataFormatError, match="repeats id"):
        read_instructions(txt)
