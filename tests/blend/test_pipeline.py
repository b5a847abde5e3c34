"""RankAndFuse on its own, and stages composed without a Blender (best-of-n from one backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.backends.config import Slot
from llmblend.blend import NO_FUSER_NOTE, RankAndFuse, generate_stage
from llmblend.errors import BackendTimeoutError
from llmblend.fuse.base import Fused, FuseItem
from llmblend.fuse.guard import FusionGuard
from llmblend.rank.baselines import LongestRanker
from llmblend.types import Candidate, Example, Message, Prompt


class SamplingBackend(Backend):
    """One model sampled several times: the n-th call answers with n words (the 2nd one times out)."""

    name = "sampler"

    def __init__(self) -> None:
        self.params: list[GenerationParams] = []

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        self.params.append(params)
        n = len(self.params)
        if n == 2:
            raise BackendTimeoutError("no answer within 1 s")
        return Generation(" ".join(["word"] * n), self.name, completion_tokens=n)


class JoinFuser:
    name = "join"

    def __init__(self) -> None:
        self.items: list[FuseItem] = []

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        self.items += items
        return [
            Fused(" + ".join(item.candidates), self.name, prompt_tokens=5, completion_tokens=2)
            for item in items
        ]


class MarginComparer:
    def __init__(self, margin: float) -> None:
        self.margin = margin

    def compare(self, instructions, a, b) -> np.ndarray:
        return np.full(len(a), self.margin)


def examples() -> list[Example]:
    return [
        Example(
            "e0",
            "question 0",
            candidates=[Candidate("p", "a"), Candidate("q", "a b c"), Candidate("r", "a b")],
        ),
        Example("e1", "question 1", candidates=[Candidate("p", "alone")]),
        Example("e2", "question 2", candidates=[]),
    ]


def test_rank_and_fuse_on_its_own() -> None:
    fuser = JoinFuser()
    with RankAndFuse(LongestRanker(), fuser, top_k=2, guard=FusionGuard(MarginComparer(0.5))) as pipeline:
        fused, single, empty = pipeline.rank_and_fuse(examples())
    assert (fused.returned, fused.answer, fused.guard_margin) == ("fused", "a b c + a b", 0.5)
    assert (
        fused.ranking == (1, 2, 0) and fused.top_k == (1, 2) and fused.tokens["fuse"].completion_tokens == 2
    )
    assert [c.rank for c in fused.candidates] == [3, 1, 2] and fused.ranker == "longest"
    assert (single.returned, single.answer, single.fused) == ("only candidate", "alone", None)
    assert empty.error == "ranking failed: the example has no candidates" and empty.returned == "none"
    assert [item.instruction for item in fuser.items] == ["question 0"]
    assert all(r.timings.total_s > 0 and r.timings.rank_s > 0 for r in (fused, single, empty))


def test_rank_and_fuse_options_and_guard_resolution() -> None:
    assert RankAndFuse(LongestRanker()).guard is None  # no fuser, nothing to guard
    with pytest.raises(TypeError, match="compare"):
        RankAndFuse(LongestRanker(), JoinFuser())
    with pytest.raises(ValueError, match="top_k"):
        RankAndFuse(LongestRanker(), top_k=0)
    with pytest.raises(ValueError, match="unknown ranking strategy 'quick'"):
        RankAndFuse(LongestRanker(), strategy="quick")
    assert "guard=False" in repr(RankAndFuse(LongestRanker(), JoinFuser(), guard=False))
    # no strategy by default (each ranker applies its own); a pool's strategies are strategies too
    assert RankAndFuse(LongestRanker()).strategy is None
    assert RankAndFuse(LongestRanker(), strategy="pool-seeded").strategy == "pool-seeded"


def test_the_synchronous_method_inside_a_running_loop_points_to_the_coroutine() -> None:
    pipeline = RankAndFuse(LongestRanker())

    async def inside() -> None:
        with pytest.raises(RuntimeError, match=r"RankAndFuse method .* \(arank_and_fuse\)"):
            pipeline.rank_and_fuse(examples())
        (result, *_) = await pipeline.arank_and_fuse(examples())
        assert result.returned == "top" and NO_FUSER_NOTE in result.notes

    asyncio.run(inside())
    pipeline.close()


def test_best_of_n_from_one_backend_composes_the_generate_and_rank_stages() -> None:
    backend = SamplingBackend()
    slots = [Slot(backend, GenerationParams(temperature=1.0, seed=seed)) for seed in range(4)]
    conversation = [Message("user", "Say words.")]

    async def best_of_n():
        generated = await generate_stage(slots, conversation)
        (result,) = await RankAndFuse(LongestRanker(), guard=False).arank_and_fuse(
            [generated.example("chat-1")]
        )
        return generated.merge(result)

    result = asyncio.run(best_of_n())
    assert [p.seed for p in backend.params] == [0, 1, 2, 3]
    assert [c.text for c in result.candidates] == ["word", "", "word word word", "word word word word"]
    assert (
        result.ranking == (3, 2, 0) and result.candidates[1].rank is None
    )  # the failed sample is not ranked
    assert (result.returned, result.answer) == ("top", "word word word word")
    assert result.instruction == conversation and result.usage["sampler"].failures == 1
    assert result.timings.generate_s > 0 and result.tokens["generate"].completion_tokens == 8
