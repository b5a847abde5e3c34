"""Ask every (backend, sampling variant) at once and keep the books (LLM-Blender §2).

:func:`ask_all` sends one prompt to each :class:`~llmblend.backends.config.Slot` concurrently; each
backend limits its own in-flight calls (a semaphore for HTTP, a lock or a batcher for local models),
so a slow or failing model holds up nobody else. :class:`UsageLog` adds up calls, tokens, latencies
and failures per backend for the table ``llmblend generate`` prints at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmblend.backends.base import Generation
from llmblend.backends.config import Slot
from llmblend.types import Prompt


async def ask_all(prompt: Prompt, slots: Sequence[Slot]) -> list[Generation]:
    """One :class:`Generation` per slot, in slot order; failures are data (``error`` set)."""
    return list(await asyncio.gather(*(slot.backend.generate(prompt, slot.params) for slot in slots)))


@dataclass(slots=True)
class BackendUsage:
    """One backend's calls so far."""

    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def add(self, generation: Generation) -> None:
        self.calls += 1
        self.failures += not generation.ok
        self.prompt_tokens += generation.prompt_tokens
        self.completion_tokens += generation.completion_tokens
        self.latencies_s.append(generation.latency_s)

    def latency_percentile(self, q: float) -> float:
        """The ``q``-th percentile of call latency in seconds (NaN before any call)."""
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


@dataclass(slots=True)
class UsageLog:
    """Usage per backend name."""

    backends: dict[str, BackendUsage] = field(default_factory=dict)

    def add(self, generations: Sequence[Generation]) -> None:
        for generation in generations:
            self.backends.setdefault(generation.model, BackendUsage()).add(generation)

    def to_json(self) -> dict[str, Any]:
        """The log as plain JSON (what a worker process sends back)."""
        return {name: asdict(usage) for name, usage in self.backends.items()}

    def merge(self, other: dict[str, Any]) -> None:
        """Add the calls of another log, given as :meth:`to_json` wrote it."""
        for name, fields in other.items():
            usage = self.backends.setdefault(name, BackendUsage())
            usage.calls += fields["calls"]
            usage.failures += fields["failures"]
            usage.prompt_tokens += fields["prompt_tokens"]
            usage.completion_tokens += fields["completion_tokens"]
            usage.latencies_s += fields["latencies_s"]

    @property
    def completion_tokens(self) -> int:
        return sum(usage.completion_tokens for usage in self.backends.values())

    @property
    def failures(self) -> int:
        return sum(usage.failures for usage in self.backends.values())

    def rows(self) -> list[dict[str, float | int | str]]:
        """One summary row per backend: calls, failures, tokens, latency p50/p95."""
        return [
            {
                "backend": name,
                "calls": usage.calls,
                "failures": usage.failures,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "latency_p50_s": usage.latency_percentile(50),
                "latency_p95_s": usage.latency_percentile(95),
            }
            for name, usage in self.backends.items()
        ]
