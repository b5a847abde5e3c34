"""One chat request through the gateway: a profile's blend (LLM-Blender §2–4) or a plain proxy.

A profile's run asks every slot with the request's decoding settings (:func:`request_params`),
waits at most ``generate_timeout_s`` for the slowest (the rest go on without it), ranks the answers
through the shared :class:`~llmblend.serve.batching.RankBatcher`, then fuses and guards with the
profile's :class:`~llmblend.blend.pipeline.RankAndFuse`. :class:`Progress` records what has arrived
so far: a streamed response reports candidates as they come, and a request past its deadline can
still answer with the best candidate so far (:func:`fallback_outcome`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmblend.backends.base import Generation, GenerationParams
from llmblend.backends.config import Slot
from llmblend.blend.generate import Generated, blend_candidate
from llmblend.errors import BackendTimeoutError
from llmblend.serve.gateway import Gateway, Profile
from llmblend.types import BlendCandidate, BlendResult, Prompt, Ranking

#: Told each event of a run: ``{"event": "candidate", ...}`` as answers arrive, then ``ranking``.
EventSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class ChatJob:
    """What a run needs of a request: its id, exposed model, prompt and decoding overrides."""

    id: str
    model: str
    prompt: Prompt
    overrides: dict[str, Any]
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass(slots=True)
class Outcome:
    """A finished request: the text, why it ended, the tokens of every upstream call, and the
    ``llmblend`` details (always built; sent only when asked)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    details: dict[str, Any]
    result: BlendResult | None = None


@dataclass(slots=True)
class Progress:
    """What a run has so far (read by a deadline fallback and by streamed details)."""

    candidates: dict[int, BlendCandidate] = field(default_factory=dict)
    ranking: Ranking | None = None
    ranked_slots: list[int] = field(default_factory=list)
    sink: EventSink | None = None

    async def tell(self, event: dict[str, Any]) -> None:
        if self.sink is not None:
            await self.sink(event)


def request_params(slots: Sequence[Slot], overrides: dict[str, Any]) -> list[GenerationParams]:
    """Each slot's settings with the request's on top. Sampled slots of one backend keep distinct
    seeds (a repeat gets the next free one), so best-of-n asks for n different answers even when the
    request names one seed."""
    params, seen = [], {}
    for slot in slots:
        p = replace(slot.params, **overrides)
        if not p.greedy:
            used = seen.setdefault(slot.backend.name, set())
            seed = 0 if p.seed is None else p.seed
            while seed in used:
                seed += 1
            used.add(seed)
            p = replace(p, seed=seed)
        params.append(p)
    return params


def _timed_out(slot: Slot, seconds: float) -> Generation:
    failure = BackendTimeoutError(f"no answer within the gateway's {seconds:g} s", backend=slot.backend.name)
    return Generation.failed(slot.backend.name, failure, seconds)


async def generate(
    slots: Sequence[Slot],
    params: Sequence[GenerationParams],
    prompt: Prompt,
    timeout_s: float,
    progress: Progress,
) -> Generated:
    """Every slot's answer, each told to ``progress`` as it arrives; slots still running after
    ``timeout_s`` are cancelled and count as timed out. Cancelling the caller cancels every call."""
    started = time.perf_counter()
    tasks = {
        asyncio.create_task(slot.backend.generate(prompt, p)): i
        for i, (slot, p) in enumerate(zip(slots, params, strict=True))
    }
    generations: list[Generation | None] = [None] * len(slots)
    pending = set(tasks)
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while pending:
            left = deadline - asyncio.get_running_loop().time()
            done, pending = await asyncio.wait(
                pending, timeout=max(left, 0), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                i = tasks[task]
                generations[i] = task.result()
                candidate = blend_candidate(params[i], generations[i])
                progress.candidates[i] = candidate
                await progress.tell(
                    {"event": "candidate", "index": i, "candidate": candidate_json(candidate)}
                )
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    final = [g if g is not None else _timed_out(slots[i], timeout_s) for i, g in enumerate(generations)]
    candidates = [blend_candidate(p, g) for p, g in zip(params, final, strict=True)]
    return Generated(prompt, "", candidates, final, time.perf_counter() - started)


async def run_profile(gateway: Gateway, profile: Profile, job: ChatJob, progress: Progress) -> Outcome | None:
    """Generate, rank, fuse, guard; None when every backend failed (the caller answers 502 from
    ``progress.candidates``)."""
    started = time.perf_counter()
    limits = gateway.config.limits
    params = request_params(profile.slots, job.overrides)
    generated = await generate(profile.slots, params, job.prompt, limits.generate_timeout_s, progress)
    gateway.metrics.generations(generated.generations)
    if not generated.answered:
        return None
    example = generated.example(job.id)
    rank_started = time.perf_counter()
    ranking, n_forward = await gateway.batcher.rank(
        example, strategy=profile.spec.strategy, top_k=profile.spec.top_k
    )
    rank_s = time.perf_counter() - rank_started
    progress.ranking, progress.ranked_slots = ranking, generated.answered
    if ranking.ok:
        await progress.tell({"event": "ranking", "candidates": _ranked_json(generated, ranking)})
    (result,) = await profile.pipeline.arank_and_fuse([example], rankings=[ranking])
    generated.merge(result)
    result.id, result.n_forward = job.id, n_forward
    result.timings.rank_s = rank_s
    result.timings.total_s = time.perf_counter() - started
    gateway.metrics.blend(result)
    if not result.ok:  # the ranker failed: answer with the first slot's answer, and say so
        first = generated.answered[0]
        result.answer, result.ranking = generated.candidates[first].text, (first,)
        result.notes.append(f"{result.error}; returned the first answer that came back")
    return Outcome(
        text=result.answer,
        finish_reason=_finish_reason(result, generated),
        prompt_tokens=sum(t.prompt_tokens for t in result.tokens.values()),
        completion_tokens=sum(t.completion_tokens for t in result.tokens.values()),
        details=blend_details(profile, result),
        result=result,
    )


async def run_proxy(gateway: Gateway, name: str, job: ChatJob) -> Generation:
    """One call to one backend with its first configured setting under the request's."""
    slot = gateway.slots[name][0]
    (params,) = request_params([slot], job.overrides)
    generation = await slot.backend.generate(job.prompt, params)
    gateway.metrics.generations([generation])
    return generation


def fallback_outcome(progress: Progress, profile: Profile, seconds: float) -> Outcome | None:
    """The best answer a run past its deadline has: the top-ranked candidate when the ranking is done,
    else the first slot's answer that came back; None when nothing came back."""
    ranked = progress.ranking is not None and progress.ranking.ok
    if ranked:
        choice = progress.ranked_slots[progress.ranking.order[0]]
    else:
        answered = sorted(i for i, c in progress.candidates.items() if c.ok)
        if not answered:
            return None
        choice = answered[0]
    candidate = progress.candidates[choice]
    note = (
        f"deadline of {seconds:g} s reached: returned the {'top-ranked' if ranked else 'first'} answer so far"
    )
    details = {
        "profile": profile.name,
        "kind": profile.spec.kind,
        "returned": "top" if ranked else "first answer",
        "deadline_reached": True,
        "notes": [note],
        "candidates": [{"index": i, **candidate_json(c)} for i, c in sorted(progress.candidates.items())],
    }
    tokens = [c for c in progress.candidates.values()]
    return Outcome(
        candidate.text,
        "stop",
        sum(c.prompt_tokens for c in tokens),
        sum(c.completion_tokens for c in tokens),
        details,
    )


def failures(progress: Progress) -> list[str]:
    """``backend (decoding): error`` for each failed slot so far."""
    return [f"{c.model} ({c.decoding_method}): {c.error}" for c in progress.candidates.values() if not c.ok]


# ---- the llmblend details object ------------------------------------------------------------------


def candidate_json(c: BlendCandidate) -> dict[str, Any]:
    return {
        "model": c.model,
        "decoding": c.decoding_method,
        "text": c.text,
        "score": c.score,
        "rank": c.rank,
        "error": c.error,
        "completion_tokens": c.completion_tokens,
        "latency_s": round(c.latency_s, 4),
    }


def _ranked_json(generated: Generated, ranking: Ranking) -> list[dict[str, Any]]:
    answered = generated.answered
    rows = []
    for place, j in enumerate(ranking.order, start=1):
        rows.append({"index": answered[j], "score": float(ranking.scores[j]), "rank": place})
    return rows


def blend_details(profile: Profile, result: BlendResult) -> dict[str, Any]:
    """The ``llmblend`` object of a response: every candidate (model, decoding, score, rank, error),
    what was returned and the guard's margin, forwards and time per stage."""
    timings = result.timings
    return {
        "profile": profile.name,
        "kind": profile.spec.kind,
        "ranker": result.ranker,
        "fuser": result.fuser,
        "returned": result.returned,
        "guard_margin": result.guard_margin,
        "n_forward": result.n_forward,
        "candidates": [{"index": i, **candidate_json(c)} for i, c in enumerate(result.candidates)],
        "failed": [f"{c.model} ({c.decoding_method}): {c.error}" for c in result.candidates if not c.ok],
        "timings": {
            "generate_s": round(timings.generate_s, 4),
            "rank_s": round(timings.rank_s, 4),
            "fuse_s": round(timings.fuse_s, 4),
            "guard_s": round(timings.guard_s, 4),
            "total_s": round(timings.total_s, 4),
        },
        "notes": list(result.notes),
        "error": result.error,
    }


def _finish_reason(result: BlendResult, generated: Generated) -> str:
    """``length`` when the returned candidate was cut at max_tokens; else ``stop``."""
    if result.returned in ("top", "only candidate") and result.ranking:
        return generated.generations[result.ranking[0]].finish_reason or "stop"
    return "stop"
