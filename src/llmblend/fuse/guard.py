"""The fusion guard: keep the fused answer only when the ranker does not prefer the top candidate.

A fuser can make an answer worse: a small GenFuser (LLM-Blender §4) may drop a detail of the best
candidate or copy a mistake from a weaker one. The guard asks the ranker one more pairwise question,
``compare(fused, top)`` (the position-debiased PairRanker margin of §3.2, > 0 when the fused answer
is better) and returns the top-ranked candidate instead when the fused answer loses, or when there is
no fused answer at all (fusion failed, or gave an empty text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from llmblend.fuse.base import Fused
from llmblend.types import Prompt, prompt_text


class PairComparer(Protocol):
    """What the guard needs of a ranker: :meth:`llmblend.rank.pairranker.PairRanker.compare`."""

    def compare(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Margins of ``a[i]`` over ``b[i]`` for ``instructions[i]``: float [N], > 0 when ``a`` is better."""
        ...


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """Which answer the guard returned (``"fused"`` or ``"top"``), its text, and why.

    ``margin`` is ``compare(fused, top)`` (> 0: the fused answer is better); None when no comparison
    was made (no usable fused answer, or the ranker gave a non-finite margin).
    """

    returned: Literal["fused", "top"]
    text: str
    margin: float | None
    reason: str


def _fused_text(fused: Fused | str | None) -> tuple[str | None, str | None]:
    """The usable fused text, or None and why there is none."""
    if fused is None:
        return None, "no fused answer"
    if isinstance(fused, Fused):
        if fused.error is not None:
            return None, f"fusion failed ({fused.error})"
        fused = fused.text
    if not fused.strip():
        return None, "the fused answer is empty"
    return fused, None


class FusionGuard:
    """Return the fused answer unless the ranker prefers the top-ranked candidate to it.

    ``ranker`` is a :class:`~llmblend.rank.pairranker.PairRanker` or anything with ``compare``
    (:class:`PairComparer`). The fused answer is kept when ``margin >= threshold`` (default 0: a tie
    keeps it).
    """

    def __init__(self, ranker: PairComparer, *, threshold: float = 0.0) -> None:
        if not callable(getattr(ranker, "compare", None)):
            raise TypeError(
                f"the fusion guard needs a ranker with compare(instructions, a, b), e.g. a PairRanker; "
                f"{type(ranker).__name__} has none"
            )
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        self.ranker = ranker
        self.threshold = float(threshold)

    def check(self, instruction_text: Prompt, fused: Fused | str | None, top_candidate: str) -> GuardDecision:
        """The decision for one answer; see :meth:`check_many`."""
        return self.check_many([instruction_text], [fused], [top_candidate])[0]

    def check_many(
        self,
        instructions: Sequence[Prompt],
        fused: Sequence[Fused | str | None],
        top_candidates: Sequence[str],
    ) -> list[GuardDecision]:
        """One decision per item, in order; all needed comparisons in one ``compare`` call.

        ``instructions[i]`` is the source the ranker reads (text, or a conversation, flattened with
        :func:`~llmblend.types.prompt_text`); ``fused[i]`` a :class:`Fused`, a text or None;
        ``top_candidates[i]`` the text of the top-ranked candidate.
        """
        if not len(instructions) == len(fused) == len(top_candidates):
            raise ValueError(
                f"check_many needs equal lengths, got {len(instructions)} instructions, {len(fused)} fused "
                f"answers and {len(top_candidates)} top candidates"
            )
        decisions: list[GuardDecision | None] = [None] * len(fused)
        asked: list[tuple[int, str]] = []
        for i, (answer, top) in enumerate(zip(fused, top_candidates, strict=True)):
            text, why_not = _fused_text(answer)
            if text is None:
                decisions[i] = GuardDecision("top", top, None, f"{why_not}: returned the top candidate")
            else:
                asked.append((i, text))
        if asked:
            margins = np.asarray(
                self.ranker.compare(
                    [prompt_text(instructions[i]) for i, _ in asked],
                    [text for _, text in asked],
                    [top_candidates[i] for i, _ in asked],
                ),
                dtype=np.float64,
            ).reshape(-1)
            if len(margins) != len(asked):
                raise RuntimeError(f"the ranker gave {len(margins)} margins for {len(asked)} comparisons")
            for (i, text), margin in zip(asked, margins, strict=True):
                decisions[i] = self._decide(text, float(margin), top_candidates[i])
        return [d for d in decisions if d is not None]

    def _decide(self, fused: str, margin: float, top: str) -> GuardDecision:
        if not math.isfinite(margin):
            return GuardDecision("top", top, None, f"the ranker gave a non-finite margin ({margin})")
        if margin < self.threshold:
            return GuardDecision(
                "top", top, margin, f"the ranker prefers the top candidate (margin {margin:.3f})"
            )
        return GuardDecision("fused", fused, margin, f"the fused answer holds up (margin {margin:.3f})")
