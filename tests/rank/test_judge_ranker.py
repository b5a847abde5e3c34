"""An LLM judge as a ranker: against the scripted OpenAI-compatible server (position bias cancels)
and a judge that reads the answers (the better one wins whatever its slot)."""

from __future__ import annotations

import re

import httpx
import numpy as np
import yaml

from llmblend.backends.base import Backend, Generation, GenerationParams
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


def _models_yaml(tmp_path, server) -> str:
    path = tmp_path / "judge.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": server.base_url, "max_retries": 0}
    path.write_text(yaml.safe_dump({"backends": [backend]}))
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
