"""The generate stage (LLM-Blender §2): every slot answers one instruction, concurrently.

:func:`generate_stage` asks each :class:`~llmblend.backends.config.Slot` (a backend with one sampling
variant; the same backend in several slots gives best-of-n) and returns :class:`Generated`: one
candidate per slot, in slot order, failed ones kept with their errors. :meth:`Generated.example` is
what the later stages read (the candidates that came back); :meth:`Generated.merge` puts their
result back among all the slots' candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.types import (
    BackendCalls,
    BlendCandidate,
    BlendResult,
    Candidate,
    Example,
    Message,
    Prompt,
    TokenUsage,
)

if TYPE_CHECKING:
    from llmblend.backends.config import Slot

#: The id of the example made from one generation when the caller gives none.
DEFAULT_ID = "blend"


def as_slots(slots_or_backends: Sequence[Slot | Backend]) -> list[Slot]:
    """Slots as given; a bare backend becomes one slot with the default (greedy) settings."""
    from llmblend.backends.config import Slot

    slots = []
    for entry in slots_or_backends:
        if isinstance(entry, Backend):
            slots.append(Slot(entry, GenerationParams()))
        elif isinstance(entry, Slot):
            slots.append(entry)
        else:
            raise TypeError(f"expected a Slot or a Backend, got {type(entry).__name__}: {entry!r}")
    return slots


def with_input(instruction: Prompt, input_text: str) -> Prompt:
    """What the models are asked: the instruction, with the input after it when there is one (a
    conversation gets it appended to its last turn)."""
    if not input_text:
        return instruction
    if isinstance(instruction, str):
        return f"{instruction}\n\n{input_text}"
    *head, last = instruction
    return [*head, Message(last.role, f"{last.content}\n\n{input_text}")]


@dataclass(slots=True)
class Generated:
    """What the generate stage gives for one instruction.

    ``candidates`` and ``generations``: one per slot, in slot order (a failed one has ``error`` set
    and empty text); ``seconds``: the stage's wall time (the slowest slot).
    """

    instruction: Prompt
    input: str
    candidates: list[BlendCandidate]
    generations: list[Generation]
    seconds: float

    @property
    def answered(self) -> list[int]:
        """Indices of the candidates that came back, in slot order."""
        return [i for i, c in enumerate(self.candidates) if c.ok]

    @property
    def error(self) -> str | None:
        """Why there is nothing to rank (every model failed), or None."""
        if self.answered:
            return None
        failures = "; ".join(f"{c.model} ({c.decoding_method}): {c.error}" for c in self.candidates)
        return f"every model failed: {failures}"

    @property
    def tokens(self) -> TokenUsage:
        """Prompt and completion tokens over every slot."""
        return TokenUsage(
            sum(g.prompt_tokens for g in self.generations), sum(g.completion_tokens for g in self.generations)
        )

    @property
    def usage(self) -> dict[str, BackendCalls]:
        """Calls, failures, tokens and the slowest call per backend name."""
        usage: dict[str, BackendCalls] = {}
        for g in self.generations:
            calls = usage.setdefault(g.model, BackendCalls())
            calls.calls += 1
            calls.failures += not g.ok
            calls.prompt_tokens += g.prompt_tokens
            calls.completion_tokens += g.completion_tokens
            calls.max_latency_s = max(calls.max_latency_s, g.latency_s)
        return usage

    def example(self, id: str = DEFAULT_ID) -> Example:
        """The candidates that came back as an :class:`~llmblend.types.Example` (what a ranker reads);
        its candidate ``j`` is ``self.candidates[self.answered[j]]``."""
        return Example(
            id=id,
            instruction=self.instruction,
            input=self.input,
            candidates=[
                Candidate(c.model, c.text, decoding_method=c.decoding_method)
                for c in (self.candidates[i] for i in self.answered)
            ],
        )

    def merge(self, result: BlendResult) -> BlendResult:
        """``result`` (of :meth:`example`, or a result with no candidates) over every slot: its
        candidates become a copy of ``self.candidates`` with the ranks and scores of the ranked ones,
        its ``ranking`` and ``top_k`` index slots, and it gets ``tokens["generate"]`` (first),
        ``usage`` and ``timings.generate_s``. Changes ``result`` in place and returns it."""
        answered = self.answered
        candidates = [replace(c) for c in self.candidates]
        for j, candidate in enumerate(result.candidates):
            candidates[answered[j]].score, candidates[answered[j]].rank = candidate.score, candidate.rank
        result.candidates = candidates
        result.ranking = tuple(answered[j] for j in result.ranking)
        result.top_k = tuple(answered[j] for j in result.top_k)
        result.tokens = {"generate": self.tokens, **result.tokens}
        result.usage = self.usage
        result.timings.generate_s = self.seconds
        return result


async def generate_stage(slots: Sequence[Slot], instruction: Prompt, input: str = "") -> Generated:
    """Ask every slot for an answer to ``instruction`` (with ``input`` after it), all at once; never
    raises for a failing model (its candidate carries the error)."""
    from llmblend.backends.fanout import ask_all

    if not slots:
        raise ValueError("the generate stage needs at least one slot (a backend with sampling settings)")
    started = time.perf_counter()
    generations = await ask_all(with_input(instruction, input), slots)
    seconds = time.perf_counter() - started
    candidates = [blend_candidate(slot.params, g) for slot, g in zip(slots, generations, strict=True)]
    return Generated(instruction, input, candidates, generations, seconds)


def blend_candidate(params: GenerationParams, generation: Generation) -> BlendCandidate:
    """The candidate of one generation made with ``params`` (failed: ``error`` set, no text)."""
    return BlendCandidate(
        model=generation.model,
        decoding_method=params.decoding_method,
        text=generation.text,
        error=generation.error,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        latency_s=generation.latency_s,
    )
