"""A failing backend leaves the others; all failing is a 502 naming each; a client that hangs up
cancels its upstream calls; the deadline gives 504 or the best answer so far."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from serve_helpers import scripted_config

GOOD = "Bronze is copper and tin."

FAILURES = {
    "refuses": None,  # a base_url with nothing listening
    "hangs": ("hang", 30),
    "500": 500,
    "garbage": "garbage",
    "missing field": "missing_field",
    "closes": "close",
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_one_failing_backend_leaves_the_other_answer(
    failure, scripted_server, refused_url, live_gateway
) -> None:
    config = scripted_config(scripted_server, limits={"generate_timeout_s": 2.0})
    if failure == "refuses":
        backends = [b.model_dump(exclude_none=True) for b in config.backends]
        backends[1]["base_url"] = refused_url
        config = config.model_copy(
            update={"backends": type(config).model_validate({"backends": backends}).backends}
        )
    else:
        scripted_server.script_for("beta", [FAILURES[failure]])
    scripted_server.script_for("alpha", [("say", GOOD)])
    live = live_gateway(config)
    completion = live.client().chat.completions.create(
        model="blend",
        messages=[{"role": "user", "content": "What is bronze?"}],
        extra_body={"llmblend": {"details": True}},
    )
    assert completion.choices[0].message.content == GOOD
    details = completion.model_extra["llmblend"]
    (failed,) = details["failed"]
    assert failed.startswith("beta")
    beta = next(c for c in details["candidates"] if c["model"] == "beta")
    assert beta["error"] and beta["rank"] is None


def test_a_hanging_backend_costs_at_most_the_generate_timeout(scripted_server, live_gateway) -> None:
    scripted_server.script_for("beta", [("hang", 30)]).script_for("alpha", [("say", GOOD)])
    live = live_gateway(scripted_config(scripted_server, limits={"generate_timeout_s": 1.0}))
    started = time.monotonic()
    completion = live.client().chat.completions.create(
        model="rank", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == GOOD
    assert time.monotonic() - started < 5


def test_every_backend_failing_is_502_naming_each(scripted_server, live_gateway) -> None:
    scripted_server.script_for("alpha", [500]).script_for("beta", ["garbage"])
    live = live_gateway(scripted_config(scripted_server))
    response = httpx.post(
        f"{live.v1}/chat/completions", json={"model": "blend", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "alpha" in message and "beta" in message
    assert response.json()["error"]["code"] == "upstream_failed"


def test_a_failing_proxied_backend_is_502(scripted_server, live_gateway) -> None:
    scripted_server.script_for("alpha", [500])
    live = live_gateway(scripted_config(scripted_server))
    with pytest.raises(openai.InternalServerError) as caught:
        live.client().chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502


def test_a_proxied_stream_cut_midway_ends_with_an_error_event(scripted_server, live_gateway) -> None:
    scripted_server.script_for("alpha", [("stream_then_close", 2)])
    live = live_gateway(scripted_config(scripted_server))
    stream = live.client().chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_hangs_up_cancels_the_upstream_calls(scripted_server, live_gateway) -> None:
    scripted_server.script([("ok", 30), ("ok", 30)])
    live = live_gateway(scripted_config(scripted_server))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{live.v1}/chat/completions",
            json={"model": "blend", "messages": [{"role": "user", "content": "slow"}]},
            timeout=httpx.Timeout(5.0, read=1.0),
        )
    assert _wait_for(lambda: scripted_server.hangups == 2), f"upstream hangups: {scripted_server.hangups}"


def test_a_streaming_client_that_hangs_up_cancels_the_upstream_calls(scripted_server, live_gateway) -> None:
    scripted_server.script([("ok", 30), ("ok", 30)])
    live = live_gateway(scripted_config(scripted_server))
    body = {"model": "blend", "messages": [{"role": "user", "content": "slow"}], "stream": True}
    body["llmblend"] = {"details": True}  # the stream opens at once; then the client leaves
    with httpx.stream("POST", f"{live.v1}/chat/completions", json=body, timeout=5.0) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # held: a dropped iterator closes the response at once
        next(lines)
        assert _wait_for(lambda: len(scripted_server.requests) == 2)  # both upstream calls are out
        assert scripted_server.hangups == 0  # still connected: nothing is cancelled yet
    assert _wait_for(lambda: scripted_server.hangups == 2), f"upstream hangups: {scripted_server.hangups}"


def test_past_the_deadline_is_504(scripted_server, live_gateway) -> None:
    scripted_server.script([("ok", 10), ("ok", 10)])
    live = live_gateway(scripted_config(scripted_server, limits={"deadline_s": 0.5}))
    response = httpx.post(
        f"{live.v1}/chat/completions",
        json={"model": "blend", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


def test_past_the_deadline_with_fallback_returns_the_answer_so_far(scripted_server, live_gateway) -> None:
    scripted_server.script_for("alpha", [("say", GOOD)]).script_for("beta", [("ok", 10)])
    limits = {"deadline_s": 1.0, "deadline_fallback": True}
    live = live_gateway(scripted_config(scripted_server, limits=limits))
    completion = live.client().chat.completions.create(
        model="blend", messages=[{"role": "user", "content": "x"}], extra_body={"llmblend": {"details": True}}
    )
    assert completion.choices[0].message.content == GOOD
    assert completion.model_extra["llmblend"]["deadline_reached"] is True
