"""Auth, every limit, the ranker as a service, feedback, metrics and health — over real HTTP."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from llmblend.serve.limits import ApiKeys, RateLimiter
from serve_helpers import scripted_config

USER = [{"role": "user", "content": "hello"}]


def test_a_wrong_or_missing_key_is_401_and_a_right_one_works(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server), api_keys=("k-one", "k-two"))
    with pytest.raises(openai.AuthenticationError):
        live.client("wrong").chat.completions.create(model="alpha", messages=USER)
    assert httpx.get(f"{live.v1}/models").status_code == 401
    assert live.client("k-two").chat.completions.create(model="alpha", messages=USER).choices
    assert httpx.get(f"{live.base_url}/health").status_code == 200  # liveness needs no key


def test_keys_come_from_a_variable_or_a_file_and_empty_sources_are_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GATEWAY_KEYS", "a, b")
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# ops team\nc\n\n")
    keys = ApiKeys.load("GATEWAY_KEYS", keys_file)
    assert len(keys) == 3 and keys.check("Bearer c").startswith("key-")
    monkeypatch.setenv("EMPTY_KEYS", " ")
    with pytest.raises(Exception, match="EMPTY_KEYS"):
        ApiKeys.load("EMPTY_KEYS")


def test_the_rate_limit_is_429_with_retry_after(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server, limits={"rate_per_minute": 2}), api_keys=("k",))
    client = live.client("k")
    client.chat.completions.create(model="alpha", messages=USER)
    client.chat.completions.create(model="alpha", messages=USER)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="alpha", messages=USER)
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_the_token_bucket_refills_with_time() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for _ in range(60):
        limiter.take("a")
    with pytest.raises(Exception, match="retry after 1 s"):
        limiter.take("a")
    limiter.take("b")  # another key has its own bucket
    now[0] += 1.0
    limiter.take("a")


def test_request_limits_are_400_and_a_big_body_is_413(scripted_server, live_gateway) -> None:
    limits = {"max_tokens": 100, "max_messages": 2, "max_body_bytes": 4096, "max_candidates": 3}
    live = live_gateway(scripted_config(scripted_server, limits=limits))
    client = live.client()
    with pytest.raises(openai.BadRequestError, match="max_tokens 500"):
        client.chat.completions.create(model="blend", messages=USER, max_tokens=500)
    with pytest.raises(openai.BadRequestError, match="3 messages"):
        client.chat.completions.create(model="blend", messages=USER * 3)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="blend", messages=USER, n=2)
    big = [{"role": "user", "content": "x" * 5000}]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="blend", messages=big)
    assert caught.value.status_code == 413
    response = httpx.post(f"{live.v1}/rank", json={"instruction": "x", "candidates": ["a", "b", "c", "d"]})
    assert response.status_code == 400 and "at most 3" in response.json()["error"]["message"]
    assert scripted_server.requests == []  # nothing reached a backend


def test_a_full_queue_is_503_and_the_gateway_keeps_serving(scripted_server, live_gateway) -> None:
    scripted_server.script_for("alpha", [("ok", 1.5), ("ok", 1.5)])
    live = live_gateway(scripted_config(scripted_server, limits={"max_concurrent": 1, "max_queue": 1}))
    statuses: list[int] = []

    def call() -> None:
        body = {"model": "alpha", "messages": USER}
        statuses.append(httpx.post(f"{live.v1}/chat/completions", json=body, timeout=10).status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 503]
    assert live.client().chat.completions.create(model="alpha", messages=USER).choices


def test_rank_and_compare_serve_the_ranker(scripted_server, live_gateway, tiny_ranker_dir) -> None:
    config = scripted_config(scripted_server, ranker={"model": str(tiny_ranker_dir), "runtime": "fp32"})
    live = live_gateway(config)
    ranked = httpx.post(
        f"{live.v1}/rank",
        json={
            "instruction": "Name a metal.",
            "candidates": ["Iron.", {"text": "Copper.", "model": "m"}, "Tin."],
        },
    ).json()
    assert sorted(ranked["order"]) == [0, 1, 2] and len(ranked["scores"]) == 3 and ranked["n_forward"] > 0
    assert ranked["order"][0] == max(range(3), key=lambda i: ranked["scores"][i])
    forward = httpx.post(
        f"{live.v1}/compare", json={"instruction": "Name a metal.", "a": "Iron.", "b": "Tin."}
    ).json()
    backward = httpx.post(
        f"{live.v1}/compare", json={"instruction": "Name a metal.", "a": "Tin.", "b": "Iron."}
    ).json()
    assert 0.0 < forward["probability"] < 1.0
    assert forward["margin"] == pytest.approx(-backward["margin"], abs=1e-5)  # debiased: both orders


def test_compare_needs_a_ranker_that_compares(scripted_server, live_gateway) -> None:
    live = live_gateway(scripted_config(scripted_server))  # the longest-answer ranker
    response = httpx.post(f"{live.v1}/compare", json={"instruction": "x", "a": "a", "b": "b"})
    assert response.status_code == 400 and "cannot compare" in response.json()["error"]["message"]


def test_traffic_is_logged_and_feedback_becomes_preference_pairs(
    scripted_server, live_gateway, tmp_path
) -> None:
    from llmblend.data.mixinstruct import read_mixinstruct
    from llmblend.data.preferences import read_preferences

    scripted_server.script_for("alpha", [("say", "Short.")]).script_for("beta", [("say", "A longer answer.")])
    traffic = {"log": str(tmp_path / "traffic" / "blends.jsonl")}
    live = live_gateway(scripted_config(scripted_server, traffic=traffic))
    completion = live.client().chat.completions.create(model="blend", messages=USER)
    (logged,) = read_mixinstruct(tmp_path / "traffic" / "blends.jsonl")
    assert logged.id == completion.id and sorted(logged.models) == ["alpha", "beta"]
    response = httpx.post(f"{live.v1}/feedback", json={"completion_id": completion.id, "preferred": "alpha"})
    assert response.status_code == 200 and response.json()["pairs"] == 1
    (pair,) = read_preferences(tmp_path / "traffic" / "feedback.jsonl")
    assert (pair.chosen_model, pair.rejected_model, pair.chosen) == ("alpha", "beta", "Short.")
    unknown = httpx.post(f"{live.v1}/feedback", json={"completion_id": "chatcmpl-nope", "rating": 0.5})
    assert unknown.status_code == 404
    bad = httpx.post(f"{live.v1}/feedback", json={"completion_id": completion.id, "preferred": 7})
    assert bad.status_code == 400 and "7" in bad.json()["error"]["message"]


def test_metrics_count_requests_upstream_calls_and_stages(scripted_server, live_gateway) -> None:
    scripted_server.script_for("beta", [500])
    live = live_gateway(scripted_config(scripted_server))
    live.client().chat.completions.create(model="blend", messages=USER)
    text = httpx.get(f"{live.base_url}/metrics").text
    assert 'llmblend_requests_total{model="blend",route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'llmblend_upstream_calls_total{backend="beta",outcome="failed"} 1.0' in text
    assert 'llmblend_upstream_calls_total{backend="alpha",outcome="ok"} 1.0' in text
    assert 'llmblend_stage_seconds_count{stage="generate"} 1.0' in text


def test_ready_says_loading_until_the_models_are_in(scripted_server) -> None:
    import asyncio

    from llmblend.serve.app import GatewayState, ServeSettings
    from llmblend.serve.gateway import Gateway

    release = threading.Event()

    def slow_build(config):
        release.wait(10)
        return Gateway.build(config)

    state = GatewayState(ServeSettings(scripted_config(scripted_server), build=slow_build))

    async def scenario() -> tuple[bool, bool]:
        loading = asyncio.create_task(state.load())
        await asyncio.sleep(0.1)
        before = state.gateway is None and not state.loaded.is_set()
        release.set()
        await loading
        return before, state.gateway is not None

    assert asyncio.run(scenario()) == (True, True)


def test_cors_is_off_unless_configured(scripted_server, live_gateway) -> None:
    closed = live_gateway(scripted_config(scripted_server))
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert (
        "access-control-allow-origin"
        not in httpx.options(f"{closed.v1}/chat/completions", headers=preflight).headers
    )
    opened = live_gateway(scripted_config(scripted_server, cors_origins=["https://app.example"]))
    answer = httpx.options(f"{opened.v1}/chat/completions", headers=preflight)
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
