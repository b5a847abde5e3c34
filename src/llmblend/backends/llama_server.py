"""A local GGUF model behind its own ``llama_cpp.server`` on 127.0.0.1 (LLM-Blender §2 candidates).

The backend starts ``python -m llama_cpp.server`` for one model on a free local port when first
used, talks to it through :class:`~llmblend.backends.openai_http.OpenAIBackend` (real HTTP,
streaming, typed errors), and stops it on :meth:`aclose` — or when this process dies, even by
``kill -9`` (Linux: the child gets SIGTERM through ``PR_SET_PDEATHSIG``).

Why a server process rather than llama.cpp in a thread of this process: llama.cpp's decoding threads
run at full speed only when the model is driven from a process's main thread; called from a worker
thread (which an asyncio program needs) two decoding threads were no faster than one here
(``bench/bench_generation.py``: SmolLM2 decodes 82 vs 105 tokens/s on 2 cores). A server process drives
it from its main thread, and several models decode in parallel processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from llmblend.backends.base import COMPLETION_STOP, COMPLETION_TEMPLATE, Backend, Generation, GenerationParams
from llmblend.backends.llama_cpp import REPEAT_PENALTY, has_chat_template, resolve_model
from llmblend.errors import BackendConnectionError, MissingExtraError
from llmblend.types import Prompt, prompt_text

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _answers(base_url: str) -> bool:
    """Whether an OpenAI-compatible server lists its models yet."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(f"{base_url}/models")).status_code == 200
    except httpx.TransportError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Ask Linux to send SIGTERM to the server when its parent dies, however it dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class LlamaServerBackend(Backend):
    """A GGUF model (``local:NAME`` or a path) served by a ``llama_cpp.server`` child process.

    ``threads`` is llama.cpp's decoding threads in that process; ``startup_timeout`` how long to
    wait for the server to answer. Base models get :data:`COMPLETION_TEMPLATE` through
    ``/v1/completions``; models with a chat template are asked through ``/v1/chat/completions``.
    ``GenerationParams.top_logprobs`` works in both: the server keeps every token's logits (its
    ``logits_all`` default) and answers in OpenAI's shapes (:mod:`llmblend.backends.logprobs`).
    """

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        threads: int | None = None,
        n_ctx: int = 2048,
        chat: bool | None = None,
        completion_template: str = COMPLETION_TEMPLATE,
        startup_timeout: float = 180.0,
    ) -> None:
        self.path, packaged_chat = resolve_model(model)
        self.name = name or model.removeprefix("local:")
        self.threads = threads or 1
        self.n_ctx = n_ctx
        self.chat = chat if chat is not None else packaged_chat
        self.completion_template = completion_template
        self.startup_timeout = startup_timeout
        self.concurrency = 1  # llama_cpp.server decodes one request at a time
        self._process: subprocess.Popen | None = None
        self._client = None
        self._log_path: Path | None = None
        self._starting: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"LlamaServerBackend(name={self.name!r}, path={str(self.path)!r}, threads={self.threads})"

    @property
    def base_url(self) -> str | None:
        return self._client.base_url if self._client else None

    # ---- the server process

    def _command(self, port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "llama_cpp.server", "--model", str(self.path)),
            *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(self.n_ctx)),
            *("--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)),
        ]

    def _spawn(self) -> int:
        try:
            import llama_cpp.server  # noqa: F401 - only checks that the extra is installed
        except ImportError:
            raise MissingExtraError(
                "llama-cpp-python[server]", "local", "the llama.cpp server backend"
            ) from None
        port = _free_port()
        handle, name = tempfile.mkstemp(prefix=f"llmblend-{self.name}-", suffix=".log")
        self._log_path = Path(name)
        with open(handle, "w") as sink:
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            self._process = subprocess.Popen(
                self._command(port), stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, preexec_fn=preexec
            )
        log.info("started llama_cpp.server for %s on port %d (pid %d)", self.name, port, self._process.pid)
        return port

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")[-1500:]

    async def _wait_ready(self, client) -> None:
        started = time.monotonic()
        while True:
            if self._process.poll() is not None:
                raise BackendConnectionError(
                    f"llama_cpp.server for {self.name} exited with code {self._process.returncode}:\n"
                    f"{self._log_tail()}",
                    backend=self.name,
                )
            if await _answers(client.base_url):
                log.info("%s ready after %.1f s", self.name, time.monotonic() - started)
                return
            if time.monotonic() - started > self.startup_timeout:
                self._stop()
                raise BackendConnectionError(
                    f"llama_cpp.server for {self.name} did not answer within {self.startup_timeout:.0f} s",
                    backend=self.name,
                )
            await asyncio.sleep(0.1)

    async def start(self) -> None:
        """Start the server and wait until it answers (done on first use otherwise)."""
        from llmblend.backends.openai_http import OpenAIBackend

        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            if self._client is not None and self._process is not None and self._process.poll() is None:
                return
            if self.chat is None:
                self.chat = await asyncio.to_thread(has_chat_template, self.path)
            # spawned from the event loop's thread: Linux sends PR_SET_PDEATHSIG when the *thread*
            # that started the child ends, and a worker thread would end long before this process
            port = self._spawn()
            client = OpenAIBackend(
                name=self.name,
                base_url=f"http://127.0.0.1:{port}/v1",
                mode="chat" if self.chat else "completion",
                concurrency=1,
                connect_timeout=5.0,
                read_timeout=600.0,
                max_retries=1,
                extra_body={"repeat_penalty": REPEAT_PENALTY},
            )
            await self._wait_ready(client)
            self._client = client

    def _stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    # ---- the protocol

    def _ask(self, prompt: Prompt, params: GenerationParams) -> tuple[Prompt, GenerationParams]:
        if self.chat:
            return prompt, params
        return self.completion_template.format(prompt=prompt_text(prompt)), params.with_stop(COMPLETION_STOP)

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        await self.start()
        generation = await self._client._generate(*self._ask(prompt, params))
        generation.text = generation.text.strip()
        return generation

    async def stream(self, prompt: Prompt, params: GenerationParams | None = None) -> AsyncIterator[str]:
        await self.start()
        async for piece in self._client.stream(*self._ask(prompt, params or GenerationParams())):
            yield piece

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await asyncio.to_thread(self._stop)
