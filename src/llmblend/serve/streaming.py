"""Answers in OpenAI's shapes: a ``chat.completion``, or Server-Sent Events of
``chat.completion.chunk`` s ending with ``data: [DONE]``.

How streaming meets the guard: the guard compares the *whole* fused answer with the top candidate,
so a blend's answer is streamed once it is settled (generated, ranked, fused and guarded), in word
pieces. Time to the first token is then the blend's time (bench/bench_gateway.py measures it next
to a proxied backend, whose tokens are passed on as the backend writes them). With details asked for
(``llmblend.details``), the stream opens at once and carries the candidates as they arrive and the
ranking as ``llmblend`` fields on chunks without choices, which strict clients ignore.

:meth:`ChatStream.respond` runs the work in a task of its own that writes events to a queue: a
failure before the first event is still an HTTP error status (502, 504, 503); a client that hangs up
cancels the task, and with it every upstream call of the request.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from llmblend.serve.errors import GatewayError
from llmblend.serve.limits import ConcurrencyGate
from llmblend.serve.protocol import chunk_body, completion_body, usage_body
from llmblend.serve.run import ChatJob, Outcome, Progress

_END = object()


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


def pieces(text: str) -> list[str]:
    """``text`` cut into word pieces (each word with the whitespace after it; nothing lost)."""
    found = re.findall(r"\s*\S+\s*", text)
    return found if "".join(found) == text else [text]


class ChatStream:
    """One chat request's answer, as a completion or as an event stream."""

    def __init__(self, job: ChatJob, details: bool, include_usage: bool) -> None:
        self.job = job
        self.details = details
        self.include_usage = include_usage

    def completion(self, outcome: Outcome) -> dict[str, Any]:
        return completion_body(
            self.job.id,
            self.job.model,
            outcome.text,
            finish_reason=outcome.finish_reason,
            usage=usage_body(outcome.prompt_tokens, outcome.completion_tokens),
            created=self.job.created,
            details=outcome.details if self.details else None,
        )

    def _chunk(self, **fields: Any) -> bytes:
        return sse(chunk_body(self.job.id, self.job.model, self.job.created, **fields))

    def answer_events(self, outcome: Outcome) -> list[bytes]:
        """The settled answer as chunks: the role, the text in word pieces, the finish, then usage
        and details when asked for, then ``[DONE]``."""
        events = [self._chunk(delta={"role": "assistant", "content": ""})]
        events += [self._chunk(delta={"content": piece}) for piece in pieces(outcome.text)]
        events.append(self._chunk(delta={}, finish_reason=outcome.finish_reason))
        if self.include_usage:
            events.append(self._chunk(usage=usage_body(outcome.prompt_tokens, outcome.completion_tokens)))
        if self.details:
            events.append(self._chunk(details={"event": "done", **outcome.details}))
        events.append(sse("[DONE]"))
        return events

    async def respond(
        self,
        gate: ConcurrencyGate,
        work: Callable[[Progress], Awaitable[Outcome]],
        disconnected: Callable[[], Awaitable[None]],
    ) -> StreamingResponse:
        """Start ``work`` (holding a place in ``gate``) and stream its events; an error before the
        first event is raised here, as an HTTP status."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        progress = Progress(sink=self._sink(queue) if self.details else None)
        if self.details:  # the stream opens at once, so a client sees a live answer
            queue.put_nowait(self._chunk(delta={"role": "assistant", "content": ""}))
        producer = asyncio.create_task(self._produce(gate, work, progress, queue))
        return await self._open(queue, producer, disconnected)

    async def relay(
        self,
        gate: ConcurrencyGate,
        text_pieces: Callable[[], AsyncIterator[str]],
        deadline_s: float,
        disconnected: Callable[[], Awaitable[None]],
    ) -> StreamingResponse:
        """Stream a backend's answer as it writes it (a proxied model); a failure before its first
        piece is raised here (502), a later one ends the stream with an error event."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        producer = asyncio.create_task(self._relay(gate, text_pieces, deadline_s, queue))
        return await self._open(queue, producer, disconnected)

    async def _open(
        self,
        queue: asyncio.Queue[Any],
        producer: asyncio.Task[None],
        disconnected: Callable[[], Awaitable[None]],
    ) -> StreamingResponse:
        """The response once the first event is in (an error before it is raised as a status). Until
        then a client that hangs up cancels ``producer`` here; once the response streams, Starlette
        notices the hang-up and cancels :meth:`_drain`, which cancels ``producer``."""
        watcher = asyncio.ensure_future(disconnected())
        first_event = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({watcher, first_event}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not first_event.done():
            first_event.cancel()
            producer.cancel()
            raise GatewayError(499, "the client closed the request", code="client_closed")
        first = first_event.result()
        if isinstance(first, GatewayError):
            raise first
        return StreamingResponse(
            self._drain(first, queue, producer),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _relay(
        self,
        gate: ConcurrencyGate,
        text_pieces: Callable[[], AsyncIterator[str]],
        deadline_s: float,
        queue: asyncio.Queue[Any],
    ) -> None:
        from llmblend.errors import BackendError
        from llmblend.serve.errors import deadline_exceeded, upstream_failed

        started = False
        try:
            async with gate.hold(), asyncio.timeout(deadline_s):
                async for piece in text_pieces():
                    if not started:
                        started = True
                        await queue.put(self._chunk(delta={"role": "assistant", "content": ""}))
                    await queue.put(self._chunk(delta={"content": piece}))
            if not started:
                await queue.put(self._chunk(delta={"role": "assistant", "content": ""}))
            await queue.put(self._chunk(delta={}, finish_reason="stop"))
            await queue.put(sse("[DONE]"))
        except BackendError as exc:
            await queue.put(upstream_failed([f"{self.job.model}: {exc}"]))
        except TimeoutError:
            await queue.put(deadline_exceeded(deadline_s))
        except GatewayError as exc:
            await queue.put(exc)
        except Exception as exc:
            await queue.put(GatewayError(500, f"internal error: {type(exc).__name__}", type="server_error"))
        finally:
            await queue.put(_END)

    def _sink(self, queue: asyncio.Queue[Any]) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def tell(event: dict[str, Any]) -> None:
            await queue.put(self._chunk(details=event))

        return tell

    async def _produce(
        self,
        gate: ConcurrencyGate,
        work: Callable[[Progress], Awaitable[Outcome]],
        progress: Progress,
        queue: asyncio.Queue[Any],
    ) -> None:
        try:
            async with gate.hold():
                outcome = await work(progress)
            events = self.answer_events(outcome)
            if progress.sink is not None:
                events = events[1:]  # the role chunk went first
            for event in events:
                await queue.put(event)
        except GatewayError as exc:
            await queue.put(exc)
        except Exception as exc:  # the stream must end with an error event, not hang
            await queue.put(GatewayError(500, f"internal error: {type(exc).__name__}", type="server_error"))
        finally:
            await queue.put(_END)

    async def _drain(
        self,
        first: bytes,
        queue: asyncio.Queue[Any],
        producer: asyncio.Task[None],
    ) -> AsyncIterator[bytes]:
        try:
            item = first
            while item is not _END:
                if isinstance(item, GatewayError):  # after the stream opened: an error event
                    yield sse(item.body())
                    yield sse("[DONE]")
                    return
                yield item
                item = await queue.get()
        finally:
            if not producer.done():
                producer.cancel()
