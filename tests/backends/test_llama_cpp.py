"""The packaged GGUF models through real llama.cpp: in-process, behind llama_cpp.server, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmblend.backends.base import COMPLETION_TEMPLATE, GenerationParams
from llmblend.backends.config import llama_backend_class
from llmblend.backends.llama_cpp import LlamaCppBackend, resolve_model
from llmblend.backends.llama_server import LlamaServerBackend
from llmblend.data.mixinstruct import load_mixinstruct
from llmblend.errors import LlmblendError

pytest.importorskip("llama_cpp")

GREEDY = GenerationParams(max_tokens=24)


def test_unknown_local_names_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LlmblendError, match="local:smollm2-135m"):
        resolve_model("local:llama-70b")
    with pytest.raises(LlmblendError, match="does not exist"):
        LlamaCppBackend(str(tmp_path / "missing.gguf"))


def test_loading_models_in_parallel_threads_keeps_the_output(tmp_path: Path) -> None:
    """llama-cpp-python mutes stdout/stderr while loading, process-wide; parallel loads must not
    leave the process mute (they did before LOAD_LOCK: `llmblend generate` printed nothing)."""
    script = tmp_path / "loads.py"
    script.write_text(
        "import asyncio, sys\n"
        "from llmblend.backends.base import GenerationParams\n"
        "from llmblend.backends.llama_cpp import LlamaCppBackend\n"
        "models = ['local:smollm2-135m', 'local:gemma3-270m'] * 2\n"
        "backends = [LlamaCppBackend(m, threads=1) for m in models]\n"
        "async def main():\n"
        "    await asyncio.gather(*(b.generate('Hi', GenerationParams(max_tokens=1)) for b in backends))\n"
        "asyncio.run(main())\n"
        "print('still here'); print('and here', file=sys.stderr)\n"
    )
    for _ in range(3):
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "still here" in result.stdout and "and here" in result.stderr


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


@pytest.mark.slow
def test_a_server_process_gives_the_same_answers_over_real_http(smollm2: LlamaCppBackend) -> None:
    served = LlamaServerBackend("local:smollm2-135m", threads=2)
    sampled = GenerationParams(24, temperature=0.9, seed=3)

    async def ask():
        try:
            answers = [await served.generate("Name a primary colour.", p) for p in (GREEDY, sampled)]
            pieces = [piece async for piece in served.stream("Name a primary colour.", GREEDY)]
            return answers, pieces, served.base_url
        finally:
            await served.aclose()

    (greedy, seeded), pieces, base_url = asyncio.run(ask())
    assert base_url.startswith("http://127.0.0.1:")
    in_process = asyncio.run(smollm2.generate("Name a primary colour.", GREEDY))
    assert greedy.raise_for_error().text == in_process.text  # same llama.cpp, same settings
    assert (
        seeded.raise_for_error().text == asyncio.run(smollm2.generate("Name a primary colour.", sampled)).text
    )
    assert greedy.completion_tokens == in_process.completion_tokens and greedy.prompt_tokens > 5
    assert len(pieces) > 3 and "".join(pieces).strip() == greedy.text
    assert served._process is None  # stopped


@pytest.mark.slow
def test_the_server_dies_with_its_parent_even_on_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        "import asyncio, sys\n"
        "from llmblend.backends.llama_server import LlamaServerBackend\n"
        "async def main():\n"
        "    backend = LlamaServerBackend('local:smollm2-135m')\n"
        "    await backend.start()\n"
        "    print(backend._process.pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child}").exists() and _state(child) != "Z" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or _state(child) == "Z", "the server outlived its parent"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_auto_mode_gives_a_server_to_a_model_with_several_threads() -> None:
    assert llama_backend_class("auto", 2) is LlamaServerBackend
    assert llama_backend_class("auto", 1) is LlamaCppBackend
    assert llama_backend_class("server", 1) is LlamaServerBackend
    assert llama_backend_class("in-process", 4) is LlamaCppBackend


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
