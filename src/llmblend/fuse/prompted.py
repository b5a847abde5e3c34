"""A fuser that asks an LLM to synthesise the top-K candidates (LLM-Blender §4, prompted instead of trained).

LLM-Blender's GenFuser is a seq2seq model trained to read the instruction and the top-K ranked
candidates and write one better answer. :class:`PromptedFuser` gets the same job done with any
instruction-following model behind a :class:`~llmblend.backends.base.Backend`, prompted the way the
aggregator of Mixture-of-Agents is (Wang et al. 2024, "Mixture-of-Agents Enhances Large Language
Model Capabilities", arXiv:2406.04692): a system message lists the candidate responses, numbered,
and asks for one synthesised, critically checked answer; the user turn is the instruction itself.

Calls run concurrently, at most ``backend.concurrency`` at once; a failed call is a
:class:`~llmblend.fuse.base.Fused` with ``error`` set, never an exception mid-batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llmblend.backends.base import Backend, Generation, GenerationParams, as_messages
from llmblend.fuse.base import Fused, FuseItem
from llmblend.types import Message

#: The synthesis instruction (after Mixture-of-Agents' aggregate-and-synthesize prompt); the numbered
#: candidates follow it. The candidates come best first, as the ranker ordered them.
SYNTHESIS_PROMPT = (
    "You have been given several responses from different AI models to the user's latest request. "
    "Your job is to combine them into one response of the highest quality. Read every response "
    "critically: some of them may contain mistakes, omissions or invented facts, so do not copy any "
    "of them blindly. Keep what is correct and useful, fix or drop what is wrong, and add what all of "
    "them missed. Do not mention the responses, the models or this synthesis; answer the user "
    "directly, in a well-organised, accurate and complete way that follows their request exactly. "
    "The responses are listed from the most to the least promising, as judged by a ranker."
)
RESPONSES_HEADER = "Responses from the models:"
#: Decoding used when none is given: greedy, with room for an answer that merges several.
DEFAULT_PARAMS = GenerationParams(max_tokens=512, temperature=0.0)


def synthesis_system_prompt(candidates: Sequence[str]) -> str:
    """:data:`SYNTHESIS_PROMPT` followed by the candidates numbered ``1.``, ``2.``, ... (best first)."""
    numbered = "\n\n".join(f"{number}. {text.strip()}" for number, text in enumerate(candidates, start=1))
    return f"{SYNTHESIS_PROMPT}\n\n{RESPONSES_HEADER}\n\n{numbered}"


def synthesis_messages(item: FuseItem) -> list[Message]:
    """The chat a :class:`PromptedFuser` sends for one item.

    A system message with the synthesis prompt and the candidates, then the instruction as the user
    turn (with ``item.input`` after it, as the candidates' models were asked). A conversation keeps
    its turns; its own system message, if it has one, is kept in front of the synthesis prompt, in
    the same system message (several chat templates allow only one).
    """
    turns = as_messages(item.instruction)
    if item.input:
        *head, last = turns
        turns = [*head, Message(last.role, f"{last.content}\n\n{item.input}")]
    system = synthesis_system_prompt(item.candidates)
    if turns and turns[0].role == "system":
        system = f"{turns[0].content}\n\n{system}"
        turns = turns[1:]
    return [Message("system", system), *turns]


class PromptedFuser:
    """Fuse the top-K candidates with a prompted LLM (see the module docstring).

    ``params`` are the decoding settings of each call (default :data:`DEFAULT_PARAMS`: greedy, 512
    tokens); ``name`` labels the outputs (default ``"prompted:<backend name>"``).
    """

    def __init__(self, backend: Backend, params: GenerationParams | None = None, name: str | None = None):
        self.backend = backend
        self.params = params or DEFAULT_PARAMS
        self.name = name or f"prompted:{backend.name}"
        self._runner: asyncio.Runner | None = None

    def __repr__(self) -> str:
        return f"PromptedFuser(backend={self.backend.name!r}, name={self.name!r})"

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        """One :class:`Fused` per item, in order, from synchronous code.

        Runs on an event loop of this fuser's own, kept between calls so that the backend keeps its
        connections (:meth:`close` ends it). Inside a running event loop (a server, a notebook cell
        with ``await``) use :meth:`afuse`.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "PromptedFuser.fuse() was called inside a running event loop; use `await fuser.afuse(items)`"
            )
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(self.afuse(items))

    async def afuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        """One :class:`Fused` per item, in order; at most ``backend.concurrency`` calls at once."""
        gate = asyncio.Semaphore(max(1, self.backend.concurrency))

        async def one(item: FuseItem) -> Fused:
            async with gate:
                generation = await self.backend.generate(synthesis_messages(item), self.params)
            return self._fused(generation)

        return list(await asyncio.gather(*(one(item) for item in items)))

    def _fused(self, generation: Generation) -> Fused:
        error = generation.error
        if error is None and not generation.text.strip():
            error = "the fusing model returned an empty answer"
        return Fused(
            text=generation.text if error is None else "",
            fuser=self.name,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            latency_s=generation.latency_s,
            error=error,
            extra={"model": generation.model, "finish_reason": generation.finish_reason},
        )

    async def aclose(self) -> None:
        """Close the backend (its connections or model)."""
        await self.backend.aclose()

    def close(self) -> None:
        """Close the backend and the event loop of :meth:`fuse` (from synchronous code)."""
        if self._runner is None:
            asyncio.run(self.aclose())
            return
        try:
            self._runner.run(self.aclose())
        finally:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> PromptedFuser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
