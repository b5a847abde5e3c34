"""The data model shared by every part of llmblend.

An :class:`Example` is one MixInstruct record (LLM-Blender §2, the MixInstruct dataset): an
instruction, an optional input, an optional reference output, and the candidates that N LLMs
gave for it. A :class:`PreferencePair` is one pairwise judgement, the unit PairRanker learns from
(§3.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

ROLES: Final = ("system", "user", "assistant")

#: The four verdicts MixInstruct's ``cmp_results`` uses for a "modelA,modelB" key.
CMP_VERDICTS: Final = ("A is better", "B is better", "Same good", "Same bad")


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation; ``role`` is one of :data:`ROLES`."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role {self.role!r} is not one of {', '.join(ROLES)}")


#: An instruction is plain text, or a multi-turn conversation ending with a user turn.
Prompt: TypeAlias = str | list[Message]


def as_prompt(messages: list[Message]) -> Prompt:
    """A single user turn as plain text; anything longer stays a conversation."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return list(messages)


def prompt_text(prompt: Prompt) -> str:
    """Flatten a prompt to text: a string as is, a conversation as "role: content" lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.role}: {m.content}" for m in prompt)


@dataclass(slots=True)
class Candidate:
    """One LLM's answer to an example, with any scores it has (metric name → value)."""

    model: str
    text: str
    scores: dict[str, float] = field(default_factory=dict)
    decoding_method: str = "unknown"


@dataclass(slots=True)
class Example:
    """One instruction with its candidates, in MixInstruct's shape.

    ``cmp_results`` maps "modelA,modelB" to one of :data:`CMP_VERDICTS`; on disk MixInstruct
    stores it as a JSON *string*, in memory it is a dict. ``extra`` keeps any other top-level
    fields of a record so that reading and writing a file loses nothing.
    """

    id: str
    instruction: Prompt
    input: str = ""
    output: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    cmp_results: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The text a ranker reads as the source: instruction, then input when there is one."""
        return "\n\n".join(part for part in (prompt_text(self.instruction), self.input) if part)

    @property
    def models(self) -> list[str]:
        return [c.model for c in self.candidates]

    def candidate(self, model: str) -> Candidate:
        """The candidate of ``model``; KeyError naming the models present if there is none."""
        for c in self.candidates:
            if c.model == model:
                return c
        raise KeyError(f"example {self.id!r} has no candidate from {model!r}; has {self.models}")


@dataclass(slots=True)
class PreferencePair:
    """A prompt with a preferred (``chosen``) and a dispreferred (``rejected``) answer.

    ``source`` names where the judgement comes from (e.g. ``"alpaca_eval"``, ``"hh_rlhf"``);
    the optional fields keep provenance: the example the pair was drawn from (several pairs may
    share one), the two models, and the oracle margin (chosen score − rejected score) when the
    label came from scores (LLM-Blender §3.1).
    """

    prompt: Prompt
    chosen: str
    rejected: str
    source: str
    example_id: str | None = None
    chosen_model: str | None = None
    rejected_model: str | None = None
    margin: float | None = None


@dataclass(frozen=True, slots=True)
class Ranking:
    """One example's ranking of its candidates (LLM-Blender §3.2).

    ``scores[i]`` belongs to candidate ``i`` (higher is better); ``order`` lists candidate indices
    best first. ``n_forward`` counts model forward passes spent on the example (one per encoded
    sequence: a pair for PairRanker, a candidate for a pointwise ranker, 0 for heuristics).
    ``error`` is set, with empty scores and order, when the example could not be ranked.
    """

    scores: tuple[float, ...]
    order: tuple[int, ...]
    n_forward: int = 0
    error: str | None = None

    @classmethod
    def from_scores(cls, scores: Any, n_forward: int = 0) -> Ranking:
        """Rank by descending score; equal scores keep candidate order (a stable sort)."""
        values = tuple(float(s) for s in scores)
        order = tuple(sorted(range(len(values)), key=lambda i: -values[i]))
        return cls(scores=values, order=order, n_forward=n_forward)

    @classmethod
    def failed(cls, error: str, n_forward: int = 0) -> Ranking:
        """A ranking that could not be made; ``error`` says why."""
        return cls(scores=(), order=(), n_forward=n_forward, error=error)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def best(self) -> int | None:
        """Index of the top candidate, or None for a failed or empty ranking."""
        return self.order[0] if self.order else None

    def top(self, k: int) -> tuple[int, ...]:
        """The indices of the ``k`` best candidates, best first."""
        return self.order[:k]
