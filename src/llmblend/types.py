"""The data model shared by every part of llmblend.

An :class:`Example` is one MixInstruct record (LLM-Blender §2, the MixInstruct dataset): an
instruction, an optional input, an optional reference output, and the candidates that N LLMs
gave for it. A :class:`PreferencePair` is one pairwise judgement, the unit PairRanker learns from
(§3.1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
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


_FLAT_TURN = re.compile(r"\n\n(?:user|assistant): ")


def is_flattened_conversation(text: str) -> bool:
    """Whether ``text`` is turns flattened by :func:`prompt_text`: it starts with a role label and
    has a later user or assistant turn (a single instruction or answer never does)."""
    return text.startswith(("system: ", "user: ", "assistant: ")) and _FLAT_TURN.search(text) is not None


def split_conversations(a: Sequence[Message], b: Sequence[Message]) -> tuple[Prompt, str, str]:
    """Two conversations as (shared source, rest of a, rest of b): the longest common prefix of turns
    is the source; what follows is the candidate — the last assistant turn's text when that is all
    that differs, else the flattened remaining turns (conversations whose histories differ)."""
    shared = 0
    while shared < min(len(a), len(b)) - 1 and a[shared] == b[shared]:
        shared += 1
    rest_a, rest_b = list(a[shared:]), list(b[shared:])
    if not rest_a or not rest_b:
        raise ValueError("two conversations to compare must each end with a turn the other lacks")

    def candidate(rest: list[Message]) -> str:
        return rest[0].content if len(rest) == 1 and rest[0].role == "assistant" else prompt_text(rest)

    return (as_prompt(list(a[:shared])) if shared else ""), candidate(rest_a), candidate(rest_b)


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
    ``terms``: for a pool-aware ranking, each term's share of the log-odds that the pick beats the
    pool's favourite (or, when the favourite is the pick, the runner-up): which terms decided.
    ``usage``: for a ranker that costs calls (an LLM judge), what this example spent: calls,
    tokens, seconds, cost, whether a budget cut the strategy short.
    """

    scores: tuple[float, ...]
    order: tuple[int, ...]
    n_forward: int = 0
    error: str | None = None
    terms: dict[str, float] | None = None
    usage: dict[str, Any] | None = None

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


# ---------------------------------------------------------------- blending (LLM-Blender §3–4)

#: Which answer a blend returned: the fused one, the top-ranked candidate (no fuser, fusion failed,
#: or the guard preferred it), the only candidate that came back, or none (every model failed).
BLEND_RETURNS: Final = ("fused", "top", "only candidate", "none")


@dataclass(slots=True)
class BlendCandidate:
    """One candidate of a blend: who wrote it, how, and where the ranker put it.

    ``score`` is the ranker's score (higher is better) and ``rank`` its 1-based place (1 = best);
    both are None for a candidate that was not ranked (its generation failed: ``error`` is set and
    ``text`` empty). Tokens and latency come from the backend call (0 when unknown).
    """

    model: str
    decoding_method: str
    text: str
    score: float | None = None
    rank: int | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class StageTimings:
    """Wall seconds of each stage of one blend; a stage that did not run took 0.

    In a batch (:meth:`~llmblend.blender.Blender.rank_and_fuse`) each example gets its share of
    the batch's stage time (batch seconds / examples).
    """

    generate_s: float = 0.0
    rank_s: float = 0.0
    fuse_s: float = 0.0
    guard_s: float = 0.0
    total_s: float = 0.0


@dataclass(slots=True)
class TokenUsage:
    """Prompt and completion tokens of one stage (as the backends or the fuser reported them)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class BackendCalls:
    """One backend's calls within one blend: calls, failures, tokens, and the slowest call's seconds."""

    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_latency_s: float = 0.0


@dataclass(slots=True)
class BlendResult:
    """What one blend did (LLM-Blender §3–4): candidates, ranking, fusion, guard, and its costs.

    * ``candidates``: every candidate asked for, failed ones included (with ``error``);
    * ``ranking``: indices into ``candidates``, best first (failed candidates are not ranked);
      ``top_k``: the first K of it, best first, the ones the fuser read; ``n_forward``: the
      ranker's forward passes;
    * ``fused``: the fuser's :class:`~llmblend.fuse.base.Fused` (its ``error`` set when fusion
      failed), or None when no fusion was attempted (no fuser, or a single candidate);
    * ``answer`` and ``returned``: the text given back and which one it is, one of
      :data:`BLEND_RETURNS`; ``guard_margin``: the guard's ``compare(fused, top)`` (> 0: the
      fused answer is better), None when the guard did not compare;
    * ``timings`` per stage; ``tokens`` per stage (``"generate"``, ``"fuse"``); ``usage`` per
      backend name;
    * ``error``: why there is no answer (every model failed, the ranking failed), else None;
      ``notes``: anything else a reader should know ("no fuser: returned the top-ranked candidate").
    """

    instruction: Prompt
    input: str = ""
    id: str | None = None
    candidates: list[BlendCandidate] = field(default_factory=list)
    ranking: tuple[int, ...] = ()
    top_k: tuple[int, ...] = ()
    n_forward: int = 0
    ranker: str | None = None
    fused: Any = None  # llmblend.fuse.base.Fused | None (types.py does not import the fuse package)
    answer: str = ""
    returned: str = "none"
    guard_margin: float | None = None
    timings: StageTimings = field(default_factory=StageTimings)
    tokens: dict[str, TokenUsage] = field(default_factory=dict)
    usage: dict[str, BackendCalls] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.returned not in BLEND_RETURNS:
            raise ValueError(f"returned {self.returned!r} is not one of {', '.join(BLEND_RETURNS)}")

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def fuser(self) -> str | None:
        """The name of the fuser that ran, or None."""
        return None if self.fused is None else self.fused.fuser

    @property
    def top(self) -> BlendCandidate | None:
        """The top-ranked candidate, or None when nothing was ranked."""
        return self.candidates[self.ranking[0]] if self.ranking else None

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict of everything above (``--json`` output, logs); floats rounded to 6 places."""
        fused = self.fused
        return {
            "id": self.id,
            "instruction": _prompt_json(self.instruction),
            "input": self.input,
            "answer": self.answer,
            "returned": self.returned,
            "error": self.error,
            "notes": list(self.notes),
            "candidates": [
                {
                    "model": c.model,
                    "decoding_method": c.decoding_method,
                    "text": c.text,
                    "score": _round(c.score),
                    "rank": c.rank,
                    "error": c.error,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "latency_s": _round(c.latency_s),
                }
                for c in self.candidates
            ],
            "ranker": self.ranker,
            "ranking": list(self.ranking),
            "top_k": list(self.top_k),
            "n_forward": self.n_forward,
            "fused": None
            if fused is None
            else {
                "text": fused.text,
                "fuser": fused.fuser,
                "error": fused.error,
                "prompt_tokens": fused.prompt_tokens,
                "completion_tokens": fused.completion_tokens,
                "latency_s": _round(fused.latency_s),
            },
            "guard_margin": _round(self.guard_margin),
            "timings": {name: _round(getattr(self.timings, name)) for name in StageTimings.__slots__},
            "tokens": {
                stage: {"prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens}
                for stage, t in self.tokens.items()
            },
            "usage": {
                name: {
                    "calls": u.calls,
                    "failures": u.failures,
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "max_latency_s": _round(u.max_latency_s),
                }
                for name, u in self.usage.items()
            },
        }


def _round(value: float | None) -> float | None:
    """Rounded to 6 places; None for None and for non-finite values (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def _prompt_json(prompt: Prompt) -> str | list[dict[str, str]]:
    if isinstance(prompt, str):
        return prompt
    return [{"role": m.role, "content": m.content} for m in prompt]
