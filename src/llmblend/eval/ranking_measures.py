"""How good a ranking is against the oracle (LLM-Blender §5): selection quality (Table 2), agreement
with the oracle (Table 3) and pairwise accuracy; pure functions of examples, rankings and scores.

Conventions, shared by every function here:

* The *oracle* is one candidate score, ``Candidate.scores[oracle]`` (e.g. ``gpt4_win``); higher is
  better, as for a :class:`~llmblend.types.Ranking`'s scores. Only candidates that carry the oracle
  score take part; the others are ignored (a ranker's pick is its best-ranked *scored* candidate).
* Ranks are 1 = best; ties get the average of the ranks they span (as ``scipy.stats.rankdata``).
* Shares (``at_least_best``, ``top3``, ``accuracy``) are fractions in [0, 1]; the Markdown tables
  show them as percentages. A mean over nothing is NaN, shown as ``-``.
* Spearman's footrule (Table 3, lower is better) of one instruction with N scored candidates is
  ``Σ_i |rank_pred(i) − rank_oracle(i)| / ⌊N²/2⌋``: 0 when the ranker orders the candidates as the
  oracle does, 1 when it reverses them (⌊N²/2⌋ is the largest sum any two rankings can have, so the
  value is in [0, 1] with ties too, and comparable across N). A uniformly random order scores
  (N²−1)/3 / ⌊N²/2⌋ on average, about 2/3. The unnormalised sum is kept as ``footrule_raw``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import rankdata

from llmblend.data.stats import choose_oracle, selection_scores
from llmblend.types import Example, Ranking

NAN = float("nan")


# ---------------------------------------------------------------- oracle scores


def score_names(examples: Sequence[Example]) -> list[str]:
    """Every candidate score name in the examples, sorted."""
    return sorted({name for ex in examples for c in ex.candidates for name in c.scores})


def resolve_oracle(examples: Sequence[Example], oracle: str | None = None) -> str:
    """``oracle`` if some candidate has it, else the default of :func:`~llmblend.data.stats.choose_oracle`.

    ValueError listing the score names present when ``oracle`` is missing or there is no score.
    """
    names = score_names(examples)
    if oracle is None:
        chosen = choose_oracle(names)
        if chosen is None:
            raise ValueError("no candidate has any score, so there is no oracle to evaluate rankers against")
        return chosen
    if oracle not in names:
        present = ", ".join(names) if names else "no scores at all"
        raise ValueError(f"no candidate has the oracle score {oracle!r}; the candidates have: {present}")
    return oracle


def oracle_scores(example: Example, oracle: str) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, values)``: the candidates of ``example`` that have the oracle score, and the scores."""
    pairs = [(i, c.scores[oracle]) for i, c in enumerate(example.candidates) if oracle in c.scores]
    indices = np.array([i for i, _ in pairs], dtype=np.int64)
    return indices, np.array([v for _, v in pairs], dtype=np.float64)


def scored_view(
    examples: Sequence[Example], oracle: str, min_candidates: int = 2
) -> tuple[list[Example], int]:
    """Copies of the examples with only their oracle-scored candidates, and how many were left out
    for having fewer than ``min_candidates`` of them (§5 evaluates among judged candidates only)."""
    kept = []
    for ex in examples:
        scored = [c for c in ex.candidates if oracle in c.scores]
        if len(scored) >= min_candidates:
            kept.append(replace(ex, candidates=scored))
    return kept, len(examples) - len(kept)


def _check_lengths(examples: Sequence[Example], rankings: Sequence[Ranking], method: str) -> None:
    if len(examples) != len(rankings):
        raise ValueError(f"{method or 'method'}: {len(rankings)} rankings for {len(examples)} examples")


def predicted_scores(example: Example, ranking: Ranking, method: str) -> np.ndarray:
    """The ranking's scores as an array, ValueError if they do not match the candidates."""
    if len(ranking.scores) != len(example.candidates):
        raise ValueError(
            f"{method or 'method'}: example {example.id!r} has {len(example.candidates)} candidates "
            f"but its ranking has {len(ranking.scores)} scores"
        )
    return np.asarray(ranking.scores, dtype=np.float64)


def _constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[0]))


# ---------------------------------------------------------------- correlation (Table 3)


def footrule(predicted: Sequence[float], oracle: Sequence[float], *, normalise: bool = True) -> float:
    """Spearman's footrule between two score vectors (Table 3; lower is better).

    ``Σ|rank_pred − rank_oracle|`` over candidates, with average ranks for ties, divided by ⌊N²/2⌋
    when ``normalise`` (0 = same order, 1 = reversed; see the module docstring).
    """
    a = rankdata(-np.asarray(predicted, dtype=np.float64))
    b = rankdata(-np.asarray(oracle, dtype=np.float64))
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"footrule needs two vectors of the same length >= 2, got {len(a)} and {len(b)}")
    raw = float(np.abs(a - b).sum())
    return raw / (len(a) ** 2 // 2) if normalise else raw


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


@dataclass(frozen=True, slots=True)
class Correlation:
    """Mean per-instruction agreement of one method's scores with the oracle (§5, Table 3).

    ``pearson`` and ``spearman`` are in [-1, 1] (higher is better); ``footrule`` is in [0, 1] (lower
    is better) and ``footrule_raw`` is the unnormalised Σ|Δrank|, comparable to the paper's numbers
    only at equal N. Means are over the ``evaluated`` instructions (NaN when none). Every other
    instruction is counted under the first reason that applies: ``too_few`` (fewer than 2 candidates
    with the oracle score), ``constant_oracle`` (all oracle scores equal), ``failed`` (the ranking
    has an error, or a non-finite score), ``constant_prediction`` (all predicted scores equal).
    """

    method: str
    pearson: float
    spearman: float
    footrule: float
    footrule_raw: float
    evaluated: int
    too_few: int = 0
    constant_oracle: int = 0
    failed: int = 0
    constant_prediction: int = 0

    @property
    def skipped(self) -> int:
        return self.too_few + self.constant_oracle + self.failed + self.constant_prediction

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"skipped": self.skipped}


def correlation(
    examples: Sequence[Example], rankings: Sequence[Ranking], oracle: str, method: str = ""
) -> Correlation:
    """Pearson, Spearman and footrule of ``rankings[i].scores`` against the oracle, averaged over
    instructions (§5, Table 3); see :class:`Correlation` for what is skipped."""
    _check_lengths(examples, rankings, method)
    skipped = dict.fromkeys(("too_few", "constant_oracle", "failed", "constant_prediction"), 0)
    values: list[tuple[float, float, float, float]] = []
    for example, ranking in zip(examples, rankings, strict=True):
        indices, truth = oracle_scores(example, oracle)
        reason = None
        if len(indices) < 2:
            reason = "too_few"
        elif _constant(truth):
            reason = "constant_oracle"
        elif not ranking.ok:
            reason = "failed"
        else:
            predicted = predicted_scores(example, ranking, method)[indices]
            if not np.all(np.isfinite(predicted)):
                reason = "failed"
            elif _constant(predicted):
                reason = "constant_prediction"
            else:
                values.append(
                    (
                        _pearson(predicted, truth),
                        _pearson(rankdata(predicted), rankdata(truth)),
                        footrule(predicted, truth),
                        footrule(predicted, truth, normalise=False),
                    )
                )
        if reason:
            skipped[reason] += 1
    means = np.mean(values, axis=0) if values else [NAN] * 4
    return Correlation(method, *(float(m) for m in means), evaluated=len(values), **skipped)


# ---------------------------------------------------------------- pairwise accuracy


@dataclass(frozen=True, slots=True)
class PairwiseAccuracy:
    """How often a method orders a pair as the reference does (§5).

    ``accuracy = correct / decided`` (NaN when nothing was decided). Not decided, and left out:
    ``predicted_ties`` (the method scores both sides equal), ``failed`` (its ranking failed, or gave
    a non-finite margin) and ``oracle_ties`` (the reference cannot tell the two apart; only for
    candidate pairs judged by oracle scores).
    """

    method: str
    accuracy: float
    correct: int
    decided: int
    predicted_ties: int = 0
    failed: int = 0
    oracle_ties: int = 0

    @property
    def pairs(self) -> int:
        return self.decided + self.predicted_ties + self.failed + self.oracle_ties

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"pairs": self.pairs}


def pairwise_accuracy(margins: Sequence[float] | np.ndarray, method: str = "") -> PairwiseAccuracy:
    """Accuracy of predicted margins, one per pair: > 0 means the preferred side is predicted better,
    0 is a predicted tie (left out, counted), NaN a failure (left out, counted)."""
    m = np.asarray(margins, dtype=np.float64).reshape(-1)
    failed = int(np.isnan(m).sum())
    ties = int((m == 0).sum())
    correct = int((m > 0).sum())
    decided = len(m) - failed - ties
    accuracy = correct / decided if decided else NAN
    return PairwiseAccuracy(method, accuracy, correct, decided, predicted_ties=ties, failed=failed)


def candidate_pair_accuracy(
    examples: Sequence[Example], rankings: Sequence[Ranking], oracle: str, method: str = ""
) -> PairwiseAccuracy:
    """Pairwise accuracy over every pair of oracle-scored candidates of each example: does the ranking
    put the higher-oracle candidate first? Oracle ties are left out and counted (§5)."""
    _check_lengths(examples, rankings, method)
    margins: list[np.ndarray] = []
    oracle_ties = 0
    for example, ranking in zip(examples, rankings, strict=True):
        indices, truth = oracle_scores(example, oracle)
        first, second = np.triu_indices(len(indices), k=1)
        sign = np.sign(truth[first] - truth[second])
        decided = sign != 0
        oracle_ties += int((~decided).sum())
        if not ranking.ok:
            margins.append(np.full(int(decided.sum()), NAN))
            continue
        predicted = predicted_scores(example, ranking, method)[indices]
        margin = sign * (predicted[first] - predicted[second])
        margins.append(margin[decided])
    result = pairwise_accuracy(np.concatenate(margins) if margins else np.empty(0), method)
    return replace(result, oracle_ties=oracle_ties)


# ---------------------------------------------------------------- selection quality (Table 2)


@dataclass(frozen=True, slots=True)
class SelectionRow:
    """One method of the selection table (§5, Table 2): the candidate it picks per instruction.

    ``kind`` is "ranker", "model" (always that model's answer), "random" (the exact expectation of a
    uniform pick) or "oracle" (the best oracle score). ``mean_score`` is the mean oracle score of the
    pick; ``at_least_best`` the share of instructions where the pick scores >= the best single
    model's answer (over instructions where that model has a scored answer); ``top3`` the share where
    the pick is in the oracle's top 3 (a pick tied with the third best counts); ``mean_forward`` the
    mean forward passes per instruction (None for the oracle). ``evaluated`` instructions had a pick;
    ``failed`` had a failed ranking and are left out.
    """

    method: str
    kind: str
    mean_score: float
    at_least_best: float
    top3: float
    mean_forward: float | None
    evaluated: int
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Selection:
    """The selection table and what it was measured against; ``best_model_given`` is False when the
    best model was chosen as the one with the highest mean oracle score (``best_model_mean``)."""

    oracle: str
    best_model: str
    best_model_mean: float
    best_model_given: bool
    instructions: int
    rows: list[SelectionRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Judged:
    """The oracle view of one example: scored candidate indices, their scores, the bars to clear."""

    indices: np.ndarray
    truth: np.ndarray
    best_model_score: float | None
    third: float

    def score_of(self, candidate: int) -> float | None:
        hit = np.flatnonzero(self.indices == candidate)
        return float(self.truth[hit[0]]) if len(hit) else None


def _judge(example: Example, oracle: str, best_model: str) -> _Judged:
    indices, truth = oracle_scores(example, oracle)
    ordered = np.sort(truth)[::-1]
    best = next((c.scores.get(oracle) for c in example.candidates if c.model == best_model), None)
    return _Judged(indices, truth, best, float(ordered[min(2, len(ordered) - 1)]))


def _row(
    method: str,
    kind: str,
    picks: list[float | None],
    judged: list[_Judged],
    forward: float | None,
    failed: int = 0,
) -> SelectionRow:
    """A row from each instruction's picked oracle score (None: no pick)."""
    scores = [(p, j) for p, j in zip(picks, judged, strict=True) if p is not None]
    vs_best = [p >= j.best_model_score for p, j in scores if j.best_model_score is not None]
    return SelectionRow(
        method=method,
        kind=kind,
        mean_score=float(np.mean([p for p, _ in scores])) if scores else NAN,
        at_least_best=float(np.mean(vs_best)) if vs_best else NAN,
        top3=float(np.mean([p >= j.third for p, j in scores])) if scores else NAN,
        mean_forward=forward,
        evaluated=len(scores),
        failed=failed,
    )


def _ranker_pick(ranking: Ranking, judged: _Judged) -> float | None:
    """The oracle score of the best-ranked candidate that has one."""
    for candidate in ranking.order:
        if (score := judged.score_of(candidate)) is not None:
            return score
    return None


def _random_row(judged: list[_Judged]) -> SelectionRow:
    """The exact expectation of picking a scored candidate uniformly at random."""
    means = [float(j.truth.mean()) for j in judged]
    vs_best = [
        float((j.truth >= j.best_model_score).mean()) for j in judged if j.best_model_score is not None
    ]
    top3 = [float((j.truth >= j.third).mean()) for j in judged]
    return SelectionRow(
        method="random (expected)",
        kind="random",
        mean_score=float(np.mean(means)) if means else NAN,
        at_least_best=float(np.mean(vs_best)) if vs_best else NAN,
        top3=float(np.mean(top3)) if top3 else NAN,
        mean_forward=0.0,
        evaluated=len(judged),
    )


def _models(examples: Sequence[Example]) -> list[str]:
    return list(dict.fromkeys(c.model for ex in examples for c in ex.candidates))


def model_means(examples: Sequence[Example], oracle: str) -> dict[str, float]:
    """Each model's mean oracle score (via :func:`~llmblend.data.stats.selection_scores`), file order."""
    models = _models(examples)
    means = selection_scores(list(examples), oracle, models)
    return {m: means[f"model: {m}"] for m in models if f"model: {m}" in means}


def best_single_model(examples: Sequence[Example], oracle: str) -> tuple[str, float]:
    """The model with the highest mean oracle score (first in file order on ties), and that mean."""
    by_model = model_means(examples, oracle)
    if not by_model:
        raise ValueError(f"no candidate has the oracle score {oracle!r}, so there is no best model")
    best = max(by_model, key=by_model.__getitem__)
    return best, by_model[best]


def selection_quality(
    examples: Sequence[Example],
    rankings: Mapping[str, Sequence[Ranking]],
    oracle: str,
    *,
    best_model: str | None = None,
) -> Selection:
    """Table 2 rows: each ranker (in the given order), random (expected), the oracle pick, then each
    single model by mean oracle score. Examples without any oracle-scored candidate are ignored."""
    examples = [ex for ex in examples if any(oracle in c.scores for c in ex.candidates)]
    if not examples:
        raise ValueError(f"no example has a candidate with the oracle score {oracle!r}")
    models = _models(examples)
    given = best_model is not None
    if best_model is None:
        best_model, best_mean = best_single_model(examples, oracle)
    elif best_model not in models:
        raise ValueError(f"--best-model {best_model!r} has no candidate; the models are: {', '.join(models)}")
    else:
        best_mean = model_means(examples, oracle).get(best_model, NAN)
    judged = [_judge(ex, oracle, best_model) for ex in examples]
    rows = []
    for method, ranked in rankings.items():
        _check_lengths(examples, ranked, method)
        picks = [_ranker_pick(r, j) if r.ok else None for r, j in zip(ranked, judged, strict=True)]
        forward = float(np.mean([r.n_forward for r in ranked]))
        rows.append(_row(method, "ranker", picks, judged, forward, failed=sum(not r.ok for r in ranked)))
    rows.append(_random_row(judged))
    rows.append(_row("oracle", "oracle", [float(j.truth.max()) for j in judged], judged, None))
    model_rows = []
    for model in models:
        picks = [
            next((c.scores.get(oracle) for c in ex.candidates if c.model == model), None) for ex in examples
        ]
        model_rows.append(_row(f"model: {model}", "model", picks, judged, 0.0))
    rows.extend(sorted(model_rows, key=lambda r: -r.mean_score if r.evaluated else math.inf))
    return Selection(oracle, best_model, float(best_mean), given, len(examples), rows)
