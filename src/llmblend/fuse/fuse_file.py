"""``llmblend fuse``: fuse the top-K candidates of every example of a MixInstruct file, resumably.

For each example the candidates are ranked (or the ``ranking`` field that ``llmblend rank`` wrote is
reused), the top-K go to the fuser (LLM-Blender §4), and the fusion guard may keep the top candidate
instead (:mod:`llmblend.fuse.guard`). Examples go in chunks (ranked, fused and guarded together) and
each chunk is appended to the output as soon as it is done, flushed to disk; a rerun after a crash
or kill skips the ids already in the output and drops a torn last line, exactly like ``llmblend
rank``. Each output record is the input record plus a ``fused`` field (and a ``ranking`` field when
the input had none)::

    "fused": {"text": "the answer returned", "fuser": "...", "returned": "fused" | "top" | ...,
              "margin": 0.42, "top_k": [best index, ...], "error": null,
              "fused_text": "the fuser's own answer", "notes": [...]}

``text`` is what the pipeline answers (the fused answer, or the top candidate when the guard
preferred it, fusion failed or there was one candidate); ``llmblend eval report`` reads ``text``
and ``fuser``. ``margin`` is the guard's ``compare(fused, top)``, null when it did not compare.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmblend.blend.pipeline import RankAndFuse, RanksAndFuses
from llmblend.data.jsonl import append_jsonl
from llmblend.data.mixinstruct import record_from_example
from llmblend.fuse.base import Fuser
from llmblend.rank.base import Ranker
from llmblend.rank.rank_file import RANKING_FIELD, pending_examples
from llmblend.types import BlendResult, Example, Ranking

FUSED_FIELD = "fused"


@dataclass(frozen=True, slots=True)
class FuseFileReport:
    """What one :func:`fuse_file` call did.

    ``fused`` examples written now (``already_done`` found in the output); of those,
    ``returned_fused`` answer with the fused text, ``returned_top`` with the top candidate (guard,
    failed fusion), ``only_candidate`` had one candidate, ``failed`` have no answer (ranking failed,
    no candidates), ``fusion_errors`` counts failed fuser calls; ``n_forward`` the ranker's forwards.
    """

    fused: int
    already_done: int
    returned_fused: int
    returned_top: int
    only_candidate: int
    failed: int
    fusion_errors: int
    n_forward: int
    seconds: float

    @property
    def examples_per_second(self) -> float:
        return self.fused / self.seconds if self.seconds > 0 else float("nan")


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def ranking_from_record(value: Any) -> Ranking | None:
    """The :class:`Ranking` of a record's ``ranking`` field (as ``llmblend rank`` writes it).

    None when there is no field; a failed ranking saying why when the field is malformed or records a
    failure, so that the example is ranked again with a note.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        return Ranking.failed(f"the {RANKING_FIELD} field is not an object")
    if value.get("error"):
        return Ranking.failed(str(value["error"]))
    order, scores = value.get("order"), value.get("scores", [])
    if not isinstance(order, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in order):
        return Ranking.failed(f"the {RANKING_FIELD} field has no list of indices under 'order'")
    if not isinstance(scores, list) or not all(
        isinstance(s, int | float) and not isinstance(s, bool) for s in scores
    ):
        return Ranking.failed(f"the {RANKING_FIELD} field's 'scores' is not a list of numbers")
    n_forward = value.get("n_forward", 0)
    return Ranking(
        tuple(float(s) for s in scores), tuple(order), n_forward if isinstance(n_forward, int) else 0
    )


def fused_record(
    example: Example, result: BlendResult, *, fuser: str, strategy: str | None = None
) -> dict[str, Any]:
    """The output record of one example: its MixInstruct record plus ``fused`` (and ``ranking`` when
    the input had none). Deterministic for a given result: no timings, floats rounded."""
    record = record_from_example(example)
    if RANKING_FIELD not in record:
        record[RANKING_FIELD] = {
            "ranker": result.ranker,
            "strategy": strategy,
            "order": list(result.ranking),
            "scores": [_round(c.score) if c.score is not None else None for c in result.candidates]
            if result.ranking
            else [],
            "n_forward": result.n_forward,
            "error": result.error if not result.ranking else None,
        }
    answered = result.error is None
    record[FUSED_FIELD] = {
        "text": result.answer if answered else None,
        "fuser": fuser,
        "returned": result.returned,
        "margin": _round(result.guard_margin),
        "top_k": list(result.top_k),
        "error": result.error or (result.fused.error if result.fused is not None else None),
        "fused_text": result.fused.text if result.fused is not None and result.fused.ok else None,
        "notes": list(result.notes),
    }
    return record


def _chunks(examples: Sequence[Example], size: int) -> Iterator[Sequence[Example]]:
    for start in range(0, len(examples), size):
        yield examples[start : start + size]


def fuse_file(
    blender: RanksAndFuses | tuple[Ranker, Fuser],
    source: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    chunk_size: int = 8,
    on_chunk: Callable[[int, int], None] | None = None,
    fuser_label: str | None = None,
) -> FuseFileReport:
    """Fuse the examples of ``source`` (its first ``limit``) that ``out`` lacks, appending each chunk.

    ``blender`` is a :class:`~llmblend.blend.pipeline.RankAndFuse` or a
    :class:`~llmblend.blender.Blender` (its ranker, fuser, ``top_k``, strategy and guard are used;
    its models are not asked), or a ``(ranker, fuser)`` pair (top-3, sparse-refine, guarded when the
    ranker has ``compare``). ``fuser_label`` names the fuser in the output (default:
    the fuser's ``name``). ``on_chunk(done, total)`` is called after each chunk. Per-example failures
    are written as data (``fused.error``), not raised.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    owned: RankAndFuse | None = None  # made here from a (ranker, fuser) pair, closed here
    if callable(getattr(blender, "rank_and_fuse", None)):
        pipeline: RanksAndFuses = blender
    else:
        ranker, fuser = blender
        pipeline = owned = RankAndFuse(ranker, fuser, guard=callable(getattr(ranker, "compare", None)))
    if pipeline.fuser is None:
        raise ValueError("fuse_file needs a fuser; this Blender has none (give it one, e.g. a PromptedFuser)")
    label = fuser_label or getattr(pipeline.fuser, "name", type(pipeline.fuser).__name__)
    # the strategy asked for, else the ranker's own (a pool ranker's pool-seeded)
    strategy = pipeline.strategy or getattr(getattr(pipeline, "ranker", None), "strategy", None)

    todo, already_done = pending_examples(source, out, limit)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts = dict.fromkeys(("fused", "top", "only candidate", "none"), 0)
    written = fusion_errors = n_forward = 0
    try:
        for chunk in _chunks(todo, chunk_size):
            rankings = [ranking_from_record(example.extra.get(RANKING_FIELD)) for example in chunk]
            results = pipeline.rank_and_fuse(chunk, rankings=rankings)
            append_jsonl(
                out,
                (
                    fused_record(ex, result, fuser=label, strategy=strategy)
                    for ex, result in zip(chunk, results, strict=True)
                ),
            )
            for result in results:
                counts[result.returned] += 1
                fusion_errors += result.fused is not None and not result.fused.ok
                n_forward += result.n_forward
            written += len(chunk)
            if on_chunk:
                on_chunk(written, len(todo))
    finally:
        if owned is not None:
            owned.close(close_backends=False)
    return FuseFileReport(
        fused=written,
        already_done=already_done,
        returned_fused=counts["fused"],
        returned_top=counts["top"],
        only_candidate=counts["only candidate"],
        failed=counts["none"],
        fusion_errors=fusion_errors,
        n_forward=n_forward,
        seconds=time.perf_counter() - started,
    )
