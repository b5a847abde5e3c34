"""The ranker as a service (``/v1/rank``, ``/v1/compare``) and feedback on logged blends
(``/v1/feedback``).

``/v1/rank`` ranks given candidates with the gateway's ranker (PairRanker §3.2 strategies, or the
pool-aware ranker when candidates name known models) through the shared batcher; ``/v1/compare``
gives P(a is better than b) = σ(margin) from the ranker's debiased margin (both orders, §3.1).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from llmblend.blend.aio import in_worker
from llmblend.serve.errors import GatewayError, bad_request, not_found
from llmblend.serve.gateway import Gateway
from llmblend.serve.protocol import CompareRequest, FeedbackRequest, RankRequest
from llmblend.types import Candidate, Example


async def rank_candidates(gateway: Gateway, body: RankRequest) -> dict[str, Any]:
    """Scores (higher is better, one per candidate in input order), the order best first, and the
    forwards spent."""
    candidates = [Candidate(c.model or f"candidate-{i}", c.text) for i, c in enumerate(body.candidate_list())]
    example = Example(id="rank", instruction=body.prompt, candidates=candidates)
    started = time.perf_counter()
    ranking, n_forward = await gateway.batcher.rank(example, strategy=body.strategy, top_k=None)
    if not ranking.ok:
        raise GatewayError(
            500, f"ranking failed: {ranking.error}", type="server_error", code="ranking_failed"
        )
    return {
        "object": "ranking",
        "ranker": getattr(gateway.ranker, "name", type(gateway.ranker).__name__),
        "scores": [float(s) for s in ranking.scores],
        "order": list(ranking.order),
        "n_forward": n_forward,
        "terms": dict(ranking.terms) if getattr(ranking, "terms", None) else None,
        "usage": ranking.usage,  # an LLM judge's calls, tokens and cost; None for other rankers
        "seconds": round(time.perf_counter() - started, 4),
    }


async def compare_answers(gateway: Gateway, body: CompareRequest) -> dict[str, Any]:
    """P(``a`` is better than ``b``) and the margin (> 0: ``a`` better)."""
    compare = getattr(gateway.ranker, "compare", None)
    if compare is None:
        raise bad_request(
            f"the configured ranker {getattr(gateway.ranker, 'name', '?')!r} cannot compare two answers; "
            "configure a PairRanker (ranker: {model: ...}) or a pool-aware one"
        )
    (margin,) = await in_worker(gateway.rank_lock, compare, [body.source], [body.a], [body.b])
    margin = float(margin)
    temperature = getattr(
        getattr(gateway.ranker, "config", None), "temperature", 1.0
    )  # calibrated PairRanker
    return {
        "object": "comparison",
        "probability": 1.0 / (1.0 + math.exp(-margin / temperature)),
        "margin": margin,
        "better": "a" if margin > 0 else "b" if margin < 0 else "tie",
    }


async def record_feedback(gateway: Gateway, body: FeedbackRequest) -> dict[str, Any]:
    """Append a judgement of a logged blend: preference pairs or a rating."""
    if gateway.traffic is None or gateway.feedback is None:
        raise bad_request(
            "feedback needs the traffic log: set traffic: {log: PATH} in the serve config",
            code="feedback_disabled",
        )
    record = await asyncio.to_thread(gateway.traffic.lookup, body.completion_id)
    if record is None:
        raise not_found(f"no logged blend has the id {body.completion_id!r}", code="completion_not_found")
    try:
        if body.preferred is not None:
            pairs = await asyncio.to_thread(gateway.feedback.add_preference, record, body.preferred)
            return {"object": "feedback", "completion_id": body.completion_id, "pairs": pairs}
        await asyncio.to_thread(gateway.feedback.add_rating, record, body.rating)
    except ValueError as exc:
        raise bad_request(str(exc), param="preferred") from None
    return {"object": "feedback", "completion_id": body.completion_id, "rating": body.rating}
