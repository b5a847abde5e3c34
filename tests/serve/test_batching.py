"""Cross-request batching: concurrent rank calls share one ranker call and get the scores they would
get alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from llmblend.rank.pairranker import PairRanker
from llmblend.serve.batching import RankBatcher
from llmblend.types import Candidate, Example


def _examples(n: int) -> list[Example]:
    return [
        Example(
            f"q{k}",
            f"Question {k}: name a metal.",
            candidates=[Candidate(f"m{i}", f"Answer {i} to {k}: " + "tin " * (i + k)) for i in range(4)],
        )
        for k in range(n)
    ]


@pytest.fixture(scope="module")
def ranker(tiny_ranker_dir) -> PairRanker:
    return PairRanker.from_pretrained(tiny_ranker_dir, runtime="fp32")


def test_concurrent_examples_are_ranked_in_one_call_with_the_scores_they_get_alone(ranker) -> None:
    examples = _examples(5)
    alone = [ranker.rank([ex], strategy="full")[0] for ex in examples]

    async def together() -> tuple[list, int]:
        batcher = RankBatcher(ranker, window_s=0.05, max_examples=16)
        results = await asyncio.gather(*(batcher.rank(ex, strategy="full", top_k=None) for ex in examples))
        return results, batcher.calls

    results, calls = asyncio.run(together())
    assert calls == 1
    for (ranking, n_forward), single in zip(results, alone, strict=True):
        np.testing.assert_allclose(ranking.scores, single.scores, atol=1e-5)
        assert ranking.order == single.order and n_forward == single.n_forward


def test_a_full_batch_goes_at_once_and_strategies_are_not_mixed(ranker) -> None:
    examples = _examples(4)

    async def run() -> int:
        batcher = RankBatcher(ranker, window_s=5.0, max_examples=2)  # the window never runs out here
        jobs = [batcher.rank(ex, strategy="full", top_k=None) for ex in examples[:2]]
        jobs += [batcher.rank(ex, strategy="bubble", top_k=None) for ex in examples[2:]]
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=4.0)
        return batcher.calls

    assert asyncio.run(run()) == 2


def test_without_a_window_one_request_is_ranked_at_once(ranker) -> None:
    async def run() -> int:
        batcher = RankBatcher(ranker, window_s=0.0, max_examples=1)
        await batcher.rank(_examples(1)[0], strategy=None, top_k=None)
        return batcher.calls

    assert asyncio.run(run()) == 1


def test_batching_is_left_off_for_a_runtime_that_scores_one_pair_per_forward(ranker) -> None:
    from types import SimpleNamespace

    from llmblend.serve.gateway import batches_forwards

    assert batches_forwards(ranker)  # fp32 batches its forwards
    assert not batches_forwards(SimpleNamespace(runtime="onnx-int8"))
