"""Ranker evaluation (LLM-Blender §5): run rankers, measure them, render the tables.

:func:`evaluate_rankers` ranks the examples (and preference pairs) with each ranker and measures
selection quality (Table 2), agreement with the oracle (Table 3) and pairwise accuracy with
:mod:`llmblend.eval.ranking_measures` (whose docstring gives the conventions: oracle, ranks, shares,
footrule); the results render as Markdown tables (:func:`evaluation_markdown`). The measures used
here (``correlation``, ``selection_quality``, ...) are importable from this module too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmblend.eval.ranking_measures import (
    NAN,
    Correlation,
    PairwiseAccuracy,
    Selection,
    candidate_pair_accuracy,
    correlation,
    pairwise_accuracy,
    predicted_scores,
    resolve_oracle,
    scored_view,
    selection_quality,
)
from llmblend.rank.base import Ranker
from llmblend.types import Candidate, Example, PreferencePair, Ranking

log = logging.getLogger(__name__)

#: Told how many more items are done; ``rank_examples`` calls it after each chunk.
ProgressFn = Callable[[int], None]
#: Starts a progress display: ``(description, total) -> ProgressFn``.
ProgressFactory = Callable[[str, int], ProgressFn]
#: Examples per ``Ranker.rank`` call.
DEFAULT_CHUNK_SIZE = 64


# ---------------------------------------------------------------- running rankers


def rank_examples(
    ranker: Ranker,
    examples: Sequence[Example],
    *,
    strategy: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressFn | None = None,
) -> list[Ranking]:
    """``ranker.rank`` over the examples, ``chunk_size`` at a time, calling ``progress(n)`` after each
    chunk; ValueError if the ranker returns the wrong number of rankings."""
    from llmblend.rank.hf import chunks

    rankings: list[Ranking] = []
    for chunk in chunks(examples, chunk_size):
        got = ranker.rank(chunk, strategy=strategy)
        if len(got) != len(chunk):
            name = getattr(ranker, "name", type(ranker).__name__)
            raise ValueError(f"ranker {name!r} returned {len(got)} rankings for {len(chunk)} examples")
        rankings.extend(got)
        if progress is not None:
            progress(len(chunk))
    failed = sum(not r.ok for r in rankings)
    if failed:
        log.warning("%s: %d of %d rankings failed", getattr(ranker, "name", "ranker"), failed, len(rankings))
    return rankings


def pair_examples(pairs: Sequence[PreferencePair]) -> tuple[list[Example], np.ndarray]:
    """One two-candidate example per preference pair, and the index of ``chosen`` in each.

    ``chosen`` goes first in even pairs and second in odd ones, so a ranker that favours a position
    gains nothing; both candidates get neutral model names.
    """
    examples, chosen_at = [], np.arange(len(pairs)) % 2
    for i, pair in enumerate(pairs):
        texts = [pair.chosen, pair.rejected] if chosen_at[i] == 0 else [pair.rejected, pair.chosen]
        candidates = [Candidate(model=f"candidate-{k + 1}", text=t) for k, t in enumerate(texts)]
        examples.append(Example(id=f"pair/{i}", instruction=pair.prompt, candidates=candidates))
    return examples, chosen_at


def preference_margins(
    ranker: Ranker,
    pairs: Sequence[PreferencePair],
    *,
    strategy: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """float64 ``[len(pairs)]``: score(chosen) − score(rejected) from ranking each pair as a
    two-candidate example (batched as :func:`rank_examples`); NaN where the ranking failed."""
    examples, chosen_at = pair_examples(pairs)
    rankings = rank_examples(ranker, examples, strategy=strategy, chunk_size=chunk_size, progress=progress)
    margins = np.full(len(pairs), NAN)
    for i, (example, ranking) in enumerate(zip(examples, rankings, strict=True)):
        if ranking.ok:
            scores = predicted_scores(example, ranking, getattr(ranker, "name", ""))
            margins[i] = scores[chosen_at[i]] - scores[1 - chosen_at[i]]
    return margins


# ---------------------------------------------------------------- everything at once


@dataclass(frozen=True, slots=True)
class RankerEvaluation:
    """What ``llmblend eval ranker`` reports: Table 2 (``selection``), Table 3 (``correlations``, with
    ``candidate_pairs``: pairwise accuracy over the candidates of each instruction) and, when pairs
    were given, ``preferences`` (pairwise accuracy on them). ``left_out`` instructions had fewer than
    2 oracle-scored candidates and were not ranked; ``instructions`` were."""

    oracle: str
    instructions: int
    left_out: int
    selection: Selection
    correlations: list[Correlation]
    candidate_pairs: list[PairwiseAccuracy]
    preferences: list[PairwiseAccuracy] = field(default_factory=list)

    def to_markdown(self) -> str:
        return evaluation_markdown(self)


def evaluate_rankings(
    examples: Sequence[Example],
    rankings: Mapping[str, Sequence[Ranking]],
    oracle: str,
    *,
    best_model: str | None = None,
    preference_margins: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    left_out: int = 0,
) -> RankerEvaluation:
    """Evaluate rankings already made (method name → one ranking per example) against ``oracle``."""
    return RankerEvaluation(
        oracle=oracle,
        instructions=len(examples),
        left_out=left_out,
        selection=selection_quality(examples, rankings, oracle, best_model=best_model),
        correlations=[correlation(examples, r, oracle, name) for name, r in rankings.items()],
        candidate_pairs=[candidate_pair_accuracy(examples, r, oracle, name) for name, r in rankings.items()],
        preferences=[pairwise_accuracy(m, name) for name, m in (preference_margins or {}).items()],
    )


def evaluate_rankers(
    examples: Sequence[Example],
    rankers: Mapping[str, Ranker],
    *,
    oracle: str | None = None,
    best_model: str | None = None,
    strategy: str | None = None,
    pairs: Sequence[PreferencePair] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressFactory | None = None,
) -> RankerEvaluation:
    """Rank the examples (and the pairs, if given) with each ranker and evaluate (§5, Tables 2, 3).

    Rankers see only the oracle-scored candidates of instructions that have at least 2 of them.
    ``oracle`` defaults as in ``llmblend data stats``; ``progress(description, total)`` is called
    once per ranking run and returns the callback that :func:`rank_examples` advances.
    """
    if not rankers:
        raise ValueError("no ranker to evaluate; give at least one")
    oracle = resolve_oracle(examples, oracle)
    kept, left_out = scored_view(examples, oracle)
    if not kept:
        raise ValueError(f"no instruction has 2 or more candidates with the oracle score {oracle!r}")

    def run(name: str, items: Sequence[Any], what: str) -> ProgressFn | None:
        return progress(f"{name}: {what}", len(items)) if progress else None

    rankings = {
        name: rank_examples(
            r, kept, strategy=strategy, chunk_size=chunk_size, progress=run(name, kept, "ranking")
        )
        for name, r in rankers.items()
    }
    margins = None
    if pairs is not None:
        margins = {
            name: preference_margins(
                r, pairs, strategy=strategy, chunk_size=chunk_size, progress=run(name, pairs, "pairs")
            )
            for name, r in rankers.items()
        }
    return evaluate_rankings(
        kept, rankings, oracle, best_model=best_model, preference_margins=margins, left_out=left_out
    )


# ---------------------------------------------------------------- rendering

#: A table as header cells and rows of cells, all formatted; numbers right-aligned.
Cells = tuple[list[str], list[list[str]]]


def fmt_number(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``-`` for None or NaN."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def fmt_percent(share: float | None) -> str:
    """A share in [0, 1] as a percentage with one decimal; ``-`` for None or NaN."""
    return "-" if share is None or math.isnan(share) else f"{100 * share:.1f}"


def selection_cells(selection: Selection) -> Cells:
    """The selection table (Table 2)."""
    headers = [
        "method",
        f"mean {selection.oracle}",
        f"≥ {selection.best_model} (%)",
        "oracle top-3 (%)",
        "forward passes",
        "n",
        "failed",
    ]
    rows = [
        [
            r.method,
            fmt_number(r.mean_score),
            fmt_percent(r.at_least_best),
            fmt_percent(r.top3),
            fmt_number(r.mean_forward, 1),
            str(r.evaluated),
            str(r.failed),
        ]
        for r in selection.rows
    ]
    return headers, rows


def _skip_note(c: Correlation) -> str:
    parts = {
        "too few scored": c.too_few,
        "constant oracle": c.constant_oracle,
        "failed": c.failed,
        "constant prediction": c.constant_prediction,
    }
    detail = ", ".join(f"{n} {reason}" for reason, n in parts.items() if n)
    return f"{c.skipped} ({detail})" if detail else "0"


def correlation_cells(
    correlations: Sequence[Correlation], candidate_pairs: Sequence[PairwiseAccuracy]
) -> Cells:
    """The correlation table (Table 3), with candidate-pair accuracy beside it when given."""
    headers = ["method", "Pearson ↑", "Spearman ↑", "footrule ↓", "pair acc. (%) ↑", "n", "skipped"]
    accuracy = {p.method: p for p in candidate_pairs}
    rows = [
        [
            c.method,
            fmt_number(c.pearson),
            fmt_number(c.spearman),
            fmt_number(c.footrule),
            fmt_percent(accuracy[c.method].accuracy) if c.method in accuracy else "-",
            str(c.evaluated),
            _skip_note(c),
        ]
        for c in correlations
    ]
    return headers, rows


def pairwise_cells(results: Sequence[PairwiseAccuracy]) -> Cells:
    """A pairwise-accuracy table."""
    headers = ["method", "accuracy (%)", "correct", "decided", "predicted ties", "failed", "oracle ties"]
    rows = [
        [
            p.method,
            fmt_percent(p.accuracy),
            str(p.correct),
            str(p.decided),
            str(p.predicted_ties),
            str(p.failed),
            str(p.oracle_ties),
        ]
        for p in results
    ]
    return headers, rows


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown_table(cells: Cells) -> str:
    """A GitHub-flavoured Markdown table; the first column left-aligned, the others right-aligned."""
    headers, rows = cells
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    lines.extend("| " + " | ".join(_escape(c) for c in row) + " |" for row in rows)
    return "\n".join(lines)


def evaluation_markdown(evaluation: RankerEvaluation) -> str:
    """Every table of an evaluation as one Markdown document."""
    sel = evaluation.selection
    how = "given" if sel.best_model_given else f"highest mean {sel.oracle}"
    parts = [
        "## Ranker evaluation",
        f"Oracle: `{evaluation.oracle}`. {evaluation.instructions} instructions evaluated; "
        f"{evaluation.left_out} left out (fewer than 2 candidates with the oracle score). "
        f"Best single model: `{sel.best_model}` ({how}, mean {fmt_number(sel.best_model_mean)}).",
        "### Selecting the top-1 candidate (LLM-Blender Table 2)",
        markdown_table(selection_cells(sel)),
        "### Agreement with the oracle (LLM-Blender Table 3)",
        markdown_table(correlation_cells(evaluation.correlations, evaluation.candidate_pairs)),
        "Means over instructions. Footrule: Σ|rank − oracle rank| / ⌊N²/2⌋ (0 = oracle order, "
        "1 = reversed, random ≈ 0.67). Pair acc.: all pairs of candidates of an instruction, "
        "oracle ties left out.",
    ]
    if evaluation.preferences:
        parts += [
            "### Pairwise accuracy on preference pairs",
            markdown_table(pairwise_cells(evaluation.preferences)),
        ]
    return "\n\n".join(parts) + "\n"
