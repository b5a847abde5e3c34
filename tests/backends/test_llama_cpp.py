"""The packaged GGUF models through real llama.cpp: in-process, behind llama_cpp.server, and the CLI."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmblend.backends.base import COMPLETION_TEMPLATE, GenerationParams
from llmblend.backends.llama_cpp import LlamaCppBackend, resolve_model
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.errors import LlmblendError

pytest.importorskip("llama_cpp")

GREEDY = GenerationParams(max_tokens=24)


def test_unknown_local_names_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LlmblendError, match="local:smollm2-135m"):
        resolve_model("local:llama-70b")
    with pytest.raises(LlmblendError, match="does not exist"):
        LlamaCppBackend(str(tmp_path / "missing.gguf"))


@pytest.fixture(scope="module")
def smollm2() -> LlamaCppBackend:
    return LlamaCppBackend("local:smollm2-135m", threads=2)


@pytest.mark.slow
def test_smollm2_answers_through_its_chat_template(smollm2: LlamaCppBackend) -> None:
    async def calls():
        greedy = [await smollm2.generate("Name a primary colour.", GREEDY) for _ in range(2)]
        seeded = [
            await smollm2.generate("Name a primary colour.", GenerationParams(24, temperature=0.9, seed=s))
            for s in (1, 1, 2)
        ]
        streamed = [piece async for piece in smollm2.stream("Name a primary colour.", GREEDY)]
        return greedy, seeded, streamed

    greedy, seeded, streamed = asyncio.run(calls())
    first = greedy[0].raise_for_error()
    assert smollm2.uses_chat_template
    assert first.text and first.text == greedy[1].text  # greedy is deterministic
    assert first.prompt_tokens > 5 and 0 < first.completion_tokens <= 24
    assert first.finish_reason in ("stop", "length")
    assert seeded[0].text == seeded[1].text  # the same seed repeats
    assert len({s.text for s in seeded}) == 2  # another seed samples another answer
    assert len(streamed) > 3 and "".join(streamed).strip() == first.text


@pytest.mark.slow
def test_gemma_base_model_gets_a_completion_prompt_and_stops() -> None:
    gemma = LlamaCppBackend("local:gemma3-270m", threads=2)
    generation = asyncio.run(gemma.generate("List three fruits.", GenerationParams(max_tokens=64)))
    generation.raise_for_error()
    assert not gemma.uses_chat_template
    assert gemma.completion_prompt("List three fruits.") == COMPLETION_TEMPLATE.format(
        prompt="List three fruits."
    )
    assert generation.text and "### Instruction" not in generation.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(base_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base_url}/models", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_llama_cpp_server_on_localhost_through_the_http_backend(tmp_path: Path) -> None:
    from llmblend.backends.openai_http import OpenAIBackend

    path, _ = resolve_model("local:smollm2-135m")
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1"]
    log = tmp_path / "server.log"
    with log.open("w") as sink:  # the server logs a lot: a pipe nobody reads would fill and block it
        server = subprocess.Popen(
            [*command, "--port", str(port), "--n_threads", "2"], stdout=sink, stderr=sink
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while not _ready(base_url):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        backend = OpenAIBackend(name="smollm2-135m", base_url=base_url, max_retries=0)

        async def ask():
            answer = await backend.generate("Name a primary colour.", GREEDY)
            pieces = [p async for p in backend.stream("Name a primary colour.", GREEDY)]
            await backend.aclose()
            return answer, pieces

        answer, pieces = asyncio.run(ask())
    finally:
        server.terminate()
        server.wait(timeout=30)
    answer.raise_for_error()
    assert answer.text and answer.completion_tokens > 0 and answer.prompt_tokens > 5
    assert len(pieces) > 3 and "".join(pieces).strip() == answer.text.strip()


@pytest.mark.slow
def test_llmblend_generate_with_the_embedded_default(tmp_path: Path) -> None:
    """No config, no network: the packaged models, two samples each, into a valid MixInstruct file."""
    instructions = tmp_path / "questions.jsonl"
    instructions.write_text(json.dumps({"id": "q1", "instruction": "Name a primary colour."}) + "\n")
    out = tmp_path / "mix.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "llmblend", "generate", "-i", str(instructions), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (example,) = load_mixinstruct(out)
    assert sorted((c.model, c.decoding_method) for c in example.candidates) == sorted(
        (m, f"top_p_sampling(t=0.7,p=0.95,seed={s})") for m in ("smollm2-135m", "gemma3-270m") for s in (0, 1)
    )
    assert all(c.text for c in example.candidates)
    assert all(e["completion_tokens"] > 0 for e in example.extra["generation"])
    assert "smollm2-135m" in result.stdout and "latency" in result.stdout  # the per-backend table
