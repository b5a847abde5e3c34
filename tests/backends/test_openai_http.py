"""OpenAIBackend against a real HTTP server on 127.0.0.1 (the ``scripted_server`` fixture of conftest)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import Any

import pytest

from llmblend.backends.base import GenerationParams
from llmblend.backends.openai_http import OpenAIBackend, parse_retry_after
from llmblend.errors import (
    BackendAuthError,
    BackendConnectionError,
    BackendRateLimitError,
    BackendResponseError,
    BackendTimeoutError,
)
from llmblend.types import Message, prompt_text

KEY_ENV = "LLMBLEND_TEST_OPENAI_KEY"
KEY = "sk-test-0123456789-very-secret"


def make(base_url: str, **kwargs: Any) -> OpenAIBackend:
    """A backend with quick retries unless a test says otherwise."""
    settings: dict[str, Any] = {"name": "echo-model", "backoff_base": 0.01, "backoff_max": 0.05}
    settings.update(kwargs)
    return OpenAIBackend(base_url=base_url, **settings)


async def _generate(backend: OpenAIBackend, prompt: Any, params: GenerationParams | None = None):
    async with backend:
        return await backend.generate(prompt, params)


def generate(
    backend: OpenAIBackend, prompt: Any = "hello there world", params: GenerationParams | None = None
):
    return asyncio.run(_generate(backend, prompt, params))


def collect_stream(backend: OpenAIBackend, prompt: Any, params: GenerationParams | None = None) -> list[str]:
    async def go() -> list[str]:
        async with backend:
            return [piece async for piece in backend.stream(prompt, params)]

    return asyncio.run(go())


# ---- answers ----


def test_chat_answer_has_text_tokens_finish_reason_and_model(scripted_server) -> None:
    result = generate(make(scripted_server.base_url), "hello there world")
    assert result.ok, result.error
    assert result.text == "echo: hello there world"
    assert result.model == "echo-model"
    assert (result.prompt_tokens, result.completion_tokens) == (3, 4)
    assert result.finish_reason == "stop"
    assert result.latency_s > 0
    (request,) = scripted_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == [{"role": "user", "content": "hello there world"}]
    assert request.body["stream"] is False
    assert "seed" not in request.body and "stop" not in request.body
    assert "authorization" not in request.headers


def test_chat_sends_the_whole_conversation(scripted_server) -> None:
    conversation = [
        Message("system", "be brief"),
        Message("user", "first question"),
        Message("assistant", "first answer"),
        Message("user", "second question"),
    ]
    result = generate(make(scripted_server.base_url), conversation)
    assert result.text == "echo: second question"
    roles = [m["role"] for m in scripted_server.requests[0].body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


def test_max_tokens_cut_gives_finish_reason_length(scripted_server) -> None:
    result = generate(
        make(scripted_server.base_url), "one two three four five", GenerationParams(max_tokens=2)
    )
    assert result.text == "echo: one"
    assert result.finish_reason == "length"


def test_completion_mode_posts_the_flattened_prompt(scripted_server) -> None:
    conversation = [Message("system", "be brief"), Message("user", "say something")]
    result = generate(make(scripted_server.base_url, mode="completion"), conversation)
    assert result.ok, result.error
    (request,) = scripted_server.requests
    assert request.path == "/v1/completions"
    assert request.body["prompt"] == prompt_text(conversation)
    assert "messages" not in request.body
    assert result.text == f"echo: {prompt_text(conversation)}"
    assert result.finish_reason == "stop"


def test_request_body_headers_and_the_key_never_leaks(
    scripted_server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, KEY)
    backend = make(
        scripted_server.base_url,
        model="served-model-id",
        api_key_env=KEY_ENV,
        extra_body={"top_k": 40},
        headers={"X-Trace": "t1"},
        max_retries=1,
    )
    params = GenerationParams(max_tokens=32, temperature=0.7, top_p=0.9, seed=7, stop=("###", "\n\n"))
    assert generate(backend, "hi", params).ok
    body = scripted_server.requests[0].body
    assert body["model"] == "served-model-id"
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (32, 0.7, 0.9)
    assert body["seed"] == 7 and body["stop"] == ["###", "\n\n"]
    assert body["top_k"] == 40
    headers = scripted_server.requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-trace"] == "t1"

    # failures whose messages and logs could carry the key: a server echoing it, retries, auth
    scripted_server.script([(401, f"Incorrect API key provided: {KEY}"), 500, 500])
    auth = generate(backend, "hi")
    retried = generate(backend, "hi")
    assert isinstance(auth.failure, BackendAuthError) and "***" in auth.error
    assert isinstance(retried.failure, BackendResponseError)
    texts = [auth.error, retried.error, repr(auth.failure), repr(backend), str(backend), caplog.text]
    assert caplog.records, "the retries and failures should have been logged"
    for text in texts:
        assert KEY not in text
    assert KEY_ENV in repr(backend) and KEY_ENV in auth.error


# ---- retries and error kinds ----


def test_500_then_ok_is_retried(scripted_server) -> None:
    scripted_server.script([500])
    result = generate(make(scripted_server.base_url))
    assert result.ok, result.error
    assert len(scripted_server.requests) == 2


def test_500_forever_fails_after_max_retries(scripted_server) -> None:
    scripted_server.script([500] * 10)
    result = generate(make(scripted_server.base_url, max_retries=2))
    assert len(scripted_server.requests) == 3
    assert not result.ok and result.text == ""
    assert result.error.startswith("bad_response")
    assert "internal server error" in result.error
    assert result.failure.status == 500 and result.failure.retryable
    with pytest.raises(BackendResponseError):
        result.raise_for_error()


def test_429_retry_after_one_second_is_really_waited(scripted_server) -> None:
    scripted_server.script([(429, 1)])
    started = time.perf_counter()
    result = generate(make(scripted_server.base_url, backoff_max=5.0))
    elapsed = time.perf_counter() - started
    assert result.ok, result.error
    assert len(scripted_server.requests) == 2
    assert 1.0 <= elapsed < 4.0


def test_429_waits_are_the_retry_after_capped_at_backoff_max(scripted_server) -> None:
    waits: list[float] = []
    backend = make(scripted_server.base_url, backoff_base=0.01, backoff_max=10.0)
    backend._sleep = _recorder(waits)
    http_date = email.utils.formatdate(time.time() + 3, usegmt=True)
    scripted_server.script([(429, 2), (429, http_date), (429, 100), 429])
    assert generate(backend).ok
    assert waits[0] == 2.0
    assert 1.0 <= waits[1] <= 3.0  # an HTTP-date has 1 s resolution
    assert waits[2] == 10.0  # Retry-After 100 capped at backoff_max
    assert 0.0 <= waits[3] <= 0.08  # no Retry-After: plain backoff, cap 0.01 * 2**3


def test_429_without_retries_left_is_a_rate_limit_error(scripted_server) -> None:
    scripted_server.script([(429, 7)])
    result = generate(make(scripted_server.base_url, max_retries=0))
    assert isinstance(result.failure, BackendRateLimitError), result.error
    assert result.failure.retry_after == 7.0 and result.failure.status == 429
    assert result.error.startswith("rate_limit") and "retry after 7 s" in result.error


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0


def test_400_is_not_retried_and_keeps_the_server_message(scripted_server) -> None:
    scripted_server.script([400])
    result = generate(make(scripted_server.base_url))
    assert len(scripted_server.requests) == 1
    assert result.error.startswith("bad_response")
    assert "max_tokens is too large" in result.error
    assert result.failure.status == 400 and not result.failure.retryable


def test_401_is_an_auth_error_and_not_retried(scripted_server) -> None:
    scripted_server.script([401])
    result = generate(make(scripted_server.base_url))
    assert len(scripted_server.requests) == 1
    assert isinstance(result.failure, BackendAuthError)
    assert result.failure.status == 401
    assert result.error.startswith("auth") and "invalid api key" in result.error
    with pytest.raises(BackendAuthError):
        result.raise_for_error()


def test_a_hang_longer_than_read_timeout_times_out(scripted_server) -> None:
    scripted_server.script([("hang", 5), ("hang", 5)])
    started = time.perf_counter()
    result = generate(make(scripted_server.base_url, read_timeout=0.3, max_retries=1))
    elapsed = time.perf_counter() - started
    assert isinstance(result.failure, BackendTimeoutError), result.error
    assert result.error.startswith("timeout")
    assert len(scripted_server.requests) == 2
    assert 0.6 <= elapsed < 2.0


def test_a_refused_connection_is_a_connection_error(refused_url: str) -> None:
    result = generate(make(refused_url, max_retries=1))
    assert isinstance(result.failure, BackendConnectionError), result.error
    assert result.error.startswith("connection")
    assert result.failure.retryable


@pytest.mark.parametrize(
    ("behaviour", "requests_seen"),
    [("garbage", 2), ("missing_field", 1)],  # garbage is transient (retried), a wrong shape is not
)
def test_malformed_replies_are_bad_responses(scripted_server, behaviour: str, requests_seen: int) -> None:
    scripted_server.script([behaviour] * 5)
    result = generate(make(scripted_server.base_url, max_retries=1))
    assert isinstance(result.failure, BackendResponseError), result.error
    assert result.error.startswith("bad_response")
    assert len(scripted_server.requests) == requests_seen


def test_missing_field_in_completion_mode(scripted_server) -> None:
    scripted_server.script(["missing_field"])
    result = generate(make(scripted_server.base_url, mode="completion"))
    assert result.error.startswith("bad_response") and "choices[0].text" in result.error


def test_a_closed_socket_is_retried(scripted_server) -> None:
    scripted_server.script(["close"])
    assert generate(make(scripted_server.base_url)).ok
    assert len(scripted_server.requests) == 2


def test_a_socket_closed_every_time_fails_retryably(scripted_server) -> None:
    scripted_server.script(["close"] * 5)
    result = generate(make(scripted_server.base_url, max_retries=2))
    assert len(scripted_server.requests) == 3
    assert result.error.split(":")[0] in ("connection", "bad_response")
    assert result.failure.retryable


def test_backoff_waits_are_jittered_within_a_growing_cap(scripted_server) -> None:
    caps = [0.1, 0.2, 0.4, 0.8, 1.0]  # min(backoff_max, backoff_base * 2**attempt)
    waits: list[float] = []
    backend = make(scripted_server.base_url, backoff_base=0.1, backoff_max=1.0, max_retries=5)
    backend._sleep = _recorder(waits)
    scripted_server.script([500] * 5)
    assert generate(backend).ok
    assert len(waits) == 5
    assert all(0.0 <= wait <= cap for wait, cap in zip(waits, caps, strict=True))

    highest: list[float] = []
    backend._sleep = _recorder(highest)
    backend._jitter = lambda low, high: high
    scripted_server.script([500] * 5)
    assert generate(backend).ok
    assert highest == pytest.approx(caps)


def test_max_retries_zero_never_retries(scripted_server) -> None:
    scripted_server.script([500, 500])
    result = generate(make(scripted_server.base_url, max_retries=0))
    assert not result.ok and len(scripted_server.requests) == 1


# ---- concurrency, streaming, lifecycle ----


def test_concurrency_limits_requests_in_flight(scripted_server) -> None:
    scripted_server.script([("ok", 0.3)] * 6)
    backend = make(scripted_server.base_url, concurrency=2)
    assert backend.concurrency == 2

    async def go():
        async with backend:
            return await asyncio.gather(*(backend.generate(f"question {i}") for i in range(6)))

    started = time.perf_counter()
    results = asyncio.run(go())
    elapsed = time.perf_counter() - started
    assert all(r.ok for r in results)
    assert [r.text for r in results] == [f"echo: question {i}" for i in range(6)]
    assert scripted_server.max_in_flight == 2
    assert 0.85 <= elapsed < 2.0  # three waves of 0.3 s


def test_stream_yields_pieces_that_join_to_the_answer(scripted_server) -> None:
    pieces = collect_stream(make(scripted_server.base_url), "one two three four")
    assert len(pieces) >= 4 and all(pieces)
    assert "".join(pieces) == "echo: one two three four"
    assert scripted_server.requests[0].body["stream"] is True


def test_stream_in_completion_mode(scripted_server) -> None:
    pieces = collect_stream(make(scripted_server.base_url, mode="completion"), "alpha beta gamma")
    assert len(pieces) >= 3
    assert "".join(pieces) == "echo: alpha beta gamma"
    assert scripted_server.requests[0].path == "/v1/completions"


def test_stream_retries_before_the_first_byte_and_raises_typed_errors(scripted_server) -> None:
    scripted_server.script([500, "close"])
    assert "".join(collect_stream(make(scripted_server.base_url), "a b")) == "echo: a b"
    assert len(scripted_server.requests) == 3

    scripted_server.script([401])
    with pytest.raises(BackendAuthError):
        collect_stream(make(scripted_server.base_url), "a b")


def test_one_backend_serves_several_event_loops(scripted_server) -> None:
    backend = make(scripted_server.base_url)
    first = asyncio.run(backend.generate("first"))
    second = asyncio.run(backend.generate("second"))
    assert (first.text, second.text) == ("echo: first", "echo: second")


def test_script_for_a_model_comes_before_the_general_script(scripted_server) -> None:
    scripted_server.script_for("flaky", [500, 500])
    flaky = make(scripted_server.base_url, name="flaky", max_retries=1)
    steady = make(scripted_server.base_url, name="steady")

    async def go():
        return await asyncio.gather(_generate(flaky, "x"), _generate(steady, "y"))

    flaky_result, steady_result = asyncio.run(go())
    assert not flaky_result.ok and steady_result.ok
    assert len(scripted_server.requests_for("flaky")) == 2
    assert len(scripted_server.requests_for("steady")) == 1


# ---- construction ----


def test_a_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBLEND_NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="LLMBLEND_NO_SUCH_KEY"):
        OpenAIBackend(name="m", base_url="http://127.0.0.1:1/v1", api_key_env="LLMBLEND_NO_SUCH_KEY")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name"),
        ({"base_url": "127.0.0.1:8080/v1"}, "base_url"),
        ({"mode": "edit"}, "'edit'"),
        ({"concurrency": 0}, "concurrency"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"backoff_max": -1.0}, "backoff_max"),
        ({"extra_body": {"model": "x", "top_k": 4}}, "'model'"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"name": "m", "base_url": "http://127.0.0.1:1/v1", **kwargs}
    with pytest.raises(ValueError, match=message):
        OpenAIBackend(**settings)


def test_a_trailing_slash_on_base_url_is_dropped() -> None:
    backend = OpenAIBackend(name="m", base_url="http://127.0.0.1:1/v1/", mode="completion")
    assert backend.url == "http://127.0.0.1:1/v1/completions"
    assert backend.model == "m"


def _recorder(waits: list[float]):
    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return sleep
