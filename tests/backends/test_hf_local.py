"""HFBackend on a tiny random Llama: batching, padding, seeds, templates, stop strings, failures as data."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from llmblend.backends.base import Generation, GenerationParams
from llmblend.backends.hf_local import COMPLETION_TEMPLATE, HFBackend
from llmblend.errors import BackendError, BackendResponseError, MissingExtraError
from llmblend.types import Message

pytest.importorskip("torch")
pytest.importorskip("transformers")

GREEDY = GenerationParams(max_tokens=16)
PROMPTS = ["hi", "what is the capital of france? explain it in a few long words", "write python code"]


def make_backend(folder: Path, **kwargs) -> HFBackend:
    kwargs.setdefault("batch_size", 4)
    return HFBackend(folder, threads=1, **kwargs)


def record_generate(backend: HFBackend, monkeypatch: pytest.MonkeyPatch, fail_if=None) -> list[int]:
    """Wrap the model's ``generate``: returns the list of batch sizes it was called with.

    ``fail_if(input_ids, attention_mask)`` true makes the call raise ``RuntimeError("boom")``.
    """
    model = backend.load()._model
    original = model.generate
    calls: list[int] = []

    def generate(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        if fail_if is not None and fail_if(kwargs["input_ids"], kwargs["attention_mask"]):
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    return calls


def one_by_one(backend: HFBackend, prompts: list, params: GenerationParams) -> list[Generation]:
    return [backend.generate_batch([prompt], params)[0] for prompt in prompts]


def ascii_stop(text: str, start: int = 2) -> tuple[str, int]:
    """A 2-character printable ASCII stop string from ``text`` (not at its end) and where it first occurs."""
    for k in range(start, len(text) - 4):
        stop = text[k : k + 2]
        if stop.isascii() and stop.isprintable() and not stop.isspace() and text.find(stop) == k:
            return stop, k
    raise AssertionError(f"no usable stop string in {text!r}")


def test_greedy_is_repeatable_with_counts_and_max_tokens(tiny_causal_lm: Path) -> None:
    backend = make_backend(tiny_causal_lm)
    first, again = backend.generate_batch(PROMPTS, GREEDY), backend.generate_batch(PROMPTS, GREEDY)
    assert [g.text for g in first] == [g.text for g in again]
    tokenizer = backend._tokenizer
    for prompt, generation in zip(PROMPTS, first, strict=True):
        assert generation.ok and generation.text and generation.model == tiny_causal_lm.name
        assert generation.prompt_tokens == len(
            tokenizer(backend.format_prompt(prompt), add_special_tokens=False)["input_ids"]
        )
        assert generation.completion_tokens == GREEDY.max_tokens
        assert generation.finish_reason == "length"
    short = backend.generate_batch(PROMPTS, GenerationParams(max_tokens=3))
    for long, cut in zip(first, short, strict=True):
        assert cut.completion_tokens == 3 and cut.finish_reason == "length"
        assert long.text.startswith(cut.text.rstrip("\ufffd"))  # a prefix, up to a split UTF-8 char


def test_eos_ends_the_answer_with_stop(tiny_causal_lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = make_backend(tiny_causal_lm)
    model = backend.load()._model
    original = model.generate
    outputs = []

    def generate(**kwargs):
        outputs.append(original(**kwargs))
        return outputs[-1]

    monkeypatch.setattr(model, "generate", generate)
    full = backend.generate_batch(["hi"], GREEDY)[0]
    new_tokens = outputs[0][0, -GREEDY.max_tokens :].tolist()
    fake_eos = new_tokens[5]  # the 6th new token (or an earlier copy of it) now ends the answer
    ends_at = new_tokens.index(fake_eos)
    model.generation_config.eos_token_id = [model.generation_config.eos_token_id, fake_eos]
    ended = backend.generate_batch(["hi"], GREEDY)[0]
    assert ended.finish_reason == "stop" and ended.completion_tokens == ends_at + 1
    assert ended.text == backend._tokenizer.decode(new_tokens[:ends_at], skip_special_tokens=True)
    assert full.text.startswith(ended.text.rstrip("\ufffd"))


def test_batched_equals_one_by_one(tiny_causal_lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left padding must not change greedy answers: prompts of different lengths in one batch."""
    backend = make_backend(tiny_causal_lm)
    alone = one_by_one(backend, PROMPTS, GREEDY)
    calls = record_generate(backend, monkeypatch)
    together = backend.generate_batch(PROMPTS, GREEDY)
    assert calls == [3]
    assert len({g.prompt_tokens for g in together}) == 3
    for a, b in zip(alone, together, strict=True):
        assert (a.text, a.prompt_tokens, a.completion_tokens, a.finish_reason) == (
            b.text,
            b.prompt_tokens,
            b.completion_tokens,
            b.finish_reason,
        )


def test_batches_are_cut_at_batch_size(tiny_causal_lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = make_backend(tiny_causal_lm, batch_size=2)
    calls = record_generate(backend, monkeypatch)
    assert all(g.ok for g in backend.generate_batch([*PROMPTS, "one more"], GREEDY))
    assert calls == [2, 2]


def test_seeded_sampling_repeats_and_ignores_the_batch(tiny_causal_lm: Path) -> None:
    backend = make_backend(tiny_causal_lm)
    seed1 = GenerationParams(max_tokens=16, temperature=1.0, seed=1)
    seed2 = GenerationParams(max_tokens=16, temperature=1.0, seed=2)
    texts = [g.text for g in backend.generate_batch(PROMPTS, seed1)]
    assert texts == [g.text for g in backend.generate_batch(PROMPTS, seed1)]
    assert texts == [g.text for g in one_by_one(backend, PROMPTS, seed1)]  # same seed alone or batched
    assert texts != [g.text for g in backend.generate_batch(PROMPTS, seed2)]
    assert texts != [g.text for g in backend.generate_batch(PROMPTS, GREEDY)]
    nucleus = GenerationParams(max_tokens=16, temperature=0.7, top_p=0.5, seed=1)
    assert all(g.ok and g.text for g in backend.generate_batch(PROMPTS, nucleus))


def test_chat_template_formats_prompts(tiny_causal_lm: Path) -> None:
    backend = make_backend(tiny_causal_lm)
    assert backend.has_chat_template
    assert backend.format_prompt("hi") == "<|user|>\nhi<|eos|>\n<|assistant|>\n"
    conversation = [Message("system", "be short"), Message("user", "hi")]
    assert (
        backend.format_prompt(conversation)
        == "<|system|>\nbe short<|eos|>\n<|user|>\nhi<|eos|>\n<|assistant|>\n"
    )


def test_completion_template_without_chat_template(tiny_causal_lm_plain: Path) -> None:
    backend = make_backend(tiny_causal_lm_plain)
    assert not backend.has_chat_template
    assert backend.format_prompt("hi") == "### Instruction:\nhi\n\n### Response:\n"
    assert backend.format_prompt("hi") == COMPLETION_TEMPLATE.format(prompt="hi")
    conversation = [Message("user", "hi"), Message("assistant", "yes"), Message("user", "why")]
    assert (
        backend.format_prompt(conversation)
        == "### Instruction:\nuser: hi\n\nassistant: yes\n\nuser: why\n\n### Response:\n"
    )
    custom = make_backend(tiny_causal_lm_plain, completion_template="Q: {prompt}\nA:")
    assert custom.format_prompt("hi") == "Q: hi\nA:"
    with pytest.raises(ValueError, match="prompt"):
        make_backend(tiny_causal_lm_plain, completion_template="no slot")


def test_stop_strings_cut_the_answer(tiny_causal_lm: Path) -> None:
    backend = make_backend(tiny_causal_lm)
    params = GenerationParams(max_tokens=24)
    full = backend.generate_batch(["hi"], params)[0]
    stop, at = ascii_stop(full.text)
    cut = backend.generate_batch(["hi"], GenerationParams(max_tokens=24, stop=(stop, "never-there")))[0]
    assert cut.text == full.text[:at]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # generation stopped early, not just the text


def test_completion_stop_applies_only_without_chat_template(
    tiny_causal_lm: Path, tiny_causal_lm_plain: Path
) -> None:
    full = make_backend(tiny_causal_lm_plain).generate_batch(["hi"], GREEDY)[0]
    stop, at = ascii_stop(full.text)
    plain = make_backend(tiny_causal_lm_plain, completion_stop=(stop,)).generate_batch(["hi"], GREEDY)[0]
    assert (plain.text, plain.finish_reason) == (full.text[:at], "stop")
    chat_full = make_backend(tiny_causal_lm).generate_batch(["hi"], GREEDY)[0]
    chat = make_backend(tiny_causal_lm, completion_stop=(chat_full.text[3:6],)).generate_batch(
        ["hi"], GREEDY
    )[0]
    assert chat.text == chat_full.text


def test_concurrent_calls_share_a_batch(tiny_causal_lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = make_backend(tiny_causal_lm)
    prompts = [*PROMPTS, "give one good answer"]
    expected = [g.text for g in one_by_one(backend, prompts, GREEDY)]
    calls = record_generate(backend, monkeypatch)

    async def concurrently() -> list[Generation]:
        results = await asyncio.gather(*(backend.generate(p, GREEDY) for p in prompts))
        await backend.aclose()
        return results

    results = asyncio.run(concurrently())
    assert len(calls) < len(prompts)
    assert [g.text for g in results] == expected
    assert all(g.ok and g.latency_s > 0 for g in results)
    assert backend.concurrency == 4


def test_async_calls_work_across_event_loops_and_after_aclose(tiny_causal_lm: Path) -> None:
    backend = make_backend(tiny_causal_lm)
    expected = backend.generate_batch(["hi"], GREEDY)[0].text
    for _ in range(2):  # each asyncio.run is a new loop: the consumer task must follow it
        assert asyncio.run(backend.generate("hi", GREEDY)).text == expected

    async def close_then_use() -> Generation:
        await backend.aclose()
        assert backend._model is None
        return await backend.generate("hi", GREEDY)

    assert asyncio.run(close_then_use()).text == expected


def test_too_long_prompt_fails_alone(tiny_causal_lm: Path) -> None:
    backend = make_backend(tiny_causal_lm)
    too_long = "the capital of france " * 200  # far over the 256 positions of the tiny model
    results = backend.generate_batch(["hi", too_long, "write python code"], GREEDY)
    assert [g.ok for g in results] == [True, False, True]
    failed = results[1]
    assert failed.text == "" and "bad_response" in failed.error and "256" in failed.error
    assert isinstance(failed.failure, BackendResponseError)
    assert [g.text for g in (results[0], results[2])] == [
        g.text for g in one_by_one(backend, ["hi", "write python code"], GREEDY)
    ]
    via_async = asyncio.run(backend.generate(too_long, GREEDY))  # failures stay data on the async path
    assert not via_async.ok and isinstance(via_async.failure, BackendResponseError)


def test_a_failing_generate_costs_only_its_item(
    tiny_causal_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(tiny_causal_lm)
    expected = one_by_one(backend, PROMPTS, GREEDY)
    poison = expected[1].prompt_tokens  # a row of this length makes generate raise
    calls = record_generate(
        backend, monkeypatch, fail_if=lambda ids, mask: bool((mask.sum(1) == poison).any())
    )
    results = backend.generate_batch(PROMPTS, GREEDY)
    assert calls == [3, 1, 1, 1]  # the batch failed, then each prompt alone
    assert [g.ok for g in results] == [True, False, True]
    assert "RuntimeError: boom" in results[1].error
    assert [results[0].text, results[2].text] == [expected[0].text, expected[2].text]


def test_load_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = HFBackend(tmp_path / "no-such-model")
    assert missing.name == "no-such-model"
    with pytest.raises(BackendError, match="cannot load"):
        missing.load()
    result = asyncio.run(missing.generate("hi"))  # an async call gets the failure as data
    assert not result.ok and "cannot load" in result.error
    with pytest.raises(ValueError, match="dtype"):
        HFBackend(tmp_path, dtype="int3")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"llmblend\[ml\]"):
        HFBackend(tmp_path).load()
