"""The ``judge:`` section of a models.yaml: how a backend ranks as an LLM judge, and the cascade.

::

    backends:
      - {name: gpt-4o, model: gpt-4o, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
    judge:
      backend: gpt-4o          # default: the first backend
      prompt: mt-bench         # or gpt-rank (LLM-Blender §5)
      max_reply_tokens: 512    # per judge call (default: 1024 for mt-bench, 16 for gpt-rank)
      strategy: knockout       # full, max-wins, bubble, knockout, sparse-refine or listwise
      orders: both             # or random: each pair once, in a seeded order
      max_calls: 20            # per example; also max_tokens, max_seconds
      prices: {prompt: 2.5, completion: 10.0}   # US dollars per 1M tokens, for the cost record
      cascade: {first: default, top_m: 3, margin: 0.5}

Unknown keys are refused, with the key path in the error (``judge.max_callz``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The strategy that sends every candidate in one prompt (:mod:`llmblend.rank.listwise`).
LISTWISE = "listwise"
#: The pairwise strategies (:data:`llmblend.rank.strategies.STRATEGIES`), named here to keep this
#: schema free of the ranking code; a test checks that the two lists agree.
PAIRWISE_STRATEGIES = ("full", "max-logits", "max-wins", "bubble", "knockout", "sparse-refine")
JUDGE_STRATEGIES = (*PAIRWISE_STRATEGIES, LISTWISE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceSettings(_Strict):
    """US dollars per million prompt and completion tokens."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)


class ListwiseSettings(_Strict):
    """Sliding windows of the listwise strategy (RankGPT)."""

    window: int = Field(20, ge=2)
    step: int = Field(10, ge=1)
    context_tokens: int = Field(8192, ge=256)


class CascadeSettings(_Strict):
    """``first`` (a ranker spec) ranks every candidate; the judge orders its ``top_m``; with
    ``margin``, only when the first ranker's top two scores are closer than it."""

    first: str = "default"
    top_m: int = Field(3, ge=2)
    margin: float | None = Field(None, ge=0)


class JudgeSettings(_Strict):
    """How a backend of the file judges; see the module docstring."""

    backend: str | None = None
    prompt: Literal["mt-bench", "gpt-rank"] = "mt-bench"
    max_reply_tokens: int | None = Field(None, ge=1)
    strategy: str = "full"
    orders: Literal["both", "random"] = "both"
    soft: bool = True
    seed: int = 0
    max_calls: int | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)
    max_seconds: float | None = Field(None, gt=0)
    prices: PriceSettings | None = None
    cache: str | None = None
    listwise: ListwiseSettings = ListwiseSettings()
    cascade: CascadeSettings | None = None

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in JUDGE_STRATEGIES:
            raise ValueError(f"unknown judge strategy {value!r}; known: {', '.join(JUDGE_STRATEGIES)}")
        return value
