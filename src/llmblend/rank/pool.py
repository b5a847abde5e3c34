"""The pool model: Bradley–Terry strengths of the source models, fitted from judged data.

LLM-Blender ranks candidates by their text alone, yet which model wrote an answer predicts its
quality well: AlpacaEval's length-controlled win rate explains GPT-4's preferences by a *model*
term, a *length* term and an *instruction* term, and routers (RouteLLM, Zooter, Eagle) lean on model
identity. This module fits the model term: ``P(a beats b) = σ(θ_a − θ_b)`` over judged comparisons
of answers from models ``a`` and ``b``, optionally with a per-category offset
``θ_{m,c} = θ_m + δ_{m,c}`` (e.g. AlpacaEval's sub-source).

Both ``θ`` and ``δ`` have Gaussian priors centred at 0 (MAP estimate, L-BFGS), which shrinks a model
with few judgements towards the prior mean; that mean is also the strength of a model the pool has
never seen (:attr:`PoolModel.unknown_strength`), so an unknown model ranks like an average one.

Judged data comes from what llmblend reads: oracle scores in MixInstruct files, their
``cmp_results``, preference pairs that name both models, and the verdicts an LLM judge has already
given (its cache) on the candidates of MixInstruct files.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from llmblend.errors import LlmblendError
from llmblend.rank.base import PairQuery
from llmblend.types import Example, PreferencePair

#: Bumped when the pool file layout changes in a way older readers cannot read.
POOL_FORMAT_VERSION = 1
#: ``cmp_results`` verdict → outcome for model A (1 = A wins, 0.5 = tie).
CMP_OUTCOMES = {"A is better": 1.0, "B is better": 0.0, "Same good": 0.5, "Same bad": 0.5}


class PoolFileError(LlmblendError, ValueError):
    """A pool file that cannot be read; the message names the file and the bad key."""


class Comparison(NamedTuple):
    """One judged comparison: ``outcome`` is 1 when ``model_a`` won, 0 when it lost, 0.5 a tie."""

    model_a: str
    model_b: str
    outcome: float
    category: str | None = None


#: The category of an example (e.g. its AlpacaEval sub-source), or None.
CategoryOf = Callable[[Example], str | None]


def id_prefix_category(example: Example) -> str | None:
    """The part of the id before the first ``/`` (alpaca-blend ids are ``{sub-source}/{index}``)."""
    prefix, slash, _ = example.id.partition("/")
    return prefix if slash else None


def comparisons_from_scores(
    examples: Iterable[Example],
    oracle: str,
    *,
    tie_margin: float = 0.0,
    category_of: CategoryOf | None = None,
) -> list[Comparison]:
    """Every pair of candidates of an example that both carry ``oracle``: the higher score wins;
    scores within ``tie_margin`` are a tie. Candidates of the same model are not compared."""
    comparisons = []
    for example in examples:
        category = category_of(example) if category_of else None
        scored = [c for c in example.candidates if oracle in c.scores]
        for i, a in enumerate(scored):
            for b in scored[i + 1 :]:
                if a.model == b.model:
                    continue
                gap = a.scores[oracle] - b.scores[oracle]
                outcome = 0.5 if abs(gap) <= tie_margin else float(gap > 0)
                comparisons.append(Comparison(a.model, b.model, outcome, category))
    return comparisons


def comparisons_from_cmp_results(
    examples: Iterable[Example], *, category_of: CategoryOf | None = None
) -> list[Comparison]:
    """The ``cmp_results`` verdicts (``"modelA,modelB": "A is better"`` …) of MixInstruct examples."""
    comparisons = []
    for example in examples:
        category = category_of(example) if category_of else None
        for key, verdict in (example.cmp_results or {}).items():
            model_a, _, model_b = str(key).partition(",")
            if verdict in CMP_OUTCOMES and model_a and model_b and model_a != model_b:
                comparisons.append(Comparison(model_a, model_b, CMP_OUTCOMES[verdict], category))
    return comparisons


#: Scores of ordered pairs already judged (> 0: ``first`` better), NaN where none is known; e.g.
#: :meth:`~llmblend.rank.judge_ranker.JudgeRanker.cached_scores`, which reads an LLM judge's cache.
KnownScores = Callable[[Sequence[PairQuery]], np.ndarray]


def comparisons_from_judged_pairs(
    examples: Iterable[Example], known: KnownScores, *, category_of: CategoryOf | None = None
) -> list[Comparison]:
    """Every pair of candidates from two models that ``known`` has a score for, in either order.

    The orders known are averaged into a debiased margin ``m`` in [−1, 1] (``(s(a, b) − s(b, a)) / 2``
    with both, the one alone otherwise); the outcome for ``a`` is ``(1 + m) / 2``, so a verdict that
    flips with the order is a tie and a soft margin gives a soft outcome.
    """
    pairs = [
        (example, a, b)
        for example in examples
        for i, a in enumerate(example.candidates)
        for b in example.candidates[i + 1 :]
        if a.model != b.model
    ]
    forward = [PairQuery(ex.source, a.text, b.text) for ex, a, b in pairs]
    backward = [PairQuery(ex.source, b.text, a.text) for ex, a, b in pairs]
    scores = np.asarray(known(forward + backward), dtype=np.float64) if pairs else np.zeros(0)
    comparisons = []
    for k, (example, a, b) in enumerate(pairs):
        sides = [scores[k], -scores[len(pairs) + k]]
        sides = [s for s in sides if np.isfinite(s)]
        if sides:
            margin = float(np.clip(np.mean(sides), -1.0, 1.0))
            category = category_of(example) if category_of else None
            comparisons.append(Comparison(a.model, b.model, (1.0 + margin) / 2, category))
    return comparisons


def comparisons_from_pairs(pairs: Iterable[PreferencePair]) -> list[Comparison]:
    """Preference pairs that name both models (``chosen_model`` beat ``rejected_model``)."""
    return [
        Comparison(p.chosen_model, p.rejected_model, 1.0, None)
        for p in pairs
        if p.chosen_model and p.rejected_model and p.chosen_model != p.rejected_model
    ]


@dataclass(frozen=True)
class PoolModel:
    """Fitted strengths of source models (log-odds scale) and what they were fitted from.

    ``strengths[m]`` is θ_m; ``category_offsets[c][m]`` is δ_{m,c}; ``judgements[m]`` counts the
    comparisons model ``m`` took part in; ``length_stats[m]`` is the mean and standard deviation of
    ``log(1 + characters)`` of model ``m``'s answers in the fitting data. ``combination`` (a
    :class:`~llmblend.rank.combine.Combination` as a dict) holds the calibrated weights that
    combine θ with the ranker and other terms.
    """

    strengths: dict[str, float]
    judgements: dict[str, int]
    oracle: str | None = None
    unknown_strength: float = 0.0
    prior_scale: float = 1.0
    category_prior_scale: float = 0.5
    category_offsets: dict[str, dict[str, float]] = field(default_factory=dict)
    length_stats: dict[str, list[float]] = field(default_factory=dict)
    combination: dict[str, Any] | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)
    format_version: int = POOL_FORMAT_VERSION

    def strength(self, model: str | None, category: str | None = None) -> float:
        """θ of ``model`` (plus its category offset); :attr:`unknown_strength` for an unknown model."""
        if model is None or model not in self.strengths:
            return self.unknown_strength
        return self.strengths[model] + self.category_offsets.get(category or "", {}).get(model, 0.0)

    def relative_length(self, model: str | None, text: str) -> float:
        """tanh of how unusually long ``text`` is for ``model`` (a z-score of log characters); 0 for
        a model without length statistics."""
        stats = self.length_stats.get(model or "")
        if not stats:
            return 0.0
        mean, std = stats
        return math.tanh((math.log1p(len(text)) - mean) / max(std, 1e-6))

    def knows(self, model: str | None) -> bool:
        return model is not None and model in self.strengths

    def favourite(self, models: Sequence[str | None], category: str | None = None) -> int:
        """Index of the strongest of ``models`` (the first on ties)."""
        values = [self.strength(m, category) for m in models]
        return int(np.argmax(values))

    # ---- files ---------------------------------------------------------------------------------

    def with_combination(self, combination: Mapping[str, Any] | None) -> PoolModel:
        values = asdict(self)
        values["combination"] = None if combination is None else dict(combination)
        return PoolModel(**values)

    def save(self, path: str | Path) -> None:
        """Write the pool as indented JSON (atomic: a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        staging.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> PoolModel:
        """Read a pool file; :class:`PoolFileError` naming the file and key when it is not one."""
        path = Path(path)
        if not path.is_file():
            raise PoolFileError(
                f"{path}: no such pool file; make one with: llmblend train pool FILE --out {path}"
            )
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PoolFileError(f"{path}: not JSON ({exc})") from None
        if not isinstance(values, dict) or "strengths" not in values:
            raise PoolFileError(
                f"{path}: not a pool file (no 'strengths'); make one with llmblend train pool"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise PoolFileError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        if values.get("format_version", 1) > POOL_FORMAT_VERSION:
            raise PoolFileError(
                f"{path}: format_version {values['format_version']} is newer than this llmblend reads "
                f"({POOL_FORMAT_VERSION}); upgrade llmblend"
            )
        return cls(**values)


def length_statistics(examples: Iterable[Example]) -> dict[str, list[float]]:
    """Per model: [mean, standard deviation] of ``log(1 + characters)`` of its answers."""
    logs: dict[str, list[float]] = {}
    for example in examples:
        for candidate in example.candidates:
            logs.setdefault(candidate.model, []).append(math.log1p(len(candidate.text)))
    return {m: [round(float(np.mean(v)), 6), round(float(np.std(v)), 6)] for m, v in sorted(logs.items())}


def fit_pool(
    comparisons: Sequence[Comparison],
    *,
    prior_scale: float = 1.0,
    category_prior_scale: float = 0.5,
    use_categories: bool = False,
    oracle: str | None = None,
    fitted_on: Mapping[str, Any] | None = None,
) -> PoolModel:
    """MAP Bradley–Terry strengths: θ ~ N(0, prior_scale²), δ ~ N(0, category_prior_scale²).

    Each comparison adds ``−[y log σ(Δ) + (1 − y) log σ(−Δ)]`` with ``Δ = θ_a + δ_a,c − θ_b − δ_b,c``.
    Deterministic (L-BFGS from zeros). ValueError when there is nothing to fit or a scale is ≤ 0.
    """
    if not comparisons:
        raise ValueError(
            "no judged comparisons to fit a pool on: the files hold no oracle scores, "
            "cmp_results or preference pairs naming both models"
        )
    if prior_scale <= 0 or category_prior_scale <= 0:
        raise ValueError(f"prior scales must be > 0, got {prior_scale} and {category_prior_scale}")
    models = sorted({m for c in comparisons for m in (c.model_a, c.model_b)})
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[c.model_a] for c in comparisons])
    b = np.array([index[c.model_b] for c in comparisons])
    y = np.array([c.outcome for c in comparisons], dtype=np.float64)
    categories = sorted({c.category for c in comparisons if c.category}) if use_categories else []
    cat_index = {name: k for k, name in enumerate(categories)}
    cat = np.array([cat_index.get(c.category, -1) if c.category else -1 for c in comparisons])
    theta, delta = _fit_map(a, b, y, cat, len(models), len(categories), prior_scale, category_prior_scale)
    counts = Counter(m for c in comparisons for m in (c.model_a, c.model_b))
    offsets = {
        name: {m: round(float(delta[k, i]), 6) for m, i in index.items() if abs(delta[k, i]) > 1e-9}
        for name, k in cat_index.items()
    }
    return PoolModel(
        strengths={m: round(float(theta[i]), 6) for m, i in index.items()},
        judgements={m: counts[m] for m in models},
        oracle=oracle,
        prior_scale=prior_scale,
        category_prior_scale=category_prior_scale,
        category_offsets=offsets,
        fitted_on={"comparisons": len(comparisons), **dict(fitted_on or {})},
    )


def _fit_map(
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    cat: np.ndarray,
    n_models: int,
    n_categories: int,
    prior_scale: float,
    category_prior_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """θ [n_models] and δ [n_categories, n_models] minimising the penalised BT log-loss."""
    from scipy.optimize import minimize

    has_cat = cat >= 0

    def unpack(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return params[:n_models], params[n_models:].reshape(n_categories, n_models)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        theta, delta = unpack(params)
        diff = theta[a] - theta[b]
        if n_categories:
            diff = diff + np.where(has_cat, delta[cat, a] - delta[cat, b], 0.0)
        # log σ(x) = −logaddexp(0, −x): stable for any x
        nll = np.sum(y * np.logaddexp(0, -diff) + (1 - y) * np.logaddexp(0, diff))
        residual = 1.0 / (1.0 + np.exp(-diff)) - y  # d nll / d diff
        grad_theta = np.bincount(a, residual, n_models) - np.bincount(b, residual, n_models)
        grad_theta += theta / prior_scale**2
        value = nll + 0.5 * np.sum(theta**2) / prior_scale**2
        grad = [grad_theta]
        if n_categories:
            grad_delta = np.zeros((n_categories, n_models))
            np.add.at(grad_delta, (cat[has_cat], a[has_cat]), residual[has_cat])
            np.add.at(grad_delta, (cat[has_cat], b[has_cat]), -residual[has_cat])
            grad_delta += delta / category_prior_scale**2
            value += 0.5 * np.sum(delta**2) / category_prior_scale**2
            grad.append(grad_delta.ravel())
        return float(value), np.concatenate(grad)

    start = np.zeros(n_models * (1 + n_categories))
    result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-8})
    return unpack(result.x)
