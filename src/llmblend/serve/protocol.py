"""The gateway's wire format: OpenAI's chat-completion request and response shapes, and llmblend's own
``/v1/rank``, ``/v1/compare`` and ``/v1/feedback`` bodies (pydantic, validated on the way in).

Requests follow OpenAI's schema: fields the gateway does not use (``presence_penalty``,
``logit_bias``, ``response_format``...) are accepted and ignored, as other OpenAI-compatible servers
do; the ones whose meaning it cannot honour (``n`` > 1, ``tools``) are refused with a 400. The
``llmblend`` field (``extra_body={"llmblend": {"details": true}}`` in the SDK) asks for the blend's
details in the response; without it a response has only OpenAI's fields.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmblend.types import Message, Prompt, as_prompt, prompt_text


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(BaseModel):
    """One turn. ``content`` is text, or OpenAI's list of parts of which the text parts are kept."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

    @field_validator("content")
    @classmethod
    def _text_parts(cls, content: str | list[dict[str, Any]]) -> str:
        if isinstance(content, str):
            return content
        texts = [part.get("text") for part in content if part.get("type") == "text"]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
        return "\n".join(texts)

    def message(self) -> Message:
        role = "system" if self.role == "developer" else self.role
        return Message(role, str(self.content))


class LlmblendOptions(_Body):
    """llmblend's own request options: ``details`` adds the ``llmblend`` object to the response."""

    details: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's request (see the module docstring)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    n: int = 1
    llmblend: LlmblendOptions = LlmblendOptions()

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.n != 1:
            raise ValueError(f"n must be 1 (one answer per request), got {self.n}")
        for name in ("tools", "functions", "tool_choice", "function_call"):
            if (self.model_extra or {}).get(name):
                raise ValueError(f"{name} is not supported by the llmblend gateway")
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message is the assistant's; end the conversation with a user turn")
        return self

    @property
    def prompt(self) -> Prompt:
        """The conversation; a single user turn is plain text (as the ranker was trained)."""
        return as_prompt([m.message() for m in self.messages])

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def overrides(self) -> dict[str, Any]:
        """The decoding settings the request sets, as :class:`GenerationParams` fields."""
        values: dict[str, Any] = {
            "max_tokens": self.requested_max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": (self.stop,) if isinstance(self.stop, str) else tuple(self.stop) if self.stop else None,
        }
        return {name: value for name, value in values.items() if value is not None}


class CandidateIn(_Body):
    text: str
    model: str | None = None


class RankRequest(_Body):
    """``POST /v1/rank``: an instruction (or messages) and the candidate answers to rank."""

    instruction: str | None = None
    messages: list[ChatMessage] | None = None
    candidates: list[str | CandidateIn] = Field(min_length=1)
    strategy: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> RankRequest:
        if (self.instruction is None) == (self.messages is None):
            raise ValueError("give either instruction or messages")
        return self

    @property
    def prompt(self) -> Prompt:
        return self.instruction if self.messages is None else as_prompt([m.message() for m in self.messages])

    def candidate_list(self) -> list[CandidateIn]:
        return [c if isinstance(c, CandidateIn) else CandidateIn(text=c) for c in self.candidates]


class CompareRequest(_Body):
    """``POST /v1/compare``: is answer ``a`` better than answer ``b`` to ``instruction`` (or to the
    conversation ``messages``, whose latest turns the ranker keeps)?"""

    instruction: str | None = None
    messages: list[ChatMessage] | None = None
    a: str
    b: str

    @model_validator(mode="after")
    def _one_source(self) -> CompareRequest:
        if (self.instruction is None) == (self.messages is None):
            raise ValueError("give either instruction or messages")
        return self

    @property
    def source(self) -> str:
        """The text the ranker reads (a conversation flattened, §3.1)."""
        if self.messages is None:
            return self.instruction or ""
        return prompt_text(as_prompt([m.message() for m in self.messages]))


class FeedbackRequest(_Body):
    """``POST /v1/feedback``: on a logged completion, the preferred candidate (index or model name)
    or a rating of the returned answer in [0, 1]."""

    completion_id: str
    preferred: int | str | None = None
    rating: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_judgement(self) -> FeedbackRequest:
        if (self.preferred is None) == (self.rating is None):
            raise ValueError("give either preferred (a candidate index or model name) or rating")
        return self


# ---- responses ------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    id: str,
    model: str,
    text: str,
    *,
    finish_reason: str,
    usage: dict[str, int],
    created: int | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion``; ``details`` (the ``llmblend`` object) only when given."""
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage,
    }
    if details is not None:
        body["llmblend"] = details
    return body


def chunk_body(
    id: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk``: a delta, or (``delta`` None) a chunk with no choices that
    carries ``usage`` or llmblend ``details``."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    )
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    if details is not None:
        body["llmblend"] = details
    return body


def model_list_body(names: list[str], owned_by: dict[str, str], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": owned_by[n]} for n in names],
    }
