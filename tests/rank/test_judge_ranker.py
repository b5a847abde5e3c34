"""An LLM judge as a ranker: against the scripted OpenAI-compatible server (position bias cancels,
logprob margins, budgets) and judges that read the answers (the better one wins whatever its slot)."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
import yaml

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.errors import LlmblendError
from llmblend.rank.base import PairQuery
from llmblend.rank.budget import Budget, Prices
from llmblend.rank.judge_ranker import JudgeRanker
from llmblend.rank.registry import load_ranker
from llmblend.serve.app import ServeSettings
from llmblend.types import Candidate, Example, Prompt, prompt_text
from serve_helpers import scripted_config, start_gateway

EXAMPLE = Example(
    "q",
    "Which metal is used for wires?",
    candidates=[
        Candidate("m0", "Gold."),
        Candidate("m1", "Copper is used for wires."),
        Candidate("m2", "Lead."),
    ],
)


def _models_yaml(tmp_path, server, judge: dict | None = None) -> str:
    path = tmp_path / "judge.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": server.base_url, "max_retries": 0}
    path.write_text(yaml.safe_dump({"backends": [backend], **({"judge": judge} if judge else {})}))
    return str(path)


def test_a_judge_that_always_prefers_slot_a_gives_only_ties(scripted_server, tmp_path) -> None:
    scripted_server.script_for("judge", [("say", "Assistant A is better. [[A]]")] * 6)
    ranker = load_ranker(f"judge:{_models_yaml(tmp_path, scripted_server)}")
    assert isinstance(ranker, JudgeRanker)
    (ranking,) = ranker.rank([EXAMPLE], strategy="full")
    assert np.allclose(ranking.scores, 0.0)  # every pair asked in both orders: the bias cancels
    sent = scripted_server.requests_for("judge")
    assert len(sent) == 6  # N(N-1) ordered pairs
    prompts = [m["content"] for r in sent for m in r.body["messages"]]
    assert not any("m0" in p or "m1" in p for p in prompts)  # model names never reach the judge


class ReadingJudge(Backend):
    """A judge that prefers the answer that mentions copper, in whichever slot it stands."""

    name = "reading-judge"

    def __init__(self) -> None:
        self.calls = 0

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        self.calls += 1
        text = prompt_text(prompt)
        a = re.search(r"\[The Start of Assistant A's Answer\](.*?)\[The End", text, re.S).group(1)
        return Generation("[[A]]" if "Copper" in a else "[[B]]" if "Copper" in text else "[[C]]", self.name)


def test_the_better_answer_wins_in_either_slot_and_the_cache_saves_calls(tmp_path) -> None:
    judge = ReadingJudge()
    ranker = JudgeRanker(judge, cache_path=tmp_path / "cache.jsonl")
    (ranking,) = ranker.rank([EXAMPLE], strategy="full")
    assert ranking.order[0] == 1
    assert judge.calls == 6
    JudgeRanker(judge, cache_path=tmp_path / "cache.jsonl").rank([EXAMPLE], strategy="full")
    assert judge.calls == 6  # all from the cache
    (cheaper,) = JudgeRanker(ReadingJudge()).rank([EXAMPLE], strategy="knockout")
    assert cheaper.order[0] == 1


def test_the_gateway_serves_a_judge_ranker(scripted_server, tmp_path) -> None:
    scripted_server.script_for("judge", [("say", "[[A]]")] * 2)
    spec = f"judge:{_models_yaml(tmp_path, scripted_server)}"
    live = start_gateway(ServeSettings(scripted_config(scripted_server, ranker={"spec": spec})))
    try:
        body = {"instruction": "Name a metal.", "candidates": ["Tin.", "Iron."], "strategy": "full"}
        ranked = httpx.post(f"{live.v1}/rank", json=body).json()
    finally:
        live.stop()
    assert ranked["ranker"] == "judge:judge" and ranked["scores"] == [0.0, 0.0]
    assert ranked["usage"]["calls"] == 2 and ranked["usage"]["prompt_tokens"] > 0


# ---- orders, budgets, usage, hygiene ----

FIVE = Example(
    "five",
    "Which metal is used for wires?",
    candidates=[
        Candidate(f"m{i}", text)
        for i, text in enumerate(["Gold.", "Tin.", "Copper is used.", "Lead.", "Zinc."])
    ],
)


def test_random_orders_ask_each_pair_once_in_an_order_that_does_not_depend_on_the_batch() -> None:
    judge = ReadingJudge()
    (ranking,) = JudgeRanker(judge, orders="random", seed=3).rank([FIVE], strategy="full")
    assert judge.calls == 10  # N(N-1)/2, not N(N-1)
    assert ranking.order[0] == 2 and ranking.usage["calls"] == 10
    # a judge that always says A: each verdict depends on the drawn order, which the batch must not change
    (alone,) = JudgeRanker(CountingJudge(2), orders="random", seed=3).rank([FIVE], strategy="full")
    batched = JudgeRanker(CountingJudge(2), orders="random", seed=3).rank(
        [EXAMPLE, FIVE, EXAMPLE], strategy="full"
    )
    assert batched[1].scores == alone.scores and batched[1].order == alone.order
    assert np.abs(alone.scores).sum() > 0  # the bias became noise, not zeros
    (reseeded,) = JudgeRanker(CountingJudge(2), orders="random", seed=4).rank([FIVE], strategy="full")
    assert reseeded.scores != alone.scores


def test_max_calls_stops_the_judge_and_the_ranking_says_so(scripted_server, tmp_path) -> None:
    ranker = load_ranker(f"judge:{_models_yaml(tmp_path, scripted_server)}")
    ranker.set_budget(Budget(max_calls=4))
    rankings = ranker.rank([FIVE, EXAMPLE], strategy="full")
    assert len(scripted_server.requests_for("judge")) == 8  # 4 per example: 2 pairs in both orders
    for ranking in rankings:
        assert ranking.ok and ranking.usage["calls"] == 4 and ranking.usage["budget_cut"]
        assert sorted(ranking.order) == list(range(len(ranking.scores)))
    assert rankings[0].usage["prompt_tokens"] > 0 and rankings[0].usage["completion_tokens"] > 0


def test_a_knockout_within_budget_is_not_cut_and_a_token_budget_stops_rounds() -> None:
    (ranking,) = JudgeRanker(ReadingJudge(), budget=Budget(max_calls=20)).rank([FIVE], strategy="knockout")
    assert ranking.order[0] == 2 and ranking.usage["calls"] == 8 and not ranking.usage["budget_cut"]
    judge = CountingJudge(tokens=100)
    (cut,) = JudgeRanker(judge, budget=Budget(max_tokens=500)).rank([FIVE], strategy="knockout")
    assert (
        cut.usage["budget_cut"] and judge.calls == 4
    )  # round 1 (4 calls, 400 tokens), then 1 call fits: no pair
    seconds = JudgeRanker(CountingJudge(tokens=1), budget=Budget(max_seconds=1e-9))
    (stopped,) = seconds.rank([FIVE], strategy="knockout")
    assert stopped.usage["calls"] == 4 and stopped.usage["budget_cut"]  # the first round, then no more


def test_usage_has_the_cost_and_flags_a_judge_that_wrote_a_candidate() -> None:
    judge = CountingJudge(tokens=1000)
    judge.name = "m1"
    ranker = JudgeRanker(judge, prices=Prices(prompt_per_mtok=2.0, completion_per_mtok=10.0))
    (ranking,) = ranker.rank([EXAMPLE], strategy="full")
    assert ranking.usage["calls"] == 6
    assert ranking.usage["cost_usd"] == pytest.approx(6 * (500 * 2.0 + 500 * 10.0) / 1e6)
    assert ranking.usage["self_judged"] == [1]


class CountingJudge(Backend):
    """Always "[[A]]", with ``tokens`` split evenly between prompt and completion."""

    name = "counting-judge"

    def __init__(self, tokens: int) -> None:
        self.calls, self.tokens = 0, tokens

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        self.calls += 1
        return Generation(
            "[[A]]", self.name, prompt_tokens=self.tokens // 2, completion_tokens=self.tokens // 2
        )


# ---- soft margins from logprobs ----


def test_soft_margins_from_the_verdict_token_replace_the_parsed_verdict(scripted_server, tmp_path) -> None:
    verdict = [("[[", -0.01, []), ("A", -0.3, [("A", -0.3), ("B", -1.5), ("C", -3.0)]), ("]]", -0.01, [])]
    scripted_server.script_for("judge", [("logprobs", "[[A]]", verdict)] * 2)
    ranker = load_ranker(f"judge:{_models_yaml(tmp_path, scripted_server)}")
    values = ranker.score_pairs([PairQuery("q", "x", "y")] * 2)
    p = np.exp([-0.3, -1.5, -3.0])
    assert values == pytest.approx([(p[0] - p[1]) / p.sum()] * 2)
    sent = scripted_server.requests_for("judge")[0].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5


def test_without_logprobs_the_parsed_verdict_scores(scripted_server, tmp_path) -> None:
    scripted_server.script_for("judge", [("say", "Clearly [[B]]")])
    ranker = load_ranker(f"judge:{_models_yaml(tmp_path, scripted_server)}")
    assert ranker.score_pairs([PairQuery("q", "x", "y")]).tolist() == [-1.0]


def test_a_server_that_refuses_logprobs_is_asked_again_without_them(scripted_server, tmp_path) -> None:
    scripted_server.script_for(
        "judge", [(400, "logprobs is not supported"), ("say", "[[A]]"), ("say", "[[A]]")]
    )
    ranker = load_ranker(f"judge:{_models_yaml(tmp_path, scripted_server)}")
    assert ranker.score_pairs([PairQuery("q", "x", "y")]).tolist() == [1.0]
    assert ranker.score_pairs([PairQuery("q", "y", "x")]).tolist() == [1.0]
    bodies = [r.body for r in scripted_server.requests_for("judge")]
    assert [("logprobs" in b) for b in bodies] == [True, False, False]


# ---- the models.yaml judge section ----


def test_the_judge_section_sets_strategy_orders_budget_and_prices(scripted_server, tmp_path) -> None:
    judge = {
        "strategy": "knockout",
        "orders": "random",
        "max_calls": 3,
        "prices": {"prompt": 1.0},
        "soft": False,
    }
    ranker = load_ranker(f"judge:{_models_yaml(tmp_path, scripted_server, judge=judge)}")
    assert ranker.strategy == "knockout" and ranker.asking.orders == "random"
    assert ranker.budget == Budget(max_calls=3) and ranker.prices == Prices(1.0, 0.0)
    (ranking,) = ranker.rank([FIVE])
    assert ranking.usage["calls"] == 3 and "cost_usd" in ranking.usage
    assert "logprobs" not in scripted_server.requests_for("judge")[0].body


def test_a_bad_judge_section_names_the_key(scripted_server, tmp_path) -> None:
    path = _models_yaml(tmp_path, scripted_server, judge={"max_callz": 3})
    with pytest.raises(LlmblendError, match=r"judge\.max_callz"):
        load_ranker(f"judge:{path}")
    path = _models_yaml(tmp_path, scripted_server, judge={"strategy": "tournament"})
    with pytest.raises(LlmblendError, match="unknown judge strategy 'tournament'"):
        load_ranker(f"judge:{path}")
    path = _models_yaml(tmp_path, scripted_server, judge={"backend": "nobody"})
    with pytest.raises(LlmblendError, match=r"judge\.backend 'nobody'"):
        load_ranker(f"judge:{path}")


def test_the_judge_strategies_are_the_ranking_strategies() -> None:
    from llmblend.rank.judge_config import PAIRWISE_STRATEGIES
    from llmblend.rank.strategies import STRATEGIES

    assert set(PAIRWISE_STRATEGIES) == set(STRATEGIES)
