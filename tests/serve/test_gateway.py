"""The gateway through the official ``openai`` SDK against uvicorn on 127.0.0.1, with the scripted
OpenAI-compatible server as its backends."""

from __future__ import annotations

import httpx
import openai
import pytest

from serve_helpers import scripted_config

LONG = "Copper conducts electricity, resists corrosion and is easy to shape into wire."
SHORT = "Wiring."


def test_blend_returns_the_top_ranked_answer_with_summed_usage(scripted_server, live_gateway) -> None:
    scripted_server.script_for("alpha", [("say", SHORT)]).script_for("beta", [("say", LONG)])
    live = live_gateway(scripted_config(scripted_server))
    completion = live.client().chat.completions.create(
        model="blend", messages=[{"role": "user", "content": "Name uses of copper."}]
    )
    assert completion.choices[0].message.content == LONG
    assert completion.model == "blend"
    assert completion.object == "chat.completion"
    words = len(SHORT.split()) + len(LONG.split())
    assert completion.usage.completion_tokens == words  # every upstream call, not just the returned one
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + words
    assert not hasattr(completion, "llmblend") or completion.llmblend is None  # strict clients see nothing


def test_details_list_every_candidate_with_score_rank_and_the_returned_one(
    scripted_server, live_gateway
) -> None:
    scripted_server.script_for("alpha", [("say", SHORT)]).script_for("beta", [("say", LONG)])
    live = live_gateway(scripted_config(scripted_server))
    completion = live.client().chat.completions.create(
        model="blend",
        messages=[{"role": "user", "content": "Name uses of copper."}],
        extra_body={"llmblend": {"details": True}},
    )
    details = completion.model_extra["llmblend"]
    by_model = {c["model"]: c for c in details["candidates"]}
    assert by_model["beta"]["rank"] == 1 and by_model["alpha"]["rank"] == 2
    assert by_model["beta"]["score"] > by_model["alpha"]["score"]
    assert details["returned"] == "top"
    assert details["kind"] == "blend"
    assert set(details["timings"]) == {"generate_s", "rank_s", "fuse_s", "guard_s", "total_s"}


def test_the_whole_conversation_reaches_every_backend(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a metal."},
    ]
    live.client().chat.completions.create(
        model="rank", messages=messages, temperature=0.3, max_tokens=50, seed=5, stop=["\n\n"]
    )
    for name in ("alpha", "beta"):
        (sent,) = scripted_server.requests_for(name)
        assert sent.body["messages"] == messages
        assert sent.body["max_tokens"] == 50
        assert sent.body["temperature"] == 0.3
        assert sent.body["stop"] == ["\n\n"]


def test_a_backend_name_is_a_plain_proxy(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server))
    completion = live.client().chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "ping"}]
    )
    assert completion.choices[0].message.content == "echo: ping"
    assert [r.body["model"] for r in scripted_server.requests] == ["alpha"]


def test_best_of_n_asks_one_backend_n_times_with_distinct_seeds(scripted_server, live_gateway) -> None:
    config = scripted_config(scripted_server, best_of_n=3)
    live = live_gateway(config)
    live.client().chat.completions.create(
        model="best-of-n:beta", messages=[{"role": "user", "content": "ping"}], temperature=0.8
    )
    seeds = sorted(r.body.get("seed") for r in scripted_server.requests_for("beta"))
    assert seeds == [0, 1, 2]
    assert scripted_server.requests_for("alpha") == []


def test_models_lists_profiles_and_backends(scripted_server, live_gateway) -> None:
    config = scripted_config(
        scripted_server, profiles={"blend-fast": {"kind": "blend", "backends": ["alpha"]}}
    )
    live = live_gateway(config)
    names = [m.id for m in live.client().models.list()]
    assert names == ["blend", "rank", "blend-fast", "best-of-n:alpha", "best-of-n:beta", "alpha", "beta"]


def test_streamed_blend_reads_through_the_sdk(scripted_server, live_gateway) -> None:
    scripted_server.script_for("alpha", [("say", SHORT)]).script_for("beta", [("say", LONG)])
    live = live_gateway(scripted_config(scripted_server))
    stream = live.client().chat.completions.create(
        model="blend",
        messages=[{"role": "user", "content": "Name uses of copper."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LONG
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len(SHORT.split()) + len(LONG.split())


def test_streamed_proxy_passes_pieces_on(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server))
    stream = live.client().chat.completions.create(
        model="beta", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "echo: one two three"
    assert len(pieces) == 4  # word by word, as the backend wrote them


def test_unknown_model_is_404_naming_the_known_ones(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server))
    with pytest.raises(openai.NotFoundError) as caught:
        live.client().chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "gpt-9" in str(caught.value) and "blend" in str(caught.value)


def test_error_bodies_are_openai_shaped(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server))
    response = httpx.post(f"{live.v1}/chat/completions", json={"model": "blend", "messages": []})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error" and "messages" in error["message"]
    response = httpx.post(
        f"{live.v1}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "error" in response.json()
    assert httpx.get(f"{live.base_url}/nope").json()["error"]["code"] == "not_found"
