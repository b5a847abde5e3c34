"""Token logprobs (``GenerationParams.top_logprobs``): what is asked, how replies are read, real llama.cpp."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

from llmblend.backends.base import Generation, GenerationParams, TokenLogprob
from llmblend.backends.llama_cpp import LlamaCppBackend
from llmblend.backends.logprobs import choice_logprobs
from llmblend.backends.openai_http import OpenAIBackend

#: (token, logprob, alternatives) as the scripted server's ``("logprobs", text, tokens)`` takes them.
TOKENS = [
    ("Yes", -0.105, [("Yes", -0.105), ("No", -2.4), (" yes", -4.0)]),
    (".", -0.02, [(".", -0.02), ("!", -4.1), (",", -5.5)]),
]
EXPECTED = (
    TokenLogprob("Yes", -0.105, (("Yes", -0.105), ("No", -2.4), (" yes", -4.0))),
    TokenLogprob(".", -0.02, ((".", -0.02), ("!", -4.1), (",", -5.5))),
)
ASK = GenerationParams(max_tokens=8, top_logprobs=3)


def make(base_url: str, mode: str = "chat") -> OpenAIBackend:
    return OpenAIBackend(name="judge", base_url=base_url, mode=mode, max_retries=0)


def generate(backend: OpenAIBackend, params: GenerationParams = ASK) -> Generation:
    async def go() -> Generation:
        async with backend:
            return await backend.generate("Is A better than B?", params)

    return asyncio.run(go())


# ---- the parameter ----


@pytest.mark.parametrize("k", [-1, 21, 100, True, 2.0, "5", None])
def test_top_logprobs_outside_0_to_20_is_an_error_naming_the_value(k: Any) -> None:
    with pytest.raises(ValueError, match=rf"top_logprobs .* got {k!r}"):
        GenerationParams(top_logprobs=k)


def test_top_logprobs_changes_no_other_setting() -> None:
    assert GenerationParams().top_logprobs == 0
    assert [GenerationParams(top_logprobs=k).top_logprobs for k in (0, 1, 20)] == [0, 1, 20]
    assert GenerationParams(top_logprobs=5).decoding_method == "greedy"
    sampled = GenerationParams(64, 0.7, 0.9, 1, ("###",), top_logprobs=5)  # positions unchanged
    assert sampled.decoding_method == "top_p_sampling(t=0.7,p=0.9,seed=1)"
    assert sampled.with_stop(("x",)).top_logprobs == 5
    assert Generation(text="a", model="m").logprobs is None
    assert TokenLogprob("a", -1.0).top == ()


# ---- what is asked ----


def test_chat_mode_asks_for_a_flag_and_a_count(scripted_server) -> None:
    generate(make(scripted_server.base_url))
    body = scripted_server.requests[-1].body
    assert scripted_server.requests[-1].path == "/v1/chat/completions"
    assert body["logprobs"] is True and body["top_logprobs"] == 3


def test_completion_mode_asks_with_the_legacy_count(scripted_server) -> None:
    generate(make(scripted_server.base_url, "completion"))
    body = scripted_server.requests[-1].body
    assert scripted_server.requests[-1].path == "/v1/completions"
    assert body["logprobs"] == 3 and "top_logprobs" not in body


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_nothing_is_asked_without_top_logprobs_nor_in_streams(scripted_server, mode: str) -> None:
    backend = make(scripted_server.base_url, mode)
    assert generate(backend, GenerationParams(max_tokens=8)).logprobs is None

    async def stream() -> str:
        async with backend:
            return "".join([piece async for piece in backend.stream("Is A better?", ASK)])

    assert asyncio.run(stream())
    for request in scripted_server.requests:
        assert "logprobs" not in request.body and "top_logprobs" not in request.body


def test_extra_body_may_not_set_the_logprobs_fields() -> None:
    with pytest.raises(ValueError, match="'logprobs'"):
        OpenAIBackend(name="m", base_url="http://127.0.0.1:1/v1", extra_body={"logprobs": True})


# ---- how replies are read ----


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_both_reply_shapes_become_token_logprobs(scripted_server, mode: str) -> None:
    scripted_server.script([("logprobs", "Yes.", TOKENS)])
    generation = generate(make(scripted_server.base_url, mode))
    assert generation.ok and generation.text == "Yes."
    assert generation.logprobs == EXPECTED


def test_alternatives_come_most_likely_first() -> None:
    """llama.cpp adds the chosen token after the top-k when sampling picked a less likely one."""
    completion = {
        "tokens": ["b"],
        "token_logprobs": [-3.0],
        "top_logprobs": [{"a": -0.1, "c": -2.0, "b": -3.0}],
    }
    chat = {"content": [{"token": "b", "logprob": -3.0, "top_logprobs": [{"token": "b", "logprob": -3.0}]}]}
    chat["content"][0]["top_logprobs"].insert(0, {"token": "x", "logprob": -9.0})
    assert choice_logprobs({"logprobs": completion}, chat=False)[0].top == (
        ("a", -0.1),
        ("c", -2.0),
        ("b", -3.0),
    )
    assert choice_logprobs({"logprobs": chat}, chat=True)[0].top == (("b", -3.0), ("x", -9.0))


@pytest.mark.parametrize(
    ("mode", "logprobs"),
    [
        ("chat", "not an object"),
        ("chat", {"content": "Yes"}),
        ("chat", {"content": [["Yes", -0.1]]}),
        ("chat", {"content": [{"token": "Yes", "logprob": None}]}),
        ("chat", {"content": [{"token": 7, "logprob": -0.1}]}),
        ("chat", {"content": [{"token": "Yes", "logprob": -0.1, "top_logprobs": {"Yes": -0.1}}]}),
        ("chat", {"tokens": ["Yes"], "token_logprobs": [-0.1]}),  # the completion shape on chat
        ("completion", {"tokens": ["Yes", "."], "token_logprobs": [-0.1]}),
        ("completion", {"tokens": ["Yes"], "token_logprobs": ["-0.1"], "top_logprobs": [None]}),
        ("completion", {"tokens": ["Yes"], "token_logprobs": [-0.1], "top_logprobs": [["Yes", -0.1]]}),
        ("completion", {"content": [{"token": "Yes", "logprob": -0.1}]}),  # the chat shape on completion
        ("completion", {"tokens": "Yes", "token_logprobs": -0.1}),
        ("completion", 42),
    ],
)
def test_malformed_logprobs_are_none_and_the_text_stays(scripted_server, caplog, mode, logprobs) -> None:
    scripted_server.script([("logprobs", "Yes.", logprobs)])
    with caplog.at_level(logging.DEBUG, logger="llmblend.backends.logprobs"):
        generation = generate(make(scripted_server.base_url, mode))
    assert generation.ok and generation.text == "Yes."
    assert generation.logprobs is None
    assert any("malformed logprobs" in r.message for r in caplog.records)


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_a_server_that_ignores_the_option_still_answers(scripted_server, caplog, mode: str) -> None:
    scripted_server.script([("say", "Yes."), ("logprobs", "Yes.", None)])
    with caplog.at_level(logging.DEBUG, logger="llmblend.backends.logprobs"):
        first, second = (
            generate(make(scripted_server.base_url, mode)),
            generate(make(scripted_server.base_url, mode)),
        )
    assert (first.text, first.logprobs, second.text, second.logprobs) == ("Yes.", None, "Yes.", None)
    assert any("no logprobs" in r.message for r in caplog.records)


def test_logprobs_not_asked_for_are_not_read(scripted_server) -> None:
    scripted_server.script([("logprobs", "Yes.", TOKENS)])
    assert generate(make(scripted_server.base_url), GenerationParams(max_tokens=8)).logprobs is None


def test_empty_answers_have_empty_logprobs_and_completion_top_may_be_null() -> None:
    assert choice_logprobs({"logprobs": {"content": []}}, chat=True) == ()
    completion = {"tokens": ["a"], "token_logprobs": [-0.5], "top_logprobs": None}
    assert choice_logprobs({"logprobs": completion}, chat=False) == (TokenLogprob("a", -0.5),)


def test_numpy_logprobs_of_in_process_llama_cpp_become_floats() -> None:
    np = pytest.importorskip("numpy")
    top = [{"token": "a", "logprob": np.float32(-0.5)}]
    chat = {"content": [{"token": "a", "logprob": np.float32(-0.5), "top_logprobs": top}]}
    (entry,) = choice_logprobs({"logprobs": chat}, chat=True)
    assert entry == TokenLogprob("a", -0.5, (("a", -0.5),))
    assert type(entry.logprob) is float and type(entry.top[0][1]) is float


# ---- llama.cpp in-process: what is passed (a stand-in model) ----


class FakeLlama:
    """Records the options of each call and answers with llama-cpp-python's reply shapes."""

    def __init__(self, logits_all: bool) -> None:
        self.logits_all = logits_all
        self.calls: list[dict[str, Any]] = []
        self.closed = False

    def _reply(self, options: dict[str, Any], chat: bool) -> dict[str, Any]:
        self.calls.append(options)
        asked = options.get("top_logprobs") if chat else options.get("logprobs")
        choice: dict[str, Any] = {"finish_reason": "stop", "logprobs": None}
        choice.update({"message": {"content": " Yes"}} if chat else {"text": " Yes"})
        if asked and chat:
            choice["logprobs"] = {"content": [{"token": " Yes", "logprob": -0.2, "top_logprobs": []}]}
        elif asked:
            choice["logprobs"] = {
                "tokens": [" Yes"],
                "token_logprobs": [-0.2],
                "top_logprobs": [{" Yes": -0.2}],
            }
        return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

    def create_chat_completion(self, messages: list, **options: Any) -> dict[str, Any]:
        return self._reply(options, chat=True)

    def create_completion(self, prompt: str, **options: Any) -> dict[str, Any]:
        return self._reply(options, chat=False)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("chat", [True, False])
def test_in_process_llama_reloads_once_with_logits_all_and_passes_the_count(monkeypatch, chat: bool) -> None:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend("local:smollm2-135m", chat=chat)
    loads: list[FakeLlama] = []
    monkeypatch.setattr(
        backend, "_load", lambda *, logits_all: loads.append(FakeLlama(logits_all)) or loads[-1]
    )

    async def calls() -> list[Generation]:
        params = [
            GenerationParams(4),
            GenerationParams(4, top_logprobs=2),
            GenerationParams(4, top_logprobs=2),
        ]
        return [await backend.generate("Is A better?", p) for p in (*params, GenerationParams(4))]

    plain, first, second, after = asyncio.run(calls())
    assert [load.logits_all for load in loads] == [False, True] and loads[0].closed
    assert plain.logprobs is None and after.logprobs is None
    assert (
        first.logprobs == second.logprobs == (TokenLogprob(" Yes", -0.2, () if chat else ((" Yes", -0.2),)),)
    )
    asked = loads[1].calls[0]
    if chat:
        assert asked["logprobs"] is True and asked["top_logprobs"] == 2
    else:
        assert asked["logprobs"] == 2 and "top_logprobs" not in asked
    assert "logprobs" not in loads[0].calls[0] and "logprobs" not in loads[1].calls[-1]


def test_in_process_llama_without_logprobs_support_answers_without_them(monkeypatch) -> None:
    pytest.importorskip("llama_cpp")
    monkeypatch.setattr("llmblend.backends.llama_cpp.supports_logprobs", lambda: False)
    backend = LlamaCppBackend("local:smollm2-135m", chat=True)
    loads: list[FakeLlama] = []
    monkeypatch.setattr(
        backend, "_load", lambda *, logits_all: loads.append(FakeLlama(logits_all)) or loads[-1]
    )
    generation = asyncio.run(backend.generate("Is A better?", GenerationParams(4, top_logprobs=2)))
    assert generation.ok and generation.text == "Yes" and generation.logprobs is None
    assert [load.logits_all for load in loads] == [False] and "logprobs" not in loads[0].calls[0]


# ---- real llama.cpp: the packaged SmolLM2 ----


def check_real(generation: Generation, k: int = 5) -> None:
    generation.raise_for_error()
    assert generation.text and generation.logprobs, generation
    assert 1 <= len(generation.logprobs) <= 3
    for entry in generation.logprobs:
        assert isinstance(entry, TokenLogprob) and isinstance(entry.token, str)
        assert entry.logprob <= 0 and math.isfinite(entry.logprob)
        # llama.cpp adds the chosen token when it is not in the top k, and merges tokens of one text
        assert 2 <= len(entry.top) <= k + 1
        assert (entry.token, entry.logprob) in entry.top
        assert all(lp <= 0 for _, lp in entry.top)
        assert [lp for _, lp in entry.top] == sorted((lp for _, lp in entry.top), reverse=True)
    assert "".join(entry.token for entry in generation.logprobs).strip() == generation.text.strip()


def test_a_real_llama_cpp_server_gives_logprobs_in_chat_and_completion_mode() -> None:
    pytest.importorskip("llama_cpp.server")
    from llmblend.backends.llama_server import LlamaServerBackend

    served = LlamaServerBackend("local:smollm2-135m", threads=2)
    params = GenerationParams(max_tokens=3, temperature=0.0, top_logprobs=5)

    async def ask() -> tuple[Generation, Generation]:
        try:
            chat = await served.generate("Is the sky blue? Answer Yes or No.", params)
            completion = OpenAIBackend(name="smollm2", base_url=served.base_url, mode="completion")
            async with completion:
                return chat, await completion.generate("The capital of France is", params)
        finally:
            await served.aclose()

    chat, completion = asyncio.run(ask())
    check_real(chat)
    check_real(completion)
    assert completion.logprobs[0].token == " Paris"


def test_real_in_process_llama_cpp_gives_the_same_logprobs_as_a_plain_answer() -> None:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend("local:smollm2-135m", threads=2)
    question = "Is the sky blue? Answer Yes or No."

    async def ask() -> tuple[Generation, Generation]:
        try:
            plain = await backend.generate(question, GenerationParams(max_tokens=3))
            return plain, await backend.generate(question, GenerationParams(max_tokens=3, top_logprobs=5))
        finally:
            await backend.aclose()

    plain, scored = asyncio.run(ask())
    check_real(scored)
    assert plain.logprobs is None and plain.text == scored.text  # reloading with logits_all changes no answer
