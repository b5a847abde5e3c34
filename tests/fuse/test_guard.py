"""The fusion guard: the fused answer only when the ranker does not prefer the top candidate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from llmblend.fuse.base import Fused
from llmblend.fuse.guard import FusionGuard, GuardDecision
from llmblend.types import Message


class StubComparer:
    """Margins chosen by the test, keyed by the first answer; records every call."""

    def __init__(self, margins: dict[str, float]) -> None:
        self.margins = margins
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    def compare(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        self.calls.append((list(instructions), list(a), list(b)))
        return np.array([self.margins[text] for text in a])


def test_top_candidate_returned_when_fused_loses() -> None:
    ranker = StubComparer({"fused answer": -0.7})
    decision = FusionGuard(ranker).check("what?", Fused("fused answer", "f"), "top answer")
    assert decision == GuardDecision("top", "top answer", -0.7, decision.reason)
    assert "prefers the top candidate" in decision.reason
    assert ranker.calls == [(["what?"], ["fused answer"], ["top answer"])]  # compare(fused, top)


def test_fused_returned_when_it_wins_or_ties() -> None:
    ranker = StubComparer({"better": 1.25, "same": 0.0})
    guard = FusionGuard(ranker)
    won = guard.check("q", Fused("better", "f"), "top")
    assert (won.returned, won.text, won.margin) == ("fused", "better", 1.25)
    tie = guard.check("q", "same", "top")  # a plain string works too
    assert (tie.returned, tie.text, tie.margin) == ("fused", "same", 0.0)


def test_threshold_moves_the_bar() -> None:
    decision = FusionGuard(StubComparer({"f": 0.2}), threshold=0.5).check("q", "f", "top")
    assert (decision.returned, decision.margin) == ("top", 0.2)


@pytest.mark.parametrize(
    ("fused", "why"),
    [
        (Fused("", "f", error="timeout: no answer"), "fusion failed (timeout: no answer)"),
        (Fused("   \n", "f"), "empty"),
        (None, "no fused answer"),
    ],
)
def test_top_returned_without_asking_when_fusion_failed(fused, why) -> None:
    ranker = StubComparer({})
    decision = FusionGuard(ranker).check("q", fused, "top answer")
    assert (decision.returned, decision.text, decision.margin) == ("top", "top answer", None)
    assert why in decision.reason
    assert ranker.calls == []


def test_check_many_is_one_compare_call_and_keeps_order() -> None:
    ranker = StubComparer({"win": 0.3, "lose": -0.1})
    conversation = [Message("user", "hi"), Message("assistant", "hello"), Message("user", "more")]
    decisions = FusionGuard(ranker).check_many(
        ["q1", "q2", conversation],
        [Fused("win", "f"), Fused("", "f", error="boom"), Fused("lose", "f")],
        ["t1", "t2", "t3"],
    )
    assert [(d.returned, d.text, d.margin) for d in decisions] == [
        ("fused", "win", 0.3),
        ("top", "t2", None),
        ("top", "t3", -0.1),
    ]
    assert len(ranker.calls) == 1
    instructions, a, b = ranker.calls[0]
    assert a == ["win", "lose"] and b == ["t1", "t3"]
    assert instructions[1] == "user: hi\n\nassistant: hello\n\nuser: more"


def test_non_finite_margin_keeps_the_top_candidate() -> None:
    decision = FusionGuard(StubComparer({"f": float("nan")})).check("q", "f", "top")
    assert (decision.returned, decision.margin) == ("top", None)


def test_guard_needs_a_ranker_that_compares_and_equal_lengths() -> None:
    with pytest.raises(TypeError, match="compare"):
        FusionGuard(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal lengths"):
        FusionGuard(StubComparer({})).check_many(["q"], [], ["t"])
