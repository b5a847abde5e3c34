"""The guard stage: keep each fused answer only when the ranker does not prefer the top candidate.

:func:`guard_stage` asks a :class:`~llmblend.fuse.guard.FusionGuard` about every answer of the fuse
stage that has a fused text, in one ``check_many`` call (in a worker thread, under a lock: the guard's
ranker is usually the blend's ranker), and returns the answers it decided on. Answers without a fused
answer (no fuser ran) are kept as they are. A guard that raises leaves the fuse stage's answers
unchecked, each with a note saying so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from llmblend.blend.aio import batch_in_worker
from llmblend.blend.fuse import Answer
from llmblend.fuse.base import FuseItem
from llmblend.fuse.guard import FusionGuard, GuardDecision
from llmblend.types import Example

log = logging.getLogger(__name__)


def item_source(item: FuseItem) -> str:
    """The text a ranker reads as the source of ``item``: its instruction, then its input (as
    :attr:`Example.source <llmblend.types.Example.source>`)."""
    return Example(id="", instruction=item.instruction, input=item.input).source


def guarded_answer(answer: Answer, decision: GuardDecision) -> Answer:
    """The answer the guard chose; a note gives its reason when it returned the top candidate."""
    notes = [f"guard: {decision.reason}"] if decision.returned == "top" else []
    return Answer(decision.text, decision.returned, answer.fused, decision.margin, notes)


@dataclass(slots=True)
class Guarded:
    """What the guard stage gives: one :class:`~llmblend.blend.fuse.Answer` per item, in order;
    ``error`` says why the guard could not check (then the answers are unchecked); ``seconds``."""

    answers: list[Answer]
    seconds: float
    error: str | None = None


async def guard_stage(
    items: Sequence[FuseItem],
    answers: Sequence[Answer],
    guard: FusionGuard | None,
    *,
    lock: threading.Lock | None = None,
) -> Guarded:
    """Check ``answers[i]`` (the fuse stage's answer to ``items[i]``) against ``items[i]``'s top
    candidate with ``guard`` (None: the answers as they are); ``lock`` is held while it compares."""
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    started = time.perf_counter()
    checked = [i for i, answer in enumerate(answers) if answer.fused is not None]
    final = list(answers)
    error = None
    if guard is not None and checked:
        try:
            decisions = await batch_in_worker(
                lock,
                guard.check_many,
                [item_source(items[i]) for i in checked],
                [answers[i].fused for i in checked],
                [items[i].candidates[0] for i in checked],
            )
            for i, decision in zip(checked, decisions, strict=True):
                final[i] = guarded_answer(answers[i], decision)
        except Exception as exc:  # keep the fused answers, unchecked, and say so
            log.exception("the fusion guard failed")
            error = f"{type(exc).__name__}: {exc}"
            note = f"the fusion guard failed ({error}); not checked"
            final = list(answers)
            for i in checked:
                final[i] = replace(answers[i], notes=[note, *answers[i].notes])
    return Guarded(final, time.perf_counter() - started, error)
