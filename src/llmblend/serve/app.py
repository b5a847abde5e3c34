"""The OpenAI-compatible gateway app: :func:`create_app` builds it from :class:`ServeSettings`.

Routes: ``POST /v1/chat/completions`` (profiles and proxies, streamed or not), ``GET /v1/models``,
``POST /v1/rank`` and ``POST /v1/compare`` (the ranker as a service), ``POST /v1/feedback``,
``GET /health`` (liveness), ``GET /ready`` (models loaded), ``GET /metrics`` (Prometheus) and the
playground page at ``/``. ``/v1`` routes need an API key when keys are configured and are rate
limited per key. The heavy parts (:class:`~llmblend.serve.gateway.Gateway`) load in the lifespan,
in a worker thread, so ``/health`` answers at once and ``/ready`` says when the models are in;
requests that arrive earlier wait for them. Shutdown closes every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from llmblend.errors import BackendError, MissingExtraError
from llmblend.serve.config import ServeConfig
from llmblend.serve.errors import (
    GatewayError,
    bad_request,
    deadline_exceeded,
    install_error_handlers,
    not_found,
    upstream_failed,
)
from llmblend.serve.gateway import Gateway
from llmblend.serve.limits import ApiKeys, BodyLimit, ConcurrencyGate, RateLimiter
from llmblend.serve.protocol import (
    ChatCompletionRequest,
    CompareRequest,
    FeedbackRequest,
    RankRequest,
    completion_id,
    model_list_body,
)
from llmblend.serve.ranking import compare_answers, rank_candidates, record_feedback
from llmblend.serve.run import (
    ChatJob,
    Outcome,
    Progress,
    failures,
    fallback_outcome,
    request_params,
    run_profile,
    run_proxy,
)
from llmblend.serve.streaming import ChatStream

log = logging.getLogger(__name__)

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
except ImportError as exc:  # pragma: no cover - the serve extra pulls it in
    raise MissingExtraError("fastapi", "serve", "llmblend serve") from exc


@dataclass
class ServeSettings:
    """What :func:`create_app` needs: the config, the API keys, and how to build the gateway
    (``build``: a function of the config; default :meth:`Gateway.build`, tests give parts)."""

    config: ServeConfig
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    build: Callable[[ServeConfig], Gateway] = Gateway.build


class GatewayState:
    """The app's shared state: the gateway once loaded (or why it failed), the gate and the limiter."""

    def __init__(self, settings: ServeSettings) -> None:
        limits = settings.config.limits
        self.settings = settings
        self.gateway: Gateway | None = None
        self.load_error: str | None = None
        self.loaded = asyncio.Event()
        self.gate = ConcurrencyGate(limits.max_concurrent, limits.max_queue)
        self.limiter = RateLimiter(limits.rate_per_minute)
        self.started = int(time.time())

    async def load(self) -> None:
        try:
            self.gateway = await asyncio.to_thread(self.settings.build, self.settings.config)
        except Exception as exc:
            log.exception("the gateway failed to load")
            self.load_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.loaded.set()

    async def ready_gateway(self) -> Gateway:
        """The gateway, waiting for it to load; 503 when it failed to."""
        await self.loaded.wait()
        if self.gateway is None:
            raise GatewayError(503, f"the gateway failed to load: {self.load_error}", type="server_error")
        return self.gateway


def create_app(settings: ServeSettings) -> FastAPI:
    """The gateway as a FastAPI app (see the module docstring)."""
    state = GatewayState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load())
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            if state.gateway is not None:
                await state.gateway.aclose()

    app = FastAPI(title="llmblend gateway", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.llmblend = state
    install_error_handlers(app)
    _add_middleware(app, settings.config, state)
    _add_service_routes(app, state)
    _add_v1_routes(app, state)
    return app


def _add_middleware(app: FastAPI, config: ServeConfig, state: GatewayState) -> None:
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=config.limits.max_body_bytes)
    app.add_middleware(RequestCounter, state=state)


class RequestCounter:
    """ASGI middleware: counts every response by route, model (``request.state.model``) and status."""

    def __init__(self, app: Any, state: GatewayState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def watched(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            gateway = self.state.gateway
            if gateway is not None and scope["path"].startswith("/v1/"):
                model = scope.get("state", {}).get("model", "-")
                gateway.metrics.requests.labels(scope["path"], model, str(status["code"])).inc()


def _add_service_routes(app: FastAPI, state: GatewayState) -> None:
    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        page = resources.files("llmblend.serve").joinpath("static/playground.html").read_text("utf-8")
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if state.gateway is not None:
            return JSONResponse({"status": "ready", "models": state.gateway.config.model_names})
        if state.load_error is not None:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        gateway = await state.ready_gateway()
        gateway.metrics.in_flight.set(state.gate.running)
        gateway.metrics.queued.set(state.gate.waiting)
        payload, content_type = gateway.metrics.exposition()
        return Response(payload, media_type=content_type)


def _add_v1_routes(app: FastAPI, state: GatewayState) -> None:
    keys = state.settings.api_keys
    limits = state.settings.config.limits

    async def client(request: Request) -> str:
        who = keys.check(request.headers.get("authorization"))
        state.limiter.take(who)
        return who

    @app.get("/v1/models")
    async def models(who: str = Depends(client)) -> dict[str, Any]:
        gateway = await state.ready_gateway()
        names = gateway.config.model_names
        return model_list_body(names, {n: gateway.owner(n) for n in names}, state.started)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request, who: str = Depends(client)) -> Any:
        request.state.model = body.model
        gateway = await state.ready_gateway()
        _check_chat_limits(body, limits)
        profile = gateway.profile(body.model)
        if profile is None and body.model not in gateway.backends:
            known = ", ".join(gateway.config.model_names)
            raise not_found(f"the model {body.model!r} does not exist here; known: {known}")
        job = ChatJob(completion_id(), body.model, body.prompt, body.overrides())
        stream = ChatStream(job, body.llmblend.details, body.include_usage)
        if body.stream and profile is None:
            return await stream.relay(
                state.gate, _proxy_pieces(gateway, job), limits.deadline_s, lambda: _disconnect(request)
            )
        if body.stream:
            return await stream.respond(
                state.gate,
                lambda progress: _answer(gateway, job, progress),
                lambda: _disconnect(request),
            )
        outcome = await _until_disconnected(request, _held(state, _answer(gateway, job, Progress())))
        return stream.completion(outcome)

    @app.post("/v1/rank")
    async def rank(body: RankRequest, who: str = Depends(client)) -> dict[str, Any]:
        gateway = await state.ready_gateway()
        if len(body.candidates) > limits.max_candidates:
            raise bad_request(
                f"{len(body.candidates)} candidates; at most {limits.max_candidates} per request",
                param="candidates",
            )
        return await rank_candidates(gateway, body)

    @app.post("/v1/compare")
    async def compare(body: CompareRequest, who: str = Depends(client)) -> dict[str, Any]:
        gateway = await state.ready_gateway()
        return await compare_answers(gateway, body)

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest, who: str = Depends(client)) -> dict[str, Any]:
        gateway = await state.ready_gateway()
        return await record_feedback(gateway, body)


def _check_chat_limits(body: ChatCompletionRequest, limits: Any) -> None:
    if len(body.messages) > limits.max_messages:
        raise bad_request(
            f"{len(body.messages)} messages; at most {limits.max_messages} per request", param="messages"
        )
    asked = body.requested_max_tokens
    if asked is not None and asked > limits.max_tokens:
        raise bad_request(
            f"max_tokens {asked} is above this gateway's limit of {limits.max_tokens}", param="max_tokens"
        )


async def _held(state: GatewayState, work: Coroutine[Any, Any, Outcome]) -> Outcome:
    try:
        async with state.gate.hold():
            return await work
    finally:
        work.close()  # never started when the gate refused


async def _answer(gateway: Gateway, job: ChatJob, progress: Progress) -> Outcome:
    """A request's outcome within the deadline (504, or the best answer so far when configured);
    502 when every backend failed."""
    limits = gateway.config.limits
    profile = gateway.profile(job.model)
    try:
        async with asyncio.timeout(limits.deadline_s):
            if profile is None:
                return _proxy_outcome(job.model, await run_proxy(gateway, job.model, job))
            outcome = await run_profile(gateway, profile, job, progress)
    except TimeoutError:
        fallback = fallback_outcome(progress, profile, limits.deadline_s) if profile is not None else None
        if fallback is None or not limits.deadline_fallback:
            raise deadline_exceeded(limits.deadline_s) from None
        outcome = fallback
    if outcome is None:
        raise upstream_failed(failures(progress))
    await _log_traffic(gateway, job, outcome)
    return outcome


def _proxy_pieces(gateway: Gateway, job: ChatJob) -> Callable[[], AsyncIterator[str]]:

    slot = gateway.slots[job.model][0]
    (params,) = request_params([slot], job.overrides)
    calls = gateway.metrics.upstream

    async def counted() -> AsyncIterator[str]:
        try:
            async for piece in slot.backend.stream(job.prompt, params):
                yield piece
        except BackendError:
            calls.labels(job.model, "failed").inc()
            raise
        calls.labels(job.model, "ok").inc()

    return counted


def _proxy_outcome(name: str, generation: Any) -> Outcome:
    if not generation.ok:
        raise upstream_failed([f"{name}: {generation.error}"])
    details = {"profile": name, "kind": "proxy", "latency_s": round(generation.latency_s, 4)}
    return Outcome(
        generation.text,
        generation.finish_reason or "stop",
        generation.prompt_tokens,
        generation.completion_tokens,
        details,
    )


async def _log_traffic(gateway: Gateway, job: ChatJob, outcome: Outcome) -> None:
    if gateway.traffic is None or outcome.result is None:
        return
    from llmblend.serve.traffic import blend_record

    result = outcome.result
    try:
        record = blend_record(
            job.id,
            job.prompt,
            result.candidates,
            answer=outcome.text,
            returned=result.returned,
            profile=job.model,
            created=job.created,
        )
        await asyncio.to_thread(gateway.traffic.append, record)
    except (OSError, ValueError):
        log.exception("could not append to the traffic log; the answer is still returned")


async def _until_disconnected(request: Request, work: Coroutine[Any, Any, Outcome]) -> Outcome:
    """``work``'s result, cancelling it (and so its upstream calls) when the client hangs up."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
    if task.cancelled():
        raise GatewayError(499, "the client closed the request", code="client_closed")
    return task.result()


async def _disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


__all__ = ["ServeSettings", "create_app"]
