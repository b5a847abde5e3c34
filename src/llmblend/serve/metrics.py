"""``GET /metrics``: the gateway's Prometheus metrics (``prometheus-client``), one registry per app so
that several apps in one process (tests) count separately.

* ``llmblend_requests_total{route,model,status}``: requests answered;
* ``llmblend_stage_seconds{stage}``: wall time of generate, rank, fuse, guard and whole requests;
* ``llmblend_upstream_calls_total{backend,outcome}``: backend calls, ``ok`` or ``failed``;
* ``llmblend_tokens_total{backend,kind}``: prompt and completion tokens per backend (``fuser`` too);
* ``llmblend_ranker_batch_examples``: examples per ranker call (cross-request batching);
* ``llmblend_in_flight`` and ``llmblend_queued``: requests running and waiting now.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmblend.backends.base import Generation
from llmblend.errors import MissingExtraError
from llmblend.types import BlendResult

STAGES = ("generate", "rank", "fuse", "guard", "total")


class Metrics:
    """The counters and histograms above, in a registry of their own."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:  # pragma: no cover - the serve extra pulls it in
            raise MissingExtraError("prometheus-client", "serve", "the gateway's /metrics") from exc
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "llmblend_requests", "Requests answered.", ["route", "model", "status"], registry=self.registry
        )
        self.stage_seconds = prom.Histogram(
            "llmblend_stage_seconds",
            "Wall seconds per stage of a request.",
            ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.upstream = prom.Counter(
            "llmblend_upstream_calls",
            "Backend calls by outcome.",
            ["backend", "outcome"],
            registry=self.registry,
        )
        self.tokens = prom.Counter(
            "llmblend_tokens", "Tokens per backend.", ["backend", "kind"], registry=self.registry
        )
        self.ranker_batch = prom.Histogram(
            "llmblend_ranker_batch_examples",
            "Examples per ranker call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.in_flight = prom.Gauge("llmblend_in_flight", "Requests running now.", registry=self.registry)
        self.queued = prom.Gauge("llmblend_queued", "Requests waiting for a slot.", registry=self.registry)

    def generations(self, generations: Iterable[Generation]) -> None:
        for g in generations:
            self.upstream.labels(g.model, "ok" if g.ok else "failed").inc()
            self.tokens.labels(g.model, "prompt").inc(g.prompt_tokens)
            self.tokens.labels(g.model, "completion").inc(g.completion_tokens)

    def blend(self, result: BlendResult) -> None:
        """A finished blend's stage times and its fuser's tokens (backend calls go through
        :meth:`generations`)."""
        timings = result.timings
        for stage, seconds in zip(
            STAGES,
            (timings.generate_s, timings.rank_s, timings.fuse_s, timings.guard_s, timings.total_s),
            strict=True,
        ):
            if seconds > 0:
                self.stage_seconds.labels(stage).observe(seconds)
        fuse = result.tokens.get("fuse")
        if fuse is not None:
            self.tokens.labels("fuser", "prompt").inc(fuse.prompt_tokens)
            self.tokens.labels("fuser", "completion").inc(fuse.completion_tokens)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
