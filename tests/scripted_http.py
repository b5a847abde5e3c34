"""A scripted OpenAI-compatible server on 127.0.0.1, for tests of HTTP backends and what uses them.

``scripted_server`` answers ``POST /v1/chat/completions`` and ``POST /v1/completions``. By default
every request gets ``ok``: ``"echo: <last user message or prompt>"``. ``.script([...])`` sets how the
next requests are answered, in order; ``.script_for(model, [...])`` does so for requests whose body
names ``model``, before the general script. Behaviours:

- ``"ok"``, ``("ok", delay_s)``: the echo (cut to ``max_tokens`` words, then ``finish_reason`` is
  ``"length"``), with word counts as token usage; as SSE chunks, word by word, when ``stream`` is true
- ``("hang", seconds)``: no answer for ``seconds``, then the connection is closed
- an HTTP status (``500``, ``401``, ``400``...), or ``(status, message)``: an OpenAI-style JSON error
- ``(429, retry_after)``: 429 with that ``Retry-After`` (seconds, or a string sent as is)
- ``"garbage"``: 200 with the body ``not json{``; ``"missing_field"``: 200 JSON without ``choices``
- ``"close"``: the socket is closed with no reply
- ``("say", text)``, ``("say", text, delay_s)``: ``text`` instead of the echo (streamed word by word
  when asked)
- ``("reply", fn)``: ``fn(prompt)`` instead of the echo, ``prompt`` being the last user message (or
  the completion prompt): a server whose answer depends on what it is asked (e.g. a judge)
- ``("stream_then_close", n)``: a streamed answer that stops after ``n`` words without ``[DONE]``
- ``("logprobs", text, tokens)``: like ``("say", text)``, with ``choices[0].logprobs`` in the shape of
  the request's endpoint (chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}``;
  completion: ``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}``)
  built from ``tokens``, a list of ``(token, logprob, [(alt_token, alt_logprob), ...])``; anything
  else (a dict, a string, None) is sent as ``logprobs`` as it is, for malformed replies. Streams
  carry no logprobs

A client that hangs up while its request waits (``hang``, a delayed ``ok`` or ``say``) is counted in
``.hangups``: the test of a cancelled request sees that its upstream call was really dropped.

``.requests`` holds what was received (path, JSON body, lower-cased headers) and ``.max_in_flight`` the
most requests handled at once. ``refused_url`` is a base URL with nothing listening. The module is a
pytest plugin (``pytest_plugins`` in ``tests/conftest.py``), so every test folder has both fixtures.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Behaviour = Any  # "ok", ("ok", s), ("hang", s), int status, (status, message), ("logprobs", text, tokens)...


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server received: its path, parsed JSON body and lower-cased headers."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class ScriptedServer:
    """An OpenAI-compatible server whose next answers a test scripts; see the module docstring."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.hangups = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._script: deque[Behaviour] = deque()
        self._by_model: dict[str, deque[Behaviour]] = {}
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.scripted = self
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    def script(self, behaviours: Iterable[Behaviour]) -> ScriptedServer:
        """Answer the next requests with these behaviours, in order; then ``ok`` again."""
        with self._lock:
            self._script.extend(behaviours)
        return self

    def script_for(self, model: str, behaviours: Iterable[Behaviour]) -> ScriptedServer:
        """Like :meth:`script`, for requests whose body has ``"model": model``; used before the rest."""
        with self._lock:
            self._by_model.setdefault(model, deque()).extend(behaviours)
        return self

    def requests_for(self, model: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.body.get("model") == model]

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging handlers notice within 50 ms."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ---- used by the handler threads ----

    def _begin(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            queue = self._by_model.get(str(request.body.get("model")))
            if queue:
                return queue.popleft()
            return self._script.popleft() if self._script else "ok"

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _wait(self, seconds: float, connection: socket.socket | None = None) -> bool:
        """Sleep ``seconds`` in short steps, ending early when the server stops or the client on
        ``connection`` hangs up (counted in ``hangups``; then False is returned)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            step = min(0.05, max(0.0, deadline - time.monotonic()))
            if connection is None:
                time.sleep(step)
            elif select.select([connection], [], [], step)[0] and not connection.recv(1, socket.MSG_PEEK):
                with self._lock:
                    self.hangups += 1
                return False
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    scripted: ScriptedServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (timeouts) are part of the tests: no tracebacks on stderr."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows stderr of failing tests, and access lines are noise there."""

    def do_POST(self) -> None:
        scripted = self.server.scripted
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        headers = {k.lower(): v for k, v in self.headers.items()}
        behaviour = scripted._begin(RecordedRequest(self.path, body, headers))
        try:
            self._act(behaviour, body)
        except (ConnectionError, TimeoutError):
            pass  # the client gave up first
        finally:
            scripted._end()

    def _act(self, behaviour: Behaviour, body: dict[str, Any]) -> None:
        kind, *args = behaviour if isinstance(behaviour, tuple) else (behaviour,)
        arg = args[0] if args else None
        if kind == "ok":
            if self.server.scripted._wait(float(arg or 0), self.connection):
                self._ok(body)
        elif kind == "hang":
            self.server.scripted._wait(float(arg), self.connection)
            self.close_connection = True
        elif kind == "say":
            delay = float(args[1]) if len(args) > 1 else 0.0
            if self.server.scripted._wait(delay, self.connection):
                self._ok(body, text=str(arg))
        elif kind == "reply":
            chat = self.path.rstrip("/").endswith("/chat/completions")
            self._ok(body, text=str(arg(_prompt_of(body, chat))))
        elif kind == "logprobs":
            self._ok(body, text=str(arg), logprobs=args[1])
        elif kind == "stream_then_close":
            self._ok({**body, "stream": True}, cut_after=int(arg))
        elif kind == "close":
            self.close_connection = True
        elif kind == "garbage":
            self._send(200, b"not json{")
        elif kind == "missing_field":
            self._send_json(200, {"id": "x", "object": "chat.completion", "model": body.get("model")})
        elif kind == 429:
            extra = {} if arg is None else {"Retry-After": str(arg)}
            self._send_json(429, _error("rate limit reached", "rate_limit_error"), extra)
        elif isinstance(kind, int):
            self._send_json(kind, _error(arg or _DEFAULT_MESSAGES.get(kind, "server error"), str(kind)))
        else:
            raise ValueError(f"unknown scripted behaviour {behaviour!r}")

    def _ok(
        self,
        body: dict[str, Any],
        cut_after: int | None = None,
        text: str | None = None,
        logprobs: Any = None,
    ) -> None:
        chat = self.path.rstrip("/").endswith("/chat/completions")
        source = _prompt_of(body, chat)
        answer = f"echo: {source}" if text is None else text
        words = re.findall(r"\S+\s*", answer)  # each word with the whitespace after it
        limit = int(body.get("max_tokens") or len(words) or 1)
        finish = "length" if len(words) > limit else "stop"
        words = words[:limit]
        if finish == "length":
            words[-1] = words[-1].rstrip()
        text = "".join(words)
        if body.get("stream"):
            self._stream(words, chat, finish, cut_after)
            return
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        if logprobs is not None:
            choice["logprobs"] = _logprobs_reply(logprobs, chat) if isinstance(logprobs, list) else logprobs
        usage = {"prompt_tokens": len(source.split()), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        obj = "chat.completion" if chat else "text_completion"
        self._send_json(
            200, {"id": "x", "object": obj, "model": body.get("model"), "choices": [choice], "usage": usage}
        )

    def _stream(self, words: list[str], chat: bool, finish: str, cut_after: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.close_connection = True  # HTTP/1.0: the body ends when the socket closes
        if chat:
            self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        for piece in words[:cut_after]:
            field = {"delta": {"content": piece}} if chat else {"text": piece}
            self._event({"choices": [{"index": 0, **field, "finish_reason": None}]})
        if cut_after is not None:
            return  # the connection closes mid-answer
        end = {"delta": {}} if chat else {"text": ""}
        self._event({"choices": [{"index": 0, **end, "finish_reason": finish}]})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, chunk: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()

    def _send_json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers, content_type="application/json")

    def _send(
        self,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


_DEFAULT_MESSAGES = {
    400: "bad request: max_tokens is too large for this model",
    401: "invalid api key",
    403: "this key may not use this model",
    404: "no such model",
    500: "internal server error",
    503: "server overloaded",
}


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": None}}


def _logprobs_reply(tokens: list[tuple[str, float, list[tuple[str, float]]]], chat: bool) -> dict[str, Any]:
    """``choices[0].logprobs`` for ``(token, logprob, alternatives)`` triples, as OpenAI shapes it for
    the chat API or the legacy completions API."""
    if chat:
        content = [
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top],
            }
            for token, logprob, top in tokens
        ]
        return {"content": content, "refusal": None}
    offsets = [sum(len(t) for t, _, _ in tokens[:i]) for i in range(len(tokens))]
    return {
        "tokens": [token for token, _, _ in tokens],
        "token_logprobs": [logprob for _, logprob, _ in tokens],
        "top_logprobs": [dict(top) for _, _, top in tokens],
        "text_offset": offsets,
    }


def _prompt_of(body: dict[str, Any], chat: bool) -> str:
    """The last user message (chat) or the prompt (completion) of a request body."""
    if not chat:
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]) if users else ""


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A running :class:`ScriptedServer`; stopped (hanging handlers too) at teardown."""
    server = ScriptedServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (a port that was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
