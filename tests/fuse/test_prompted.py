"""PromptedFuser without a network: the synthesis chat, failures as data, the concurrency bound."""

from __future__ import annotations

import asyncio

import pytest

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.errors import BackendError
from llmblend.fuse.base import FuseItem, Fuser
from llmblend.fuse.prompted import SYNTHESIS_PROMPT, PromptedFuser, synthesis_messages
from llmblend.types import Message, Prompt


class RecordingBackend(Backend):
    """Answers with a canned text per instruction, records prompts, counts calls in flight."""

    def __init__(self, answers: dict[str, str] | None = None, concurrency: int = 2, delay: float = 0.0):
        self.name = "recorder"
        self.concurrency = concurrency
        self.answers = answers or {}
        self.delay = delay
        self.prompts: list[Prompt] = []
        self.params: list[GenerationParams] = []
        self.in_flight = self.max_in_flight = 0

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        self.prompts.append(prompt)
        self.params.append(params)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            question = prompt[-1].content
            answer = self.answers.get(question, f"fused: {question}")
            if answer == "FAIL":
                raise BackendError("server overloaded")
            return Generation(answer, self.name, prompt_tokens=11, completion_tokens=3)
        finally:
            self.in_flight -= 1


def test_messages_are_a_numbered_synthesis_system_prompt_then_the_instruction() -> None:
    item = FuseItem("Summarise this.", ("best answer", "  second\nanswer  ", "third"), input="Some text.")
    system, user = synthesis_messages(item)
    assert system.role == "system" and system.content.startswith(SYNTHESIS_PROMPT)
    assert system.content.endswith("1. best answer\n\n2. second\nanswer\n\n3. third")
    assert user == Message("user", "Summarise this.\n\nSome text.")


def test_a_conversation_keeps_its_turns_and_its_system_message_first() -> None:
    conversation = [
        Message("system", "Be terse."),
        Message("user", "hi"),
        Message("assistant", "hello"),
        Message("user", "and now?"),
    ]
    messages = synthesis_messages(FuseItem(conversation, ("a", "b")))
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].content.startswith("Be terse.\n\n" + SYNTHESIS_PROMPT)
    assert messages[1:] == conversation[1:]


def test_fuse_returns_fused_in_order_with_tokens_and_failures_as_data() -> None:
    backend = RecordingBackend({"q2": "FAIL", "q3": "  "})
    with PromptedFuser(backend, GenerationParams(max_tokens=64)) as fuser:
        assert isinstance(fuser, Fuser) and fuser.name == "prompted:recorder"
        out = fuser.fuse([FuseItem(f"q{i}", ("x", "y")) for i in range(1, 5)])
    assert [f.text for f in out] == ["fused: q1", "", "", "fused: q4"]
    assert out[1].error == "error: server overloaded" and not out[1].ok
    assert out[2].error == "the fusing model returned an empty answer"
    assert (out[0].prompt_tokens, out[0].completion_tokens, out[0].fuser) == (11, 3, "prompted:recorder")
    assert all(p.max_tokens == 64 for p in backend.params)


def test_afuse_keeps_at_most_concurrency_calls_in_flight() -> None:
    backend = RecordingBackend(concurrency=2, delay=0.02)
    out = asyncio.run(PromptedFuser(backend, name="moa").afuse([FuseItem(f"q{i}", ("a",)) for i in range(6)]))
    assert [f.text for f in out] == [f"fused: q{i}" for i in range(6)]
    assert backend.max_in_flight == 2 and {f.fuser for f in out} == {"moa"}


def test_fuse_inside_a_running_loop_points_to_afuse() -> None:
    fuser = PromptedFuser(RecordingBackend())

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="afuse"):
            fuser.fuse([FuseItem("q", ("a",))])

    asyncio.run(inside())


def test_fuse_reuses_its_event_loop_across_calls() -> None:
    backend = RecordingBackend()
    loops = []
    original = backend._generate

    async def spy(prompt, params):
        loops.append(asyncio.get_running_loop())
        return await original(prompt, params)

    backend._generate = spy  # type: ignore[method-assign]
    fuser = PromptedFuser(backend)
    fuser.fuse([FuseItem("q", ("a",))])
    fuser.fuse([FuseItem("q", ("a",))])
    fuser.close()
    assert loops[0] is loops[1]
