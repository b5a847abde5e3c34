"""A backend for any OpenAI-compatible HTTP server (LLM-Blender §2: candidates come from N LLMs).

One :class:`OpenAIBackend` is one model behind ``/v1/chat/completions`` or ``/v1/completions``: the
OpenAI API itself, vLLM, llama.cpp's ``llama-server``, TGI, Ollama, LM Studio. Each of the N LLMs
whose answers LLM-Blender ranks and fuses can be one of these.

Failures are typed (:mod:`llmblend.errors`): 401/403 is :class:`BackendAuthError`, 429
:class:`BackendRateLimitError`, 5xx and malformed replies :class:`BackendResponseError`, and transport
failures :class:`BackendTimeoutError` or :class:`BackendConnectionError`. Retryable ones are retried
with exponential backoff and full jitter, honouring ``Retry-After``. The API key is read from an
environment variable and never appears in logs, ``repr`` or error messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from llmblend.backends.base import Backend, Generation, GenerationParams, as_messages
from llmblend.backends.logprobs import choice_logprobs
from llmblend.errors import (
    BackendAuthError,
    BackendConnectionError,
    BackendError,
    BackendRateLimitError,
    BackendResponseError,
    BackendTimeoutError,
    MissingExtraError,
)
from llmblend.types import Prompt, prompt_text

try:  # the 'backends' extra installs httpx
    import httpx
except ImportError:  # pragma: no cover - depends on the environment
    try:  # httpx2, httpx's successor with the same API, which huggingface_hub>=2 brings along
        import httpx2 as httpx
    except ImportError as exc:
        raise MissingExtraError("httpx", "backends", "the OpenAI-compatible HTTP backend") from exc

log = logging.getLogger(__name__)

T = TypeVar("T")

MODES = ("chat", "completion")
#: Body fields the backend sets itself; ``extra_body`` may not set them.
_OWN_FIELDS = frozenset(
    {"model", "messages", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "stream"}
    | {"logprobs", "top_logprobs"}
)
_MAX_MESSAGE = 300  # characters of a server's error message kept in ours


class OpenAIBackend(Backend):
    """One model behind an OpenAI-compatible server; answers are candidates named ``name``.

    ``model`` is the id sent to the API (``name`` when not given); requests go to
    ``{base_url}/chat/completions`` (``mode="chat"``) or ``{base_url}/completions``
    (``mode="completion"``, where a conversation is flattened with :func:`~llmblend.types.prompt_text`).
    ``api_key_env`` names the environment variable holding the key, read once here and sent as
    ``Authorization: Bearer``. At most ``concurrency`` requests are in flight at once; retryable
    failures are tried again up to ``max_retries`` times, waiting
    ``uniform(0, min(backoff_max, backoff_base * 2**attempt))`` seconds (at least ``Retry-After`` on
    a 429, but never more than ``backoff_max``). ``extra_body`` adds fields to every request body
    (``{"top_k": 40}``, say) and ``headers`` adds HTTP headers.

    ``GenerationParams.top_logprobs = k`` asks for token logprobs (``"logprobs": true,
    "top_logprobs": k`` in chat mode, ``"logprobs": k`` in completion mode) and fills
    ``Generation.logprobs`` from the reply (:mod:`llmblend.backends.logprobs`); streams never ask.

    One backend serves one event loop at a time; used from a new loop it opens a new connection pool.
    """

    shared = True  # the server takes calls from other processes too: a Ray job limits them cluster-wide

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str | None = None,
        api_key_env: str | None = None,
        mode: Literal["chat", "completion"] = "chat",
        concurrency: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _check_settings(name, base_url, mode, concurrency, connect_timeout, read_timeout)
        _check_retries(max_retries, backoff_base, backoff_max)
        self.name = name
        self.model = model or name
        self.base_url = base_url.rstrip("/")
        self.mode = mode
        self.concurrency = concurrency
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.extra_body = _check_extra_body(extra_body)
        self.api_key_env = api_key_env
        self._api_key = _read_key(api_key_env)
        self._headers = _request_headers(headers, self._api_key)
        self.url = f"{self.base_url}/chat/completions" if mode == "chat" else f"{self.base_url}/completions"
        #: Overridable waits and jitter, so that tests can check backoff without sleeping.
        self._sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
        self._jitter: Callable[[float, float], float] = random.uniform
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        key = f", api_key_env={self.api_key_env!r}" if self.api_key_env else ""
        return (
            f"OpenAIBackend(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r}, "
            f"mode={self.mode!r}, concurrency={self.concurrency}{key})"
        )

    # ---- public protocol ----

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        """One answer, retried on retryable failures; raises a typed :class:`BackendError`."""
        body = self._body(prompt, params, stream=False)
        logprobs = params.top_logprobs > 0
        return await self._with_retries(lambda: self._post_once(body, logprobs))

    async def stream(self, prompt: Prompt, params: GenerationParams | None = None) -> AsyncIterator[str]:
        """The answer's text pieces from the server's SSE stream, skipping empty ones.

        Failures before the first byte are classified and retried like :meth:`generate`'s; any
        failure raises a typed :class:`BackendError`.
        """
        body = self._body(prompt, params or GenerationParams(), stream=True)
        _, slots = self._connection()
        response = await self._with_retries(lambda: self._open_stream(body, slots))
        try:
            async for piece in self._pieces(response):
                yield piece
        finally:
            await response.aclose()
            slots.release()

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
        self._client = self._slots = self._loop = None

    # ---- requests ----

    def _body(self, prompt: Prompt, params: GenerationParams, *, stream: bool) -> dict[str, Any]:
        """The JSON body of one request: ``extra_body`` plus the prompt and decoding settings."""
        body: dict[str, Any] = {**self.extra_body, "model": self.model}
        if self.mode == "chat":
            body["messages"] = [{"role": m.role, "content": m.content} for m in as_messages(prompt)]
        else:
            body["prompt"] = prompt_text(prompt)
        body.update(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_logprobs and not stream:
            body.update(self._logprobs_fields(params.top_logprobs))
        body["stream"] = stream
        return body

    def _logprobs_fields(self, k: int) -> dict[str, Any]:
        """How this mode asks for ``k`` alternatives per token: the chat API takes a flag and a count,
        the legacy completions API the count alone."""
        return {"logprobs": True, "top_logprobs": k} if self.mode == "chat" else {"logprobs": k}

    def _connection(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The client and the in-flight limit of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._slots is None:
            timeout = httpx.Timeout(
                connect=self.connect_timeout,
                read=self.read_timeout,
                write=self.read_timeout,
                pool=self.read_timeout,
            )
            # The semaphore is the one in-flight limit; the pool only keeps that many connections alive.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers)
            self._slots = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._client, self._slots

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, tried again after a backoff while it raises a retryable error."""
        retries = 0
        while True:
            try:
                return await attempt()
            except BackendError as exc:
                if not exc.retryable or retries >= self.max_retries:
                    raise
                wait = self._retry_wait(exc, retries)
                retries += 1
                log.warning(
                    "%s: %s; retry %d of %d in %.2f s", self.name, exc, retries, self.max_retries, wait
                )
                await self._sleep(wait)

    def _retry_wait(self, exc: BackendError, retries: int) -> float:
        """Full-jitter backoff; on a 429 at least the server's ``Retry-After``, at most ``backoff_max``."""
        wait = self._jitter(0.0, min(self.backoff_max, self.backoff_base * 2**retries))
        if isinstance(exc, BackendRateLimitError) and exc.retry_after is not None:
            wait = min(self.backoff_max, max(exc.retry_after, wait))
        return wait

    async def _post_once(self, body: dict[str, Any], logprobs: bool = False) -> Generation:
        """One POST, holding one of the ``concurrency`` slots while it is in flight."""
        client, slots = self._connection()
        async with slots:
            response = await self._send(client, body, stream=False)
        self._raise_for_status(response)
        return self._generation(_json_of(response, self.url), logprobs=logprobs)

    async def _open_stream(self, body: dict[str, Any], slots: asyncio.Semaphore) -> httpx.Response:
        """A streaming POST whose status is a success; the slot it takes is released by the caller."""
        client, _ = self._connection()
        await slots.acquire()
        try:
            response = await self._send(client, body, stream=True)
            if not response.is_success:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                self._raise_for_status(response)
        except BaseException:
            slots.release()
            raise
        return response

    async def _send(self, client: httpx.AsyncClient, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """Send one request; transport failures become typed errors."""
        try:
            request = client.build_request("POST", self.url, json=body)
            response = await client.send(request, stream=stream)
            if not stream:
                await response.aread()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        return response

    # ---- replies ----

    def _transport_error(self, exc: httpx.HTTPError) -> BackendError:
        """The typed error of an httpx failure that produced no response."""
        what = type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return BackendTimeoutError(f"connecting to {self.url} took over {self.connect_timeout:g} s")
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeoutError(f"no reply from {self.url} within {self.read_timeout:g} s ({what})")
        if isinstance(exc, httpx.TransportError):
            return BackendConnectionError(f"could not talk to {self.url}: {what}: {self._redact(str(exc))}")
        # A reply that could not be decoded (a broken gzip body, say): as transient as garbage JSON.
        return BackendResponseError(f"unreadable reply from {self.url}: {what}", retryable=True)

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Raise the typed error of a non-2xx response."""
        status = response.status_code
        if 200 <= status < 300:
            return
        message = self._redact(_server_message(response))
        if status in (401, 403):
            fix = (
                f"check the key in ${self.api_key_env}"
                if self.api_key_env
                else "the server wants a key: pass api_key_env=<name of the variable holding it>"
            )
            raise BackendAuthError(f"{self.url} refused the key ({status}: {message}); {fix}", status=status)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            after = "" if retry_after is None else f"; retry after {retry_after:g} s"
            raise BackendRateLimitError(
                f"{self.url} is rate limiting (429: {message}){after}", retry_after=retry_after, status=status
            )
        if status >= 500:
            raise BackendResponseError(
                f"{self.url} answered {status}: {message}", retryable=True, status=status
            )
        raise BackendResponseError(f"{self.url} rejected the request ({status}: {message})", status=status)

    def _generation(self, data: Any, *, logprobs: bool = False) -> Generation:
        """The :class:`Generation` of a parsed 200 reply; a reply without the answer is an error.

        With ``logprobs`` (they were asked for) the reply's token logprobs are read too: None when
        it has none or they are malformed, never an error."""
        choice = _first_choice(data)
        if self.mode == "chat":
            message = choice.get("message") if choice else None
            if not isinstance(message, dict) or "content" not in message:
                raise BackendResponseError(f"reply from {self.url} has no choices[0].message.content")
            text = message["content"]
        else:
            if not choice or "text" not in choice:
                raise BackendResponseError(f"reply from {self.url} has no choices[0].text")
            text = choice["text"]
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Generation(
            text="" if text is None else str(text),
            model=self.name,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            finish_reason=choice.get("finish_reason"),
            logprobs=choice_logprobs(choice, chat=self.mode == "chat", source=self.url) if logprobs else None,
        )

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[str]:
        """The non-empty text pieces of an SSE stream; a plain JSON reply is one piece."""
        if "text/event-stream" not in response.headers.get("content-type", ""):
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from exc
            text = self._generation(_json_of(response, self.url)).text
            if text:
                yield text
            return
        finished = False
        try:
            async for line in response.aiter_lines():
                payload = _sse_data(line)
                if payload is None:
                    continue
                if payload == "[DONE]":
                    return
                piece, finish_reason = self._delta(payload)
                finished = finished or finish_reason is not None
                if piece:
                    yield piece
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if not finished:
            raise BackendResponseError(
                f"stream from {self.url} ended mid-answer (no finish_reason, no [DONE])"
            )
        log.debug("%s: stream from %s ended without [DONE]", self.name, self.url)

    def _delta(self, payload: str) -> tuple[str | None, str | None]:
        """The text of one SSE chunk (``choices[0].delta.content`` in chat mode, ``choices[0].text``
        in completion mode) and its ``finish_reason`` (None until the last chunk)."""
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise BackendResponseError(f"stream from {self.url} sent a chunk that is not JSON") from None
        if isinstance(chunk, dict) and chunk.get("error"):
            raise BackendResponseError(f"stream from {self.url} failed: {self._redact(_error_text(chunk))}")
        choice = _first_choice(chunk)
        if not choice:
            return None, None  # usage-only or keep-alive chunks carry no text
        finish_reason = choice.get("finish_reason")
        if self.mode == "chat":
            delta = choice.get("delta")
            return (delta.get("content") if isinstance(delta, dict) else None), finish_reason
        return choice.get("text"), finish_reason

    def _redact(self, text: str) -> str:
        """``text`` with the API key, should a server echo it, replaced by ``***``."""
        return text.replace(self._api_key, "***") if self._api_key else text


# ---- checks of the constructor's arguments ----


def _check_settings(
    name: str, base_url: str, mode: str, concurrency: int, connect_timeout: float, read_timeout: float
) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty model name, got {name!r}")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(
            f"base_url must be an http(s) URL such as 'http://127.0.0.1:8080/v1', got {base_url!r}"
        )
    if mode not in MODES:
        raise ValueError(f"mode must be 'chat' or 'completion', got {mode!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer of at least 1, got {concurrency!r}")
    for label, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
        if not _positive(value):
            raise ValueError(f"{label} must be a positive number of seconds, got {value!r}")


def _check_retries(max_retries: int, backoff_base: float, backoff_max: float) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(
            f"max_retries must be an integer of at least 0 (0: never retry), got {max_retries!r}"
        )
    for label, value in (("backoff_base", backoff_base), ("backoff_max", backoff_max)):
        if not _positive(value) and value != 0:
            raise ValueError(f"{label} must be a number of seconds of at least 0, got {value!r}")


def _check_extra_body(extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra_body is None:
        return {}
    if not isinstance(extra_body, Mapping):
        raise ValueError(f"extra_body must be a dict of JSON fields, got {type(extra_body).__name__}")
    clash = sorted(_OWN_FIELDS & set(extra_body))
    if clash:
        raise ValueError(
            f"extra_body sets {', '.join(map(repr, clash))}, which the backend sets itself from "
            "its own arguments and GenerationParams; drop them from extra_body"
        )
    return dict(extra_body)


def _read_key(api_key_env: str | None) -> str | None:
    """The API key from the environment variable ``api_key_env``; an unset variable is an error."""
    if api_key_env is None:
        return None
    if not isinstance(api_key_env, str) or not api_key_env:
        raise ValueError(f"api_key_env must name an environment variable, got {api_key_env!r}")
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise ValueError(
            f"api_key_env names {api_key_env}, which is not set or empty; export {api_key_env}=<your key>, "
            "or pass api_key_env=None for a server that needs no key"
        )
    return key


def _request_headers(headers: Mapping[str, str] | None, api_key: str | None) -> dict[str, str]:
    extra = dict(headers or {})
    if api_key is not None:
        if any(k.lower() == "authorization" for k in extra):
            raise ValueError("headers sets Authorization and api_key_env gives a key too; keep only one")
        extra["Authorization"] = f"Bearer {api_key}"
    return extra


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


# ---- reading replies ----


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _json_of(response: httpx.Response, url: str) -> Any:
    """The parsed body of a 200 reply."""
    try:
        return json.loads(response.content)
    except ValueError:
        # Retryable on purpose: proxies and overloaded servers send HTML or cut bodies transiently.
        raise BackendResponseError(
            f"reply from {url} is not JSON: {_snippet(response)!r}",
            retryable=True,
            status=response.status_code,
        ) from None


def _first_choice(data: Any) -> dict[str, Any] | None:
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _server_message(response: httpx.Response) -> str:
    """The error message a server put in its body (OpenAI's ``{"error": {"message": ...}}``, or text)."""
    try:
        data = json.loads(response.content)
    except ValueError:
        return _snippet(response) or response.reason_phrase
    text = _error_text(data) if isinstance(data, dict) else ""
    return (text or _snippet(response))[:_MAX_MESSAGE]


def _error_text(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    for candidate in (error, data.get("message"), data.get("detail")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return ""


def _snippet(response: httpx.Response) -> str:
    return response.content[:_MAX_MESSAGE].decode("utf-8", "replace").strip()


def _sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line; None for comments, other fields and blank lines."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
