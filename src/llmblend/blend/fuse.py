"""The fuse stage (LLM-Blender §4): the top-K candidates of each item, best first, become one answer.

:func:`fuse_stage` sends every :class:`~llmblend.fuse.base.FuseItem` to the fuser in one call (a
fuser's ``afuse`` coroutine is awaited; a synchronous ``fuse`` runs in a worker thread under a lock)
and gives each item an :class:`Answer`: the fused text, or the top candidate (``item.candidates[0]``)
with a note saying why (no fuser, failed fusion, an empty fused text). A fuser that raises, or returns
the wrong number of answers, fails every item, as data. The guard stage
(:mod:`llmblend.blend.guard`) may then prefer the top candidate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmblend.blend.aio import acall_batch
from llmblend.fuse.base import Fused, FuseItem, Fuser

log = logging.getLogger(__name__)

NO_FUSER_NOTE = "no fuser: returned the top-ranked candidate"


def fuser_name(fuser: object) -> str:
    """A fuser's ``name``, or its class name."""
    return getattr(fuser, "name", type(fuser).__name__)


@dataclass(slots=True)
class Answer:
    """The answer one item returns and which one it is (``"fused"``, ``"top"`` or ``"only
    candidate"``, as in :data:`~llmblend.types.BLEND_RETURNS`).

    ``fused``: the fuser's answer (None when no fuser ran); ``margin``: the guard's
    ``compare(fused, top)``, None when it did not compare; ``notes``: why the top candidate was
    returned, when it was.
    """

    text: str
    returned: str
    fused: Fused | None = None
    margin: float | None = None
    notes: list[str] = field(default_factory=list)


def unguarded_answer(item: FuseItem, fused: Fused) -> Answer:
    """The fused answer when there is one, else the top candidate with the reason."""
    if fused.ok and fused.text.strip():
        return Answer(fused.text, "fused", fused)
    why = fused.error or "the fused answer is empty"
    return Answer(
        item.candidates[0], "top", fused, notes=[f"fusion failed ({why}): returned the top candidate"]
    )


@dataclass(slots=True)
class Fusion:
    """What the fuse stage gives: one :class:`Answer` per item, in order, and the stage's seconds."""

    answers: list[Answer]
    seconds: float


async def _fused(items: list[FuseItem], fuser: Fuser, lock: threading.Lock | None) -> list[Fused]:
    try:
        fused = await acall_batch(fuser, "fuse", items, lock=lock)
        if len(fused) != len(items):
            raise RuntimeError(f"the fuser returned {len(fused)} answers for {len(items)} items")
    except Exception as exc:  # failures are data: every item gets the error
        name = fuser_name(fuser)
        log.exception("fuser %s failed", name)
        return [Fused("", name, error=f"{type(exc).__name__}: {exc}") for _ in items]
    return fused


async def fuse_stage(
    items: Sequence[FuseItem], fuser: Fuser | None, *, lock: threading.Lock | None = None
) -> Fusion:
    """Fuse ``items`` (each one's candidates best first) with ``fuser``; None returns each item's top
    candidate with :data:`NO_FUSER_NOTE`. ``lock`` is held while a synchronous fuser runs."""
    started = time.perf_counter()
    if fuser is None:
        answers = [Answer(item.candidates[0], "top", notes=[NO_FUSER_NOTE]) for item in items]
    elif not items:
        answers = []
    else:
        fused = await _fused(list(items), fuser, lock)
        answers = [unguarded_answer(item, f) for item, f in zip(items, fused, strict=True)]
    return Fusion(answers, time.perf_counter() - started)
