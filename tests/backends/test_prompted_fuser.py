"""PromptedFuser over a real HTTP server on 127.0.0.1 (``scripted_server`` of conftest)."""

from __future__ import annotations

import math

import pytest

from llmblend.backends.base import GenerationParams
from llmblend.backends.config import Slot
from llmblend.backends.openai_http import OpenAIBackend
from llmblend.blender import Blender
from llmblend.fuse.base import FuseItem
from llmblend.fuse.prompted import SYNTHESIS_PROMPT, PromptedFuser


def fuser_for(base_url: str, **kwargs) -> PromptedFuser:
    backend = OpenAIBackend(name="fuser-model", base_url=base_url, max_retries=0, **kwargs)
    return PromptedFuser(backend, GenerationParams(max_tokens=100))


def test_request_has_the_synthesis_prompt_with_every_candidate_numbered(scripted_server) -> None:
    fuser = fuser_for(scripted_server.base_url)
    item = FuseItem("Name a French city.", ("Paris is one.", "Lyon.", "Marseille, on the coast."))
    try:
        (fused,) = fuser.fuse([item])
    finally:
        fuser.close()
    assert fused.ok and fused.text == "echo: Name a French city."  # the server echoes the user turn
    assert fused.fuser == "prompted:fuser-model" and fused.completion_tokens == 5 and fused.latency_s > 0
    (request,) = scripted_server.requests
    assert request.path == "/v1/chat/completions"
    system, user = request.body["messages"]
    assert system["role"] == "system" and system["content"].startswith(SYNTHESIS_PROMPT)
    for number, text in enumerate(item.candidates, start=1):
        assert f"\n{number}. {text}" in system["content"]
    assert (
        system["content"].index("1. Paris")
        < system["content"].index("2. Lyon")
        < system["content"].index("3. M")
    )
    assert user == {"role": "user", "content": "Name a French city."}
    assert request.body["max_tokens"] == 100 and request.body["temperature"] == 0.0


def test_a_server_error_is_fused_error_and_the_other_items_are_fine(scripted_server) -> None:
    scripted_server.script(["ok", 500, "ok"])
    fuser = fuser_for(scripted_server.base_url, concurrency=1)  # one at a time: the 500 hits item 2
    items = [FuseItem(f"question {i}", ("a", "b")) for i in range(3)]
    try:
        fused = fuser.fuse(items)
    finally:
        fuser.close()
    assert [f.ok for f in fused] == [True, False, True]
    assert fused[1].text == "" and "internal server error" in fused[1].error
    assert [fused[0].text, fused[2].text] == ["echo: question 0", "echo: question 2"]
    assert len(scripted_server.requests) == 3


@pytest.mark.slow  # loads the shipped ranker (ONNX int8): ~7 s with a warm ONNX cache, ~13 s cold
def test_blender_with_the_shipped_ranker_and_a_prompted_fuser(scripted_server) -> None:
    from llmblend.rank.pairranker import PairRanker

    url = scripted_server.base_url
    # The server echoes the instruction, cut to max_tokens words: three candidates of different lengths.
    slots = [
        Slot(OpenAIBackend(name=f"model-{n}", base_url=url, max_retries=0), GenerationParams(max_tokens=n))
        for n in (3, 12, 6)
    ]
    fuser = fuser_for(url)
    blender = Blender(slots, PairRanker.default(), fuser, top_k=3)
    instruction = "Explain in a few words why the sky looks blue on a clear day at noon."
    try:
        result = blender.blend(instruction)
    finally:
        blender.close()

    assert result.ok and result.ranker == "pairranker" and result.n_forward > 0
    assert sorted(result.ranking) == [0, 1, 2] and result.top_k == result.ranking
    assert all(c.ok and c.score is not None for c in result.candidates)
    assert [result.candidates[i].score for i in result.ranking] == sorted(
        (c.score for c in result.candidates), reverse=True
    )
    (fuse_request,) = [r for r in scripted_server.requests if r.body["model"] == "fuser-model"]
    system = fuse_request.body["messages"][0]["content"]
    positions = [system.index(f"{k}. {result.candidates[i].text}") for k, i in enumerate(result.ranking, 1)]
    assert positions == sorted(positions)  # the fuser read the candidates best first
    assert result.fused.ok and result.fused.text == f"echo: {instruction}"
    assert isinstance(result.guard_margin, float) and math.isfinite(result.guard_margin)
    expected = "fused" if result.guard_margin >= 0 else "top"
    assert result.returned == expected
    assert result.answer == (
        result.fused.text if expected == "fused" else result.candidates[result.ranking[0]].text
    )
    assert (
        result.timings.rank_s > 0
        and result.timings.guard_s > 0
        and result.tokens["fuse"].completion_tokens > 0
    )


def test_blender_default_wires_config_ranker_and_shipped_fuser(scripted_server, monkeypatch) -> None:
    """Blender.default(): slots from the config, PairRanker.default(), and default_fuser() (here: none)."""
    import sys

    from llmblend.backends.config import BackendSpec, GenerateConfig, Sampling
    from llmblend.blender import NO_FUSER_NOTE
    from llmblend.rank.baselines import LongestRanker
    from llmblend.rank.pairranker import PairRanker

    monkeypatch.setattr(PairRanker, "default", classmethod(lambda cls, **options: LongestRanker()))
    monkeypatch.setitem(sys.modules, "llmblend.fuse.llama_fuser", None)  # no shipped fuser to import
    config = GenerateConfig(
        defaults=Sampling(max_tokens=8, temperature=0.0),
        backends=[
            BackendSpec(model="small", base_url=scripted_server.base_url, max_retries=0),
            BackendSpec(model="large", base_url=scripted_server.base_url, variants=[{"max_tokens": 30}]),
        ],
    )
    blender = Blender.default(config, top_k=2)
    try:
        result = blender.blend("say something rather long for a change, please")
    finally:
        blender.close()
    assert blender.fuser is None and blender.guard is None and blender.top_k == 2
    assert [c.model for c in result.candidates] == ["small", "large"] and result.ranking == (1, 0)
    assert (
        result.returned == "top" and result.answer == "echo: say something rather long for a change, please"
    )
    assert NO_FUSER_NOTE in result.notes
