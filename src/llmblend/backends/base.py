"""The one protocol every generation backend speaks (LLM-Blender §2: N LLMs answer one instruction).

A backend turns a prompt (an instruction as text, or a conversation of :class:`~llmblend.types.Message`)
and :class:`GenerationParams` into a :class:`Generation`. Subclasses implement :meth:`Backend._generate`,
which raises a typed :class:`~llmblend.errors.BackendError` on failure; the public
:meth:`Backend.generate` times the call and turns any failure into data (``Generation.error``), so
that one failing model never costs the other candidates.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace

from llmblend.errors import BackendError
from llmblend.types import Message, Prompt

log = logging.getLogger(__name__)


#: The most alternatives per token that :attr:`GenerationParams.top_logprobs` may ask for (OpenAI's cap).
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Decoding settings of one call. ``temperature == 0`` is greedy decoding.

    ``seed`` makes sampling repeatable where the backend supports it (llama.cpp, HF, vLLM, OpenAI);
    ``stop`` strings end the answer and are not part of it. ``top_logprobs`` (0 to 20) asks for
    :attr:`Generation.logprobs`: at each generated token, its logprob and the ``top_logprobs`` most
    likely alternatives; 0 asks for none. It does not change what is generated.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature must be in [0, 5], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        k = self.top_logprobs
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_TOP_LOGPROBS:
            raise ValueError(
                f"top_logprobs must be an integer from 0 (no logprobs) to {MAX_TOP_LOGPROBS}, got {k!r}"
            )
        if isinstance(self.stop, str | list):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def decoding_method(self) -> str:
        """The MixInstruct ``decoding_method`` of a candidate made with these settings.

        ``greedy``, or ``top_p_sampling`` with its temperature, top-p and seed, so that several
        samples of one model are told apart: ``top_p_sampling(t=0.7,p=0.9,seed=1)``.
        """
        if self.greedy:
            return "greedy"
        seed = "" if self.seed is None else f",seed={self.seed}"
        return f"top_p_sampling(t={self.temperature:g},p={self.top_p:g}{seed})"

    def with_stop(self, extra: tuple[str, ...]) -> GenerationParams:
        """These settings with more stop strings (a completion template's own, say)."""
        return replace(self, stop=tuple(dict.fromkeys((*self.stop, *extra))))


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token: its text, its log probability (natural log, at most 0) and the ``top``
    alternatives at its position as ``(token, logprob)``, most likely first. The server decides
    whether the chosen token is among them (llama.cpp always adds it, so it may give k + 1; OpenAI
    gives the plain top k).
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class Generation:
    """One backend call's answer, or why there is none (``error`` set, ``text`` empty).

    ``latency_s`` is the wall time of the call including retries; token counts come from the
    backend when it reports them and are 0 otherwise. ``logprobs`` holds one :class:`TokenLogprob`
    per generated token when ``GenerationParams.top_logprobs`` asked for them and the backend gave
    them; None otherwise (a server that ignores the option still gives a usable ``text``).
    """

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    error: str | None = None
    failure: BackendError | None = field(default=None, repr=False, compare=False)
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, model: str, failure: BackendError, latency_s: float = 0.0) -> Generation:
        return cls(text="", model=model, latency_s=latency_s, error=str(failure), failure=failure)

    def raise_for_error(self) -> Generation:
        """Raise the typed error of a failed generation (httpx's ``raise_for_status``); else self."""
        if self.failure is not None:
            raise self.failure
        if self.error is not None:
            raise BackendError(self.error, backend=self.model)
        return self


#: How a *base* (not instruction-tuned) model is asked: an Alpaca-style completion prompt, and the
#: strings that end its answer when it starts the next turn by itself.
COMPLETION_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
COMPLETION_STOP = ("### Instruction", "\n### ", "\n\n\n")


def as_messages(prompt: Prompt) -> list[Message]:
    """A prompt as chat messages: plain text is one user turn."""
    return [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)


class Backend(abc.ABC):
    """An LLM that answers prompts. ``name`` is the model name recorded on each candidate.

    Backends are used from asyncio; blocking ones (llama.cpp, transformers) run their work in a
    thread. ``concurrency`` is how many calls a caller should keep in flight at once. ``shared``
    says the calls go to a service that other processes call too (an HTTP API), not to a model of
    this process. ``gate``, when set, is entered around every :meth:`generate` call: an engine that
    runs a shared backend in many processes sets it to one limit for all of them
    (:mod:`llmblend.engines.limiter`), so ``concurrency`` holds across the cluster.
    """

    name: str
    concurrency: int = 1
    shared: bool = False
    gate: Callable[[], AbstractAsyncContextManager[object]] | None = None

    @abc.abstractmethod
    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        """One answer; raises :class:`BackendError` (or a subclass) when there is none."""

    async def generate(self, prompt: Prompt, params: GenerationParams | None = None) -> Generation:
        """One answer, with failures returned as data: never raises a :class:`BackendError`."""
        params = params or GenerationParams()
        started = time.perf_counter()
        try:
            async with self.gate() if self.gate else nullcontext():
                generation = await self._generate(prompt, params)
        except BackendError as exc:
            exc.backend = exc.backend or self.name
            log.info("%s failed: %s", self.name, exc)
            return Generation.failed(self.name, exc, time.perf_counter() - started)
        except Exception as exc:  # a bug in one model's call must not end a long batch job
            log.exception("%s raised an unexpected error", self.name)
            failure = BackendError(f"{type(exc).__name__}: {exc}", backend=self.name)
            return Generation.failed(self.name, failure, time.perf_counter() - started)
        generation.latency_s = time.perf_counter() - started
        return generation

    async def stream(self, prompt: Prompt, params: GenerationParams | None = None) -> AsyncIterator[str]:
        """The answer as text pieces while it is written; backends without streaming give one piece.

        Raises :class:`BackendError` on failure (a stream has no place to put it as data).
        """
        generation = (await self.generate(prompt, params)).raise_for_error()
        yield generation.text

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections, threads or models."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
