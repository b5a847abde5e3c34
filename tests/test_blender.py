"""Blender: generate → rank → fuse → guard, with scripted backends, a cheap real ranker and stub fusers."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.backends.config import Slot
from llmblend.blender import NO_FUSER_NOTE, Blender, default_fuser
from llmblend.errors import BackendTimeoutError
from llmblend.fuse.base import Fused, FuseItem
from llmblend.fuse.guard import FusionGuard
from llmblend.rank.baselines import LongestRanker
from llmblend.types import Candidate, Example, Prompt, Ranking


class ScriptedBackend(Backend):
    """Answers every prompt with one text (or fails with a timeout), logging the call."""

    def __init__(self, name: str, text: str | None, events: list[str], delay: float = 0.0) -> None:
        self.name = name
        self.text = text
        self.events = events
        self.delay = delay
        self.prompts: list[Prompt] = []
        self.params: list[GenerationParams] = []

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        self.prompts.append(prompt)
        self.params.append(params)
        await asyncio.sleep(self.delay)
        self.events.append(f"generate:{self.name}")
        if self.text is None:
            raise BackendTimeoutError("no answer within 1 s")
        return Generation(self.text, self.name, prompt_tokens=4, completion_tokens=len(self.text.split()))


class LoggingLongest(LongestRanker):
    """The real longest-answer ranker, logging each call and what it was given."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.seen: list[list[str]] = []
        self.options: list[tuple[str | None, int | None]] = []

    def rank(self, examples, *, strategy=None, top_k=None):
        self.events.append("rank")
        self.seen += [[c.text for c in ex.candidates] for ex in examples]
        self.options.append((strategy, top_k))
        return super().rank(examples, strategy=strategy, top_k=top_k)


class StubFuser:
    """Joins the candidates it gets; ``fail`` makes every answer an error."""

    def __init__(self, events: list[str], fail: bool = False) -> None:
        self.name = "stub-fuser"
        self.events = events
        self.fail = fail
        self.items: list[FuseItem] = []

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        self.events.append("fuse")
        self.items += items
        if self.fail:
            return [Fused("", self.name, error="the fuser ran out of memory") for _ in items]
        return [
            Fused(" + ".join(item.candidates), self.name, prompt_tokens=20, completion_tokens=7)
            for item in items
        ]


class StubComparer:
    """A guard ranker whose margin the test chooses."""

    def __init__(self, margin: float, events: list[str]) -> None:
        self.margin = margin
        self.events = events
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    def compare(self, instructions, a, b) -> np.ndarray:
        self.events.append("guard")
        self.calls.append((list(instructions), list(a), list(b)))
        return np.full(len(a), self.margin)


TEXTS = {"a": "one two", "b": "one two three four", "c": None, "d": "one two three", "e": "x"}


def make_blender(events: list[str], texts=TEXTS, margin: float | None = 0.5, **options) -> Blender:
    backends = [ScriptedBackend(name, text, events, delay=0.01) for name, text in texts.items()]
    slots = [Slot(b, GenerationParams(max_tokens=32)) for b in backends]
    guard = FusionGuard(StubComparer(margin, events)) if margin is not None else False
    return Blender(slots, LoggingLongest(events), StubFuser(events), guard=guard, **options)


def test_stages_run_in_order_and_the_fuser_gets_the_top_k_best_first() -> None:
    events: list[str] = []
    blender = make_blender(events, top_k=3)
    result = blender.blend("Count to four.", "slowly", id="q1")
    blender.close()

    assert sorted(events[:5]) == [f"generate:{name}" for name in "abcde"]
    assert events[5:] == ["rank", "fuse", "guard"]
    assert blender.ranker.seen == [["one two", "one two three four", "one two three", "x"]]  # c failed
    assert blender.ranker.options == [(None, 3)]  # no strategy given: the ranker applies its own
    (item,) = blender.fuser.items
    assert item == FuseItem("Count to four.", ("one two three four", "one two three", "one two"), "slowly")
    assert blender.slots[0].backend.prompts == ["Count to four.\n\nslowly"]

    assert [c.model for c in result.candidates] == ["a", "b", "c", "d", "e"]
    assert result.ranking == (1, 3, 0, 4) and result.top_k == (1, 3, 0)
    assert [c.rank for c in result.candidates] == [3, 1, None, 2, 4]
    assert [c.score for c in result.candidates] == [2.0, 4.0, None, 3.0, 1.0]
    failed = result.candidates[2]
    assert failed.error == "timeout: no answer within 1 s" and failed.text == "" and not failed.ok
    assert result.returned == "fused" and result.answer == "one two three four + one two three + one two"
    assert result.guard_margin == 0.5 and result.fused.fuser == "stub-fuser" and result.ok
    assert result.id == "q1" and result.ranker == "longest" and result.error is None


def test_timings_tokens_and_usage_are_reported() -> None:
    events: list[str] = []
    blender = make_blender(events)
    result = blender.blend("Count.")
    blender.close()
    t = result.timings
    assert t.generate_s >= 0.01 and t.rank_s > 0 and t.fuse_s > 0 and t.guard_s > 0
    assert t.total_s >= t.generate_s + t.rank_s + t.fuse_s + t.guard_s
    assert result.tokens["generate"].prompt_tokens == 16 and result.tokens["generate"].completion_tokens == 10
    assert (result.tokens["fuse"].prompt_tokens, result.tokens["fuse"].completion_tokens) == (20, 7)
    assert result.usage["c"].failures == 1 and result.usage["b"].completion_tokens == 4
    assert all(u.calls == 1 for u in result.usage.values())
    assert blender.usage is not None and blender.usage.failures == 1
    record = json.loads(json.dumps(result.to_record()))
    assert record["returned"] == "fused" and record["candidates"][2]["error"].startswith("timeout")
    assert record["ranking"] == [1, 3, 0, 4] and record["fused"]["fuser"] == "stub-fuser"
    assert set(record["timings"]) == {"generate_s", "rank_s", "fuse_s", "guard_s", "total_s"}


def test_guard_returns_the_top_candidate_when_the_fused_answer_loses() -> None:
    events: list[str] = []
    blender = make_blender(events, margin=-1.5)
    result = blender.blend("Count.")
    blender.close()
    assert result.returned == "top" and result.answer == "one two three four" and result.guard_margin == -1.5
    assert result.fused.text.startswith("one two three four + ")  # the fused answer is still there
    assert any(note.startswith("guard: the ranker prefers the top candidate") for note in result.notes)
    (call,) = blender.guard.ranker.calls
    assert call == (["Count."], [result.fused.text], ["one two three four"])


def test_failed_fusion_returns_the_top_candidate() -> None:
    events: list[str] = []
    blender = make_blender(events, margin=None)
    blender.fuser.fail = True
    result = blender.blend("Count.")
    blender.close()
    assert result.returned == "top" and result.answer == "one two three four" and result.guard_margin is None
    assert result.fused.error == "the fuser ran out of memory"
    assert "fusion failed (the fuser ran out of memory): returned the top candidate" in result.notes


def test_every_model_failing_is_an_error_result_not_an_exception() -> None:
    events: list[str] = []
    blender = make_blender(events, texts={"a": None, "b": None})
    result = blender.blend("Count.")
    blender.close()
    assert not result.ok and result.error.startswith("every model failed: a (greedy): timeout")
    assert result.returned == "none" and result.answer == "" and result.fused is None
    assert [c.error is not None for c in result.candidates] == [True, True]
    assert "rank" not in events and "fuse" not in events
    assert json.dumps(result.to_record())


def test_one_answer_is_returned_as_the_only_candidate() -> None:
    events: list[str] = []
    blender = make_blender(events, texts={"a": None, "b": "the only answer"})
    result = blender.blend("Count.")
    blender.close()
    assert (result.returned, result.answer) == ("only candidate", "the only answer")
    assert result.ranking == (1,) and result.candidates[1].rank == 1 and result.fused is None
    assert events.count("rank") == 0 and "fuse" not in events


def test_without_a_fuser_the_top_candidate_is_returned_and_said() -> None:
    events: list[str] = []
    backends = [ScriptedBackend(n, t, events) for n, t in TEXTS.items()]
    blender = Blender(backends, LongestRanker())  # bare backends: greedy default settings
    assert blender.guard is None and all(s.params == GenerationParams() for s in blender.slots)
    result = blender.blend("Count.")
    blender.close()
    assert (result.returned, result.answer, result.fused) == ("top", "one two three four", None)
    assert NO_FUSER_NOTE in result.notes


def test_guard_true_needs_a_ranker_that_can_compare() -> None:
    with pytest.raises(TypeError, match="compare"):
        Blender([], LongestRanker(), StubFuser([]))
    assert Blender([], LongestRanker(), StubFuser([]), guard=False).guard is None


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        Blender([], LongestRanker(), top_k=0)
    with pytest.raises(ValueError, match="unknown ranking strategy 'quick'"):
        Blender([], LongestRanker(), strategy="quick")
    with pytest.raises(TypeError, match="Slot or a Backend"):
        Blender(["gpt-4"], LongestRanker())


def test_blend_inside_a_running_loop_points_to_ablend() -> None:
    events: list[str] = []
    blender = make_blender(events)

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="ablend"):
            blender.blend("Count.")
        result = await blender.ablend("Count.")
        assert result.returned == "fused"

    asyncio.run(inside())


def test_rank_and_fuse_reuses_given_rankings_and_reranks_unusable_ones() -> None:
    events: list[str] = []
    ranker, fuser = LoggingLongest(events), StubFuser(events)
    blender = Blender([], ranker, fuser, top_k=2, guard=FusionGuard(StubComparer(0.1, events)))
    examples = [
        Example(
            f"ex{i}", f"question {i}", candidates=[Candidate(m, t) for m, t in zip("pqr", texts, strict=True)]
        )
        for i, texts in enumerate([("a", "a b c", "a b"), ("x y", "x", "x y z w")])
    ]
    given = [Ranking((0.0, 0.0, 9.0), (0, 2, 1)), Ranking((1.0,), (7, 0), 3)]  # the second is out of range
    results = blender.rank_and_fuse(examples, rankings=given)
    assert ranker.seen == [["x y", "x", "x y z w"]]  # only the second example was ranked
    assert results[0].top_k == (0, 2) and results[0].candidates[2].score == 9.0
    assert results[1].top_k == (2, 0) and results[1].n_forward == 0
    assert "the given ranking was not usable" in results[1].notes[0]
    assert [item.candidates for item in fuser.items] == [("a", "a b"), ("x y z w", "x y")]
    assert events == ["rank", "fuse", "guard"]  # one call per stage for the whole batch
    assert all(r.returned == "fused" and r.timings.total_s > 0 for r in results)
    assert "generate" not in results[0].tokens
    blender.close()


def test_a_ranker_that_raises_gives_error_results() -> None:
    class Broken(LongestRanker):
        def rank(self, examples, *, strategy=None, top_k=None):
            raise RuntimeError("CUDA out of memory")

    blender = Blender([], Broken(), StubFuser([]), guard=False)
    example = Example("e", "q", candidates=[Candidate("a", "x"), Candidate("b", "y y")])
    (result,) = blender.rank_and_fuse([example])
    blender.close()
    assert result.error == "ranking failed: RuntimeError: CUDA out of memory" and result.returned == "none"


def test_default_fuser_is_none_when_the_shipped_fuser_cannot_be_imported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "llmblend.fuse.llama_fuser", None)  # import raises ImportError
    assert default_fuser() is None
