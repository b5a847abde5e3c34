"""What every fuser takes and gives (LLM-Blender §4, GenFuser).

A fuser reads an instruction (and its optional input) with the top-K ranked candidates, best first,
and writes one better answer. :class:`FuseItem` is one such request; :class:`Fused` the answer, or
why there is none (``error``), as data: a batch never stops on one bad item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmblend.types import Prompt


@dataclass(frozen=True, slots=True)
class FuseItem:
    """One instruction with its top-K candidates, best first (K = 3 in the paper)."""

    instruction: Prompt
    candidates: tuple[str, ...]
    input: str = ""

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError("a fuser needs at least one candidate; got none")
        if isinstance(self.candidates, list):
            object.__setattr__(self, "candidates", tuple(self.candidates))


@dataclass(slots=True)
class Fused:
    """A fused answer; ``error`` set (and ``text`` empty) when there is none."""

    text: str
    fuser: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Fuser(Protocol):
    """Anything that fuses candidates; ``name`` labels its outputs."""

    name: str

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        """One :class:`Fused` per item, in order; failures come back as data."""
        ...
