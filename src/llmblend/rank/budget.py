"""What a costly pair scorer (an LLM judge) may spend per example, and what it spent.

PairRanker's forwards are cheap and uniform; an LLM judge's calls cost tokens, seconds and money,
so the ranking strategies (§3.2) can be told to stop early. A :class:`Budget` caps one example's
judge calls, tokens and seconds; :class:`Spend` adds up what the example used; :class:`Prices`
turns tokens into dollars. A strategy asks :meth:`Budget.allowance` before each round and asks at
most that many pairs; an example whose budget runs out is ranked from the comparisons it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Spend:
    """One example's judge use: fresh ``calls``, orderings read from the ``cached`` judgements,
    tokens, and the wall ``seconds`` of the rounds it took part in."""

    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Spend) -> None:
        self.calls += other.calls
        self.cached += other.cached
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds

    def as_record(self, prices: Prices | None = None) -> dict[str, Any]:
        """The JSON-able record of the spend (``cost_usd`` only when prices are known)."""
        record: dict[str, Any] = {
            "calls": self.calls,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 4),
        }
        if prices is not None:
            record["cost_usd"] = round(prices.cost(self), 8)
        return record


@dataclass(frozen=True, slots=True)
class Prices:
    """US dollars per million prompt and completion tokens (a provider's price list)."""

    prompt_per_mtok: float = 0.0
    completion_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        for name in ("prompt_per_mtok", "completion_per_mtok"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a price of at least 0 dollars per 1M tokens, got {value}")

    def cost(self, spend: Spend) -> float:
        return (
            spend.prompt_tokens * self.prompt_per_mtok + spend.completion_tokens * self.completion_per_mtok
        ) / 1e6


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``max_calls`` judge calls, ``max_tokens`` tokens and ``max_seconds`` seconds per
    example (None: no limit). Cached judgements cost nothing."""

    max_calls: int | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_calls", "max_tokens", "max_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be above 0 (or None for no limit), got {value}")

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.max_calls, self.max_tokens, self.max_seconds))

    def allowance(self, spent: Spend) -> int | None:
        """How many more calls the example may make now; None when nothing limits them.

        Tokens are forecast from the mean per call so far (the first round is always allowed), so a
        round can overshoot ``max_tokens`` by at most one call's worth; seconds stop new rounds.
        """
        limits: list[int] = []
        if self.max_calls is not None:
            limits.append(self.max_calls - spent.calls)
        if self.max_tokens is not None:
            limits.append(self._calls_within_tokens(spent))
        if self.max_seconds is not None and spent.seconds >= self.max_seconds:
            limits.append(0)
        return max(0, min(limits)) if limits else None

    def _calls_within_tokens(self, spent: Spend) -> int:
        assert self.max_tokens is not None
        left = self.max_tokens - spent.tokens
        if left <= 0:
            return 0
        if spent.calls == 0 or spent.tokens == 0:
            return 1 << 30  # nothing to forecast from yet
        return int(left // (spent.tokens / spent.calls))
