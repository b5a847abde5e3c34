"""The cascade: a cheap ranker shortlists, the LLM judge orders only the shortlist."""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.rank.baselines import LongestRanker
from llmblend.rank.cascade import CascadeRanker, calibrate_margin, top_gap
from llmblend.rank.judge_ranker import JudgeRanker
from llmblend.rank.registry import load_ranker
from llmblend.serve.app import ServeSettings
from llmblend.types import Candidate, Example, Prompt, Ranking, prompt_text
from serve_helpers import scripted_config, start_gateway

ANSWERS = ["a b", "a b c d e f", "a", "a b c d e", "a b c d e f g h", "copper a b c"]
EXAMPLE = Example(
    "ex", "Which metal is used for wires?", candidates=[Candidate(f"m{i}", t) for i, t in enumerate(ANSWERS)]
)


class ShortlistJudge(Backend):
    """Prefers the answer that mentions copper, else the shorter one; records every answer it saw."""

    name = "shortlist-judge"

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.calls = 0

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        self.calls += 1
        text = prompt_text(prompt)
        a, b = re.findall(r"Start of Assistant [AB]'s Answer\]\n(.*?)\n\[The End", text, re.S)
        self.seen |= {a, b}
        if "copper" in a or "copper" in b:
            return Generation("[[A]]" if "copper" in a else "[[B]]", self.name)
        return Generation("[[A]]" if len(a) < len(b) else "[[B]]", self.name)


def test_the_judge_sees_only_the_top_m_and_decides_their_order() -> None:
    judge = ShortlistJudge()
    cascade = CascadeRanker(LongestRanker(), JudgeRanker(judge), top_m=3)
    (ranking,) = cascade.rank([EXAMPLE], strategy="full")
    longest_three = {ANSWERS[4], ANSWERS[1], ANSWERS[3]}
    assert judge.seen == longest_three and judge.calls == 6  # 3 candidates, both orders
    assert list(ranking.order[:3]) == [3, 1, 4]  # the judge: shorter first among the shortlist
    assert list(ranking.order[3:]) == [5, 0, 2]  # the rest in the first ranker's order
    assert ranking.usage["judged"] and ranking.usage["calls"] == 6
    assert sorted(ranking.scores, reverse=True) == [ranking.scores[i] for i in ranking.order]


def test_with_a_margin_the_judge_is_asked_only_when_the_first_ranker_is_unsure() -> None:
    sure = Example(
        "sure", "q", candidates=[Candidate("a", "x " * 30), Candidate("b", "x"), Candidate("c", "x x")]
    )
    unsure = Example(
        "unsure", "q", candidates=[Candidate("a", "x x x"), Candidate("b", "x x x x"), Candidate("c", "x")]
    )
    judge = ShortlistJudge()
    cascade = CascadeRanker(LongestRanker(), JudgeRanker(judge), top_m=2, margin=5.0)
    confident, doubtful = cascade.rank([sure, unsure], strategy="full")
    assert not confident.usage["judged"] and confident.order[0] == 0
    assert doubtful.usage["judged"] and doubtful.order[0] == 0  # the judge prefers the shorter of the top two
    assert judge.calls == 2


def test_the_cascade_comes_from_the_models_yaml(scripted_server, tmp_path) -> None:
    path = tmp_path / "models.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": scripted_server.base_url, "max_retries": 0}
    judge = {"strategy": "knockout", "soft": False, "cascade": {"first": "longest", "top_m": 2}}
    path.write_text(yaml.safe_dump({"backends": [backend], "judge": judge}))
    scripted_server.script_for("judge", [("say", "[[B]]")] * 2)
    cascade = load_ranker(f"cascade:{path}")
    assert isinstance(cascade, CascadeRanker) and cascade.strategy == "knockout"
    (ranking,) = cascade.rank([EXAMPLE])
    assert len(scripted_server.requests_for("judge")) == 2  # one pair of the top 2, both orders
    assert ranking.usage["calls"] == 2


def test_calibrate_margin_finds_the_gap_above_which_the_first_ranker_agrees() -> None:
    gaps = [0.1 * k for k in range(40)]
    agrees = [k >= 15 or k % 2 == 0 for k in range(40)]  # unreliable below 1.5
    margin = calibrate_margin(gaps, agrees, target=0.95)
    assert margin == pytest.approx(1.2)  # from 1.2 on 27 of 28 agree; from 1.0 on only 28 of 30
    assert calibrate_margin(gaps[:5], agrees[:5]) == float("inf")  # too few to trust
    assert top_gap(Ranking.from_scores([1.0, 3.0, 2.5])) == pytest.approx(0.5)


def test_the_gateway_ranks_with_a_cascade(scripted_server, tmp_path) -> None:
    path = tmp_path / "models.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": scripted_server.base_url, "max_retries": 0}
    path.write_text(
        yaml.safe_dump({"backends": [backend], "judge": {"cascade": {"first": "longest", "top_m": 2}}})
    )
    scripted_server.script_for("judge", [("say", "[[B]]")] * 2)  # always slot B: a tie when debiased
    config = scripted_config(scripted_server, ranker={"spec": f"cascade:{path}"})
    live = start_gateway(ServeSettings(config))
    try:
        body = {
            "instruction": "Name a metal.",
            "candidates": ["Tin.", "Iron is a metal.", "Gold is a metal too."],
        }
        ranked = httpx.post(f"{live.v1}/rank", json=body).json()
    finally:
        live.stop()
    assert ranked["ranker"].startswith("cascade:") and ranked["usage"]["judged"]
    assert ranked["usage"]["calls"] == 2 and ranked["order"][2] == 0  # the shortest never reached the judge
