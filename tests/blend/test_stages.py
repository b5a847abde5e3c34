"""Each stage of a blend on its own: generate, rank, fuse, guard (scripted backends, the real longest
ranker and fusion guard, stub fusers and comparers)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.backends.config import Slot
from llmblend.blend.fuse import NO_FUSER_NOTE, Answer, fuse_stage
from llmblend.blend.generate import DEFAULT_ID, as_slots, generate_stage, with_input
from llmblend.blend.guard import guard_stage
from llmblend.blend.rank import rank_stage
from llmblend.errors import BackendTimeoutError
from llmblend.fuse.base import Fused, FuseItem
from llmblend.fuse.guard import FusionGuard
from llmblend.rank.baselines import LongestRanker
from llmblend.types import (
    BlendCandidate,
    BlendResult,
    Candidate,
    Example,
    Message,
    Prompt,
    Ranking,
    TokenUsage,
)


class ScriptedBackend(Backend):
    """Answers every prompt with one text (None: a timeout), after ``delay`` seconds."""

    def __init__(self, name: str, text: str | None, delay: float = 0.0) -> None:
        self.name = name
        self.text = text
        self.delay = delay
        self.prompts: list[Prompt] = []

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        self.prompts.append(prompt)
        await asyncio.sleep(self.delay)
        if self.text is None:
            raise BackendTimeoutError("no answer within 1 s")
        return Generation(self.text, self.name, prompt_tokens=4, completion_tokens=len(self.text.split()))


class LockCheckingLongest(LongestRanker):
    """The real longest-answer ranker, recording its calls, its thread and whether ``lock`` was held."""

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.lock = lock
        self.calls: list[tuple[list[str], str | None, int | None]] = []
        self.held: list[bool] = []
        self.threads: list[int] = []

    def rank(self, examples, *, strategy=None, top_k=None):
        self.calls += [(ex.id, strategy, top_k) for ex in examples]
        self.held.append(self.lock is not None and self.lock.locked())
        self.threads.append(threading.get_ident())
        return super().rank(examples, strategy=strategy, top_k=top_k)


class JoinFuser:
    """Joins the candidates; an instruction with "fail" in it gets an error, "blank" an empty text."""

    name = "join"

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.lock = lock
        self.calls: list[list[FuseItem]] = []
        self.held: list[bool] = []

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        self.calls.append(list(items))
        self.held.append(self.lock is not None and self.lock.locked())
        return [
            Fused("", self.name, error="out of memory")
            if "fail" in item.instruction
            else Fused("  ", self.name)
            if "blank" in item.instruction
            else Fused(" + ".join(item.candidates), self.name, prompt_tokens=9, completion_tokens=3)
            for item in items
        ]


class MarginComparer:
    """A guard ranker that gives one margin to every comparison and records what it was asked."""

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    def compare(self, instructions, a, b) -> np.ndarray:
        self.calls.append((list(instructions), list(a), list(b)))
        return np.full(len(a), self.margin)


def run(coroutine):
    return asyncio.run(coroutine)


def example(id: str, *texts: str, instruction: str = "q") -> Example:
    return Example(id, instruction, candidates=[Candidate(f"m{i}", t) for i, t in enumerate(texts)])


# ---- generate ------------------------------------------------------------------------------------


def slots(**texts: str | None) -> list[Slot]:
    return [Slot(ScriptedBackend(n, t, delay=0.01), GenerationParams(max_tokens=8)) for n, t in texts.items()]


def test_generate_keeps_failed_candidates_in_slot_order_and_times_the_stage() -> None:
    the_slots = slots(a="one two", b=None, c="one two three")
    generated = run(generate_stage(the_slots, "Count.", "slowly"))
    assert [c.model for c in generated.candidates] == ["a", "b", "c"]
    assert (
        generated.candidates[1].error == "timeout: no answer within 1 s"
        and generated.candidates[1].text == ""
    )
    assert generated.answered == [0, 2] and generated.error is None
    assert generated.seconds >= 0.01
    assert the_slots[0].backend.prompts == ["Count.\n\nslowly"]
    assert (generated.tokens.prompt_tokens, generated.tokens.completion_tokens) == (
        8,
        5,
    )  # a failed call counts none
    assert generated.usage["b"].failures == 1 and generated.usage["c"].completion_tokens == 3


def test_the_generated_example_has_only_the_answers_that_came_back() -> None:
    generated = run(generate_stage(slots(a="one two", b=None, c="one two three"), "Count."))
    ex = generated.example()
    assert ex.id == DEFAULT_ID and ex.instruction == "Count."
    assert [(c.model, c.text, c.decoding_method) for c in ex.candidates] == [
        ("a", "one two", "greedy"),
        ("c", "one two three", "greedy"),
    ]


def test_merge_puts_a_ranked_result_back_among_every_slot() -> None:
    generated = run(generate_stage(slots(a="one two", b=None, c="one two three"), "Count."))
    result = BlendResult(  # a result about generated.example(): candidate j is slot answered[j]
        "Count.",
        candidates=[
            BlendCandidate("a", "greedy", "one two", 2.0, 2),
            BlendCandidate("c", "greedy", "x", 3.0, 1),
        ],
        ranking=(1, 0),
        top_k=(1,),
        tokens={"fuse": TokenUsage(9, 3)},
    )
    merged = generated.merge(result)
    assert merged is result
    assert merged.ranking == (2, 0) and merged.top_k == (2,)  # slot indices; the failed slot is unranked
    assert [(c.rank, c.score) for c in merged.candidates] == [(2, 2.0), (None, None), (1, 3.0)]
    assert merged.candidates[1].error.startswith("timeout") and list(merged.tokens) == ["generate", "fuse"]
    assert merged.timings.generate_s == generated.seconds and merged.usage["b"].failures == 1
    assert generated.candidates[0].rank is None  # the stage's own candidates are left as they were


def test_every_model_failing_is_said_not_raised() -> None:
    generated = run(generate_stage(slots(a=None, b=None), "Count."))
    assert generated.answered == [] and generated.error.startswith("every model failed: a (greedy): timeout")
    assert generated.example().candidates == []


def test_generate_needs_a_slot_and_slots_come_from_backends() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        run(generate_stage([], "Count."))
    backend = ScriptedBackend("a", "x")
    (slot,) = as_slots([backend])
    assert slot.backend is backend and slot.params == GenerationParams()
    with pytest.raises(TypeError, match="Slot or a Backend"):
        as_slots(["gpt-4"])


def test_the_input_goes_after_the_instruction_or_the_last_turn() -> None:
    assert with_input("Do it.", "") == "Do it."
    conversation = [Message("user", "Hi."), Message("assistant", "Hello."), Message("user", "Sum:")]
    assert with_input(conversation, "1 2")[-1] == Message("user", "Sum:\n\n1 2")
    assert conversation[-1].content == "Sum:"


# ---- rank ----------------------------------------------------------------------------------------


def test_rank_stage_ranks_the_batch_in_one_call_in_a_worker_thread_under_the_lock() -> None:
    lock = threading.Lock()
    ranker = LockCheckingLongest(lock)
    examples = [example("e0", "a", "a b c", "a b"), example("e1", "x y", "x")]
    ranked = run(rank_stage(examples, ranker, strategy="full", top_k=2, lock=lock))
    assert [r.order for r in ranked.rankings] == [(1, 2, 0), (0, 1)]
    assert ranker.calls == [("e0", "full", 2), ("e1", "full", 2)] and ranker.held == [True]
    assert ranker.threads != [threading.get_ident()]
    assert ranked.n_forward == [0, 0] and ranked.notes == [[], []] and ranked.seconds > 0


def test_rank_stage_ranks_no_example_that_needs_no_model() -> None:
    ranker = LockCheckingLongest()
    ranked = run(rank_stage([example("none"), example("one", "alone")], ranker))
    assert ranker.calls == []
    assert not ranked.rankings[0].ok and ranked.rankings[0].error == "the example has no candidates"
    assert ranked.rankings[1] == Ranking((0.0,), (0,))


def test_rank_stage_reuses_usable_given_rankings_and_says_why_it_reranks_others() -> None:
    ranker = LockCheckingLongest()
    examples = [example("e0", "a", "a b"), example("e1", "a", "a b"), example("e2", "a", "a b")]
    given = [Ranking((0.0, 5.0), (1, 0), 7), Ranking((1.0,), (3, 0)), None]
    ranked = run(rank_stage(examples, ranker, given=given))
    assert [c[0] for c in ranker.calls] == ["e1", "e2"]
    assert ranked.rankings[0] == given[0] and ranked.n_forward[0] == 0  # reused: no forwards spent here
    assert ranked.notes[1] == [
        "the given ranking was not usable (its order [3, 0] is not a list of distinct indices below 2); "
        "ranked again"
    ]
    assert ranked.rankings[1].order == (1, 0) and ranked.notes[2] == []
    with pytest.raises(ValueError, match="2 rankings for 3 examples"):
        run(rank_stage(examples, ranker, given=given[:2]))


def test_a_ranker_that_raises_or_miscounts_fails_every_example_it_was_given() -> None:
    class Broken(LongestRanker):
        def rank(self, examples, *, strategy=None, top_k=None):
            raise RuntimeError("CUDA out of memory")

    class Short(LongestRanker):
        def rank(self, examples, *, strategy=None, top_k=None):
            return super().rank(examples, strategy=strategy, top_k=top_k)[:1]

    examples = [example("e0", "a", "a b"), example("e1", "a", "a b"), example("single", "x")]
    broken = run(rank_stage(examples, Broken()))
    assert [r.error for r in broken.rankings] == ["RuntimeError: CUDA out of memory"] * 2 + [None]
    short = run(rank_stage(examples, Short()))
    assert short.rankings[0].error == "RuntimeError: the ranker returned 1 rankings for 2 examples"
    assert short.rankings[2].ok


# ---- fuse ----------------------------------------------------------------------------------------


ITEMS = [FuseItem("question 0", ("best", "second")), FuseItem("please fail", ("top", "other"), "in")]


def test_without_a_fuser_each_item_returns_its_top_candidate_with_the_note() -> None:
    fusion = run(fuse_stage(ITEMS, None))
    assert fusion.answers == [
        Answer("best", "top", None, None, [NO_FUSER_NOTE]),
        Answer("top", "top", None, None, [NO_FUSER_NOTE]),
    ]
    assert fusion.seconds >= 0


def test_fuse_stage_fuses_in_one_call_under_the_lock_and_falls_back_to_the_top_candidate() -> None:
    lock = threading.Lock()
    fuser = JoinFuser(lock)
    items = [*ITEMS, FuseItem("blank", ("b1", "b2"))]
    fusion = run(fuse_stage(items, fuser, lock=lock))
    assert fuser.calls == [items] and fuser.held == [True]
    first, failed, blank = fusion.answers
    assert (first.text, first.returned, first.notes) == ("best + second", "fused", [])
    assert first.fused.completion_tokens == 3 and first.margin is None
    assert (failed.text, failed.returned, failed.fused.error) == ("top", "top", "out of memory")
    assert failed.notes == ["fusion failed (out of memory): returned the top candidate"]
    assert (blank.text, blank.notes) == (
        "b1",
        ["fusion failed (the fused answer is empty): returned the top candidate"],
    )
    assert fusion.seconds > 0


def test_a_fuser_that_raises_or_miscounts_fails_every_item_as_data() -> None:
    class Raising(JoinFuser):
        def fuse(self, items):
            raise MemoryError("no room")

    class Short(JoinFuser):
        def fuse(self, items):
            return super().fuse(items)[:1]

    raised = run(fuse_stage(ITEMS, Raising()))
    assert [a.fused.error for a in raised.answers] == ["MemoryError: no room"] * 2
    assert [a.text for a in raised.answers] == ["best", "top"] and {
        a.fused.fuser for a in raised.answers
    } == {"join"}
    short = run(fuse_stage(ITEMS, Short()))
    assert short.answers[0].fused.error == "RuntimeError: the fuser returned 1 answers for 2 items"


def test_a_fuser_with_afuse_is_awaited_on_the_event_loop() -> None:
    class AsyncFuser:
        name = "async"

        def __init__(self) -> None:
            self.threads: list[int] = []

        def fuse(self, items):
            raise AssertionError("the coroutine should be used")

        async def afuse(self, items):
            self.threads.append(threading.get_ident())
            return [Fused(f"fused {item.instruction}", self.name) for item in items]

    async def main() -> tuple[list, int]:
        fuser = AsyncFuser()
        fusion = await fuse_stage(ITEMS[:1], fuser)
        return [(a.text, a.returned) for a in fusion.answers], fuser.threads == [threading.get_ident()]

    assert run(main()) == ([("fused question 0", "fused")], True)


def test_no_items_no_fuser_call() -> None:
    fuser = JoinFuser()
    assert run(fuse_stage([], fuser)).answers == [] and fuser.calls == []


# ---- guard ---------------------------------------------------------------------------------------


def fused_answers() -> tuple[list[FuseItem], list[Answer]]:
    items = [FuseItem("question 0", ("best", "second"), "context"), FuseItem("please fail", ("top", "other"))]
    return items, run(fuse_stage(items, JoinFuser())).answers


def test_the_guard_returns_the_top_candidate_when_the_ranker_prefers_it() -> None:
    items, answers = fused_answers()
    comparer = MarginComparer(-1.5)
    guarded = run(guard_stage(items, answers, FusionGuard(comparer)))
    lost, failed = guarded.answers
    assert (lost.text, lost.returned, lost.margin) == ("best", "top", -1.5)
    assert lost.fused.text == "best + second"  # the fused answer is kept for the record
    assert lost.notes == ["guard: the ranker prefers the top candidate (margin -1.500)"]
    # failed fusion: no comparison, the top candidate, the guard's reason
    assert (failed.text, failed.returned, failed.margin) == ("top", "top", None)
    assert failed.notes == ["guard: fusion failed (out of memory): returned the top candidate"]
    assert comparer.calls == [
        (["question 0\n\ncontext"], ["best + second"], ["best"])
    ]  # one call, source with input
    assert guarded.error is None and guarded.seconds > 0


def test_the_guard_keeps_the_fused_answer_when_it_holds_up_and_runs_under_the_lock() -> None:
    lock = threading.Lock()
    held: list[bool] = []

    class Checking(MarginComparer):
        def compare(self, instructions, a, b):
            held.append(lock.locked())
            return super().compare(instructions, a, b)

    items, answers = fused_answers()
    guarded = run(guard_stage(items[:1], answers[:1], FusionGuard(Checking(0.25)), lock=lock))
    (kept,) = guarded.answers
    assert (kept.text, kept.returned, kept.margin, kept.notes) == ("best + second", "fused", 0.25, [])
    assert held == [True]


def test_without_a_guard_or_a_fused_answer_the_answers_stay_as_they_are() -> None:
    items, answers = fused_answers()
    assert run(guard_stage(items, answers, None)).answers == answers
    comparer = MarginComparer(-1.0)
    unfused = run(fuse_stage(items, None)).answers
    assert run(guard_stage(items, unfused, FusionGuard(comparer))).answers == unfused
    assert comparer.calls == []
    with pytest.raises(ValueError, match="1 answers for 2 items"):
        run(guard_stage(items, answers[:1], None))


def test_a_guard_that_raises_leaves_the_answers_unchecked_with_a_note() -> None:
    class Broken(MarginComparer):
        def compare(self, instructions, a, b):
            raise RuntimeError("tokenizer exploded")

    items, answers = fused_answers()
    guarded = run(guard_stage(items, answers, FusionGuard(Broken(0.0))))
    note = "the fusion guard failed (RuntimeError: tokenizer exploded); not checked"
    assert guarded.error == "RuntimeError: tokenizer exploded"
    assert [(a.text, a.returned) for a in guarded.answers] == [("best + second", "fused"), ("top", "top")]
    assert guarded.answers[0].notes == [note]
    assert guarded.answers[1].notes == [note, "fusion failed (out of memory): returned the top candidate"]
    assert answers[0].notes == []  # the fuse stage's answers are not changed in place
