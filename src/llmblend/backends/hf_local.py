"""A local Hugging Face causal LM as a generation backend (LLM-Blender §2: candidates from N LLMs).

:class:`HFBackend` loads any causal LM folder or hub id with ``AutoModelForCausalLM`` and answers
prompts in batches: one ``model.generate`` call per chunk of up to ``batch_size`` left-padded
prompts. Concurrent async calls are gathered into such batches by one consumer task, and the model
runs in a single worker thread, so the event loop never blocks.

Prompts are formatted with the tokenizer's chat template when it has one; base models get the plain
:data:`COMPLETION_TEMPLATE` (an Alpaca-style instruction/response frame) and its stop string.

Sampling (``temperature > 0``) is done by a logits processor with one ``torch.Generator`` per row:
a seeded prompt gives the same answer alone or in any batch, whatever else runs beside it.

The model is loaded lazily, on the first call (in the worker thread for async calls), so building a
backend is cheap and never blocks an event loop; :meth:`HFBackend.load` loads it eagerly.
Streaming uses the base class fallback (the whole answer as one piece).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from llmblend.backends.base import (
    COMPLETION_STOP,
    COMPLETION_TEMPLATE,
    Backend,
    Generation,
    GenerationParams,
    as_messages,
)
from llmblend.errors import BackendError, BackendResponseError, LlmblendError, MissingExtraError
from llmblend.hf_loading import check_dtype, import_ml, load_lm
from llmblend.types import Prompt, prompt_text

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


#: What needs the ML extra, in a :class:`~llmblend.errors.MissingExtraError`.
PURPOSE: Final = "the Hugging Face backend"


@dataclass(slots=True)
class _Row:
    """One prompt of a batch: its position in the caller's list, token ids and settings."""

    index: int
    ids: list[int]
    params: GenerationParams


@dataclass(slots=True)
class _Request:
    """An async call waiting for the consumer task."""

    prompt: Prompt
    params: GenerationParams
    future: asyncio.Future[Generation]


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits ``(batch, vocab)`` with everything outside each row's nucleus of mass ``top_p`` at -inf."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before > top_p, float("-inf"))
    return _neg_inf_like(logits).scatter(-1, order, sorted_logits)


def _neg_inf_like(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like ``tensor`` filled with -inf."""
    return tensor.new_full(tensor.shape, float("-inf"))


class _RowSampler:
    """A logits processor that samples each row with its own generator and makes the pick certain.

    ``generate`` runs greedily around it: the returned scores ``(batch, vocab)`` are 0 at the sampled
    token and -inf elsewhere. Rows with a seed draw from ``torch.Generator(seed)``, so their answers do
    not depend on the other rows of the batch; rows without one draw from torch's global generator.
    """

    def __init__(self, temperature: float, top_p: float, seeds: Sequence[int | None], device: Any) -> None:
        import torch

        self.torch = torch
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [
            None if seed is None else torch.Generator(device=device).manual_seed(seed) for seed in seeds
        ]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        torch = self.torch
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            logits = _top_p_filter(logits, self.top_p)
        probs = logits.softmax(dim=-1)
        picked = torch.cat(
            [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)]
        )
        return _neg_inf_like(scores).scatter(1, picked[:, None], 0.0)


class _StopStrings:
    """A stopping criterion: a row is done once its new text holds one of ``stops``.

    Only the last ``window`` new tokens are decoded each step (enough to hold any stop string);
    ``done_at[i]`` is the number of new tokens row ``i`` had when it stopped.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], start: int) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.start = start
        self.window = 2 * max(len(s.encode()) for s in stops) + 4
        self.done_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        length = input_ids.shape[1]
        tails = self.tokenizer.batch_decode(
            input_ids[:, max(self.start, length - self.window) :], skip_special_tokens=True
        )
        done = [any(stop in tail for stop in self.stops) for tail in tails]
        for row, hit in enumerate(done):
            if hit:
                self.done_at.setdefault(row, length - self.start)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """``text`` up to the earliest stop string, or None when it holds none."""
    hits = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return text[: min(hits)] if hits else None


class HFBackend(Backend):
    """A causal LM run locally with transformers, answering prompts in left-padded batches.

    ``path`` is a model folder or a hub id (with ``gguf_file``, a GGUF file in it, dequantised by
    transformers), a ``.gguf`` path or ``local:NAME`` (:func:`~llmblend.hf_loading.load_lm` loads
    it); ``name`` defaults to the folder name. ``dtype`` is one of
    :data:`~llmblend.hf_loading.DTYPES`. ``threads`` sets torch's (process-wide) CPU thread count
    when the model loads. ``batch_size`` bounds the prompts of one ``generate`` call and is also
    :attr:`concurrency`, so callers keep enough calls in flight to fill a batch. Without a chat
    template, prompts are framed by ``completion_template`` (with ``{prompt}``) and
    ``completion_stop`` ends the answer.

    Decoding settings other than greedy/temperature/top-p (repetition penalty, say) come from the
    model's own ``generation_config``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 8,
        gguf_file: str | None = None,
        threads: int | None = None,
        completion_template: str = COMPLETION_TEMPLATE,
        completion_stop: Sequence[str] = COMPLETION_STOP,
    ) -> None:
        check_dtype(dtype)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None for torch's default), got {threads}")
        if "{prompt}" not in completion_template:
            raise ValueError(f"completion_template must contain '{{prompt}}', got {completion_template!r}")
        self.path = str(path)
        self.name = name or Path(self.path.rstrip("/")).name
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.concurrency = batch_size
        self.gguf_file = gguf_file
        self.threads = threads
        self.completion_template = completion_template
        self.completion_stop = tuple(completion_stop)
        self._lock = threading.RLock()  # one load or generate at a time, from any thread
        self._model: Any = None
        self._tokenizer: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None

    # ---- loading ----

    def load(self) -> HFBackend:
        """Load the tokenizer and model now (else the first call does); BackendError if that fails."""
        with self._lock:
            if self._model is None:
                self._tokenizer, self._model = self._load()
        return self

    def _load(self) -> tuple[Any, Any]:
        started = time.perf_counter()
        try:
            loaded = load_lm(
                self.path,
                gguf_file=self.gguf_file,
                kind="causal",
                dtype=self.dtype,
                device=self.device,
                threads=self.threads,
                what="causal LM",
                purpose=PURPOSE,
            )
        except MissingExtraError:
            raise
        except LlmblendError as exc:  # a wrong path, an unknown architecture, no GPU: all mean "no model"
            raise BackendError(str(exc), backend=self.name) from exc
        log.info(
            "%s: loaded %s on %s in %.1fs", self.name, self.path, self.device, time.perf_counter() - started
        )
        return loaded.tokenizer, loaded.model

    @property
    def has_chat_template(self) -> bool:
        """Whether prompts go through the tokenizer's chat template (loads the model)."""
        self.load()
        return bool(getattr(self._tokenizer, "chat_template", None))

    @property
    def max_positions(self) -> int | None:
        """The model's context length (prompt plus answer, in tokens), when its config gives one."""
        self.load()
        config = self._model.config
        return getattr(config.get_text_config(), "max_position_embeddings", None)

    # ---- prompt formatting ----

    def format_prompt(self, prompt: Prompt) -> str:
        """The text the model reads: the chat template with a generation prompt, else the completion frame.

        Without a chat template a conversation is flattened by :func:`~llmblend.types.prompt_text`.
        """
        if self.has_chat_template:
            messages = [{"role": m.role, "content": m.content} for m in as_messages(prompt)]
            return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.completion_template.replace("{prompt}", prompt_text(prompt))

    def _encode(self, index: int, prompt: Prompt, params: GenerationParams) -> _Row:
        """Format and tokenize one prompt; BackendResponseError when it cannot be answered."""
        chat = self.has_chat_template
        try:
            text = self.format_prompt(prompt)
        except Exception as exc:  # a chat template that rejects the conversation (a system turn, say)
            raise BackendResponseError(
                f"cannot format the prompt for {self.name}: {type(exc).__name__}: {exc}", backend=self.name
            ) from exc
        ids = self._tokenizer(text, add_special_tokens=not chat)["input_ids"]
        limit = self.max_positions
        if limit is not None and len(ids) >= limit:
            raise BackendResponseError(
                f"the prompt is {len(ids)} tokens but {self.name} reads at most {limit} (prompt plus "
                "answer); shorten the prompt",
                backend=self.name,
            )
        if not chat:
            params = params.with_stop(self.completion_stop)
        return _Row(index, ids, params)

    # ---- batched generation ----

    def generate_batch(
        self, prompts: Sequence[Prompt], params: GenerationParams | None = None
    ) -> list[Generation]:
        """One :class:`Generation` per prompt, in order; failures are returned as data (``error`` set).

        Runs ``ceil(len(prompts) / batch_size)`` ``generate`` calls (blocking; async callers use
        :meth:`generate`). Raises only when the model cannot be loaded.
        """
        params = params or GenerationParams()
        return self._run([(prompt, params) for prompt in prompts])

    def _run(self, requests: Sequence[tuple[Prompt, GenerationParams]]) -> list[Generation]:
        """Answer ``(prompt, params)`` pairs, grouping equal settings (seeds aside) into batches."""
        with self._lock:
            self.load()
            results: list[Generation | None] = [None] * len(requests)
            rows: list[_Row] = []
            for index, (prompt, params) in enumerate(requests):
                try:
                    rows.append(self._encode(index, prompt, params))
                except BackendError as exc:
                    results[index] = Generation.failed(self.name, exc)
            for chunk in self._chunks(rows):
                for row, generation in zip(chunk, self._run_chunk(chunk), strict=True):
                    results[row.index] = generation
            return [g for g in results if g is not None]

    def _chunks(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows grouped by settings (seeds may differ), sorted by length, cut into ``batch_size`` chunks."""
        groups: dict[GenerationParams, list[_Row]] = {}
        for row in rows:
            groups.setdefault(replace(row.params, seed=None), []).append(row)
        chunks = []
        for group in groups.values():
            group.sort(key=lambda row: len(row.ids))
            chunks += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        return chunks

    def _run_chunk(self, chunk: list[_Row]) -> list[Generation]:
        """Generate for one chunk; if ``generate`` fails, retry its rows alone so only the culprit fails."""
        started = time.perf_counter()
        try:
            return self._generate_chunk(chunk)
        except Exception as exc:  # OOM, a bad input, a model bug: one item's failure, not the caller's
            if len(chunk) > 1:
                log.warning(
                    "%s: a batch of %d failed (%s: %s); retrying one by one",
                    self.name,
                    len(chunk),
                    type(exc).__name__,
                    exc,
                )
                return [generation for row in chunk for generation in self._run_chunk([row])]
            failure = BackendResponseError(f"generate failed: {type(exc).__name__}: {exc}", backend=self.name)
            return [Generation.failed(self.name, failure, time.perf_counter() - started)]

    def _generate_chunk(self, chunk: list[_Row]) -> list[Generation]:
        """One ``model.generate`` call over a left-padded ``(len(chunk), width)`` batch."""
        torch, _ = import_ml(PURPOSE)
        started = time.perf_counter()
        params = chunk[0].params
        width = max(len(row.ids) for row in chunk)
        input_ids, attention_mask = self._left_pad([row.ids for row in chunk], width, torch)
        max_new = params.max_tokens
        if self.max_positions is not None:
            max_new = max(1, min(max_new, self.max_positions - width))
        stops = [stop for stop in params.stop if stop]
        stopper = _StopStrings(self._tokenizer, stops, width) if stops else None
        sampler = (
            None
            if params.greedy
            else _RowSampler(
                params.temperature, params.top_p, [r.params.seed for r in chunk], input_ids.device
            )
        )
        with torch.inference_mode():
            output = self._model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                pad_token_id=self._pad_id,
                eos_token_id=sorted(self._eos_ids) or None,
                logits_processor=[sampler] if sampler else None,
                stopping_criteria=[stopper] if stopper else None,
            )
        new_tokens = output[:, width:].tolist()
        latency = time.perf_counter() - started
        done_at = stopper.done_at if stopper else {}
        return [
            self._finish(row, tokens, done_at.get(i), latency)
            for i, (row, tokens) in enumerate(zip(chunk, new_tokens, strict=True))
        ]

    def _left_pad(self, rows: list[list[int]], width: int, torch: Any) -> tuple[Any, Any]:
        """``(input_ids, attention_mask)``, both ``(len(rows), width)``, padded on the left."""
        ids = [[self._pad_id] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        device = self._model.device
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def _finish(self, row: _Row, tokens: list[int], done_at: int | None, latency: float) -> Generation:
        """The answer of one row: new tokens up to eos or a stop string, decoded."""
        count, reason, eos_ids = len(tokens), "length", self._eos_ids
        eos_at = next((k for k, token in enumerate(tokens) if token in eos_ids), None)
        if eos_at is not None:
            tokens, count, reason = tokens[:eos_at], eos_at + 1, "stop"
        if done_at is not None:
            count = min(count, done_at)
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        cut = _cut_at_stop(text, row.params.stop)
        if cut is not None:
            text, reason = cut, "stop"
        return Generation(
            text=text,
            model=self.name,
            prompt_tokens=len(row.ids),
            completion_tokens=count,
            latency_s=latency,
            finish_reason=reason,
        )

    @property
    def _pad_id(self) -> int:
        tokenizer = self._tokenizer
        if tokenizer.pad_token_id is not None:
            return tokenizer.pad_token_id
        return min(self._eos_ids) if self._eos_ids else 0

    @property
    def _eos_ids(self) -> set[int]:
        """End-of-sequence ids of the generation config (several for chat models) and the tokenizer."""
        configured = self._model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self._tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    # ---- async: concurrent calls share batches ----

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        """Queue the call for the consumer task, which batches it with whatever else is waiting."""
        queue = self._ensure_worker()
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Request(prompt, params, future))
        generation = await future
        if generation.failure is not None:
            raise generation.failure
        return generation

    def _ensure_worker(self) -> asyncio.Queue[_Request]:
        """The request queue of this event loop, with its consumer task running."""
        loop = asyncio.get_running_loop()
        if (
            self._queue is None
            or self._worker is None
            or self._worker.done()
            or self._worker.get_loop() is not loop
        ):
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._consume(self._queue), name=f"llmblend-hf-{self.name}")
        return self._queue

    async def _consume(self, queue: asyncio.Queue[_Request]) -> None:
        """Take what is waiting (up to ``batch_size`` calls), run it in the model thread, repeat."""
        batch: list[_Request] = []
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < self.batch_size and not queue.empty():
                    batch.append(queue.get_nowait())
                batch = [r for r in batch if not r.future.done()]  # callers that gave up
                if batch:
                    await self._serve(batch)
                batch = []
        finally:
            closed = BackendError(f"{self.name} was closed before answering", backend=self.name)
            while not queue.empty():
                batch.append(queue.get_nowait())
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(closed)

    async def _serve(self, batch: list[_Request]) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmblend-hf")
        requests = [(r.prompt, r.params) for r in batch]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, requests)
        except Exception as exc:  # the model did not load: every call of the batch gets the error
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for request, generation in zip(batch, results, strict=True):
            if not request.future.done():
                request.future.set_result(generation)

    async def aclose(self) -> None:
        """Stop the consumer task (waiting calls get a BackendError), the thread, and drop the model."""
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done() and worker.get_loop() is asyncio.get_running_loop():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        await asyncio.to_thread(self._unload)  # waits for a generate still running in the thread
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _unload(self) -> None:
        with self._lock:
            self._model = self._tokenizer = None
