"""The calibrated combination: P(i beats j | x) = σ(b + w · φ(i, j)) over a few pairwise terms.

Terms (each an antisymmetric ``float64[N, N]`` matrix per example, ``φ[i, j] = −φ[j, i]``):

* ``pool``: θ_i − θ_j, the source models' Bradley–Terry strengths (:mod:`llmblend.rank.pool`);
* ``ranker``: PairRanker's position-debiased logit ``(f(i, j) − f(j, i)) / 2`` (§3.2);
* ``length``: ``tanh((len_i − len_j) / s)``, characters, ``s`` the standard deviation of length
  differences in the fitting data (the length term of AlpacaEval's length-controlled win rate);
* ``consensus``: c_i − c_j, where c_i is the mean cosine similarity of candidate i's embedding to the
  other candidates' (MBR / consensus, LLM-Blender §5's strongest cheap baseline);
* ``rel_length``: r_i − r_j, where r_i = tanh of how unusually long candidate i is *for its model*
  (z-score of log characters against that model's answers in the pool's data): an unusually short
  answer from a strong model is often a refusal or a slip;
* ``pool_consensus``: the consensus term with each other answer weighted by its model's
  Bradley–Terry odds e^θ_j (weighted MBR): agreeing with what the strong models say counts more than
  agreeing with the weak ones. With equal strengths it is ``consensus``.

:func:`fit_switch` fits the weights by weighted logistic regression
(:func:`~llmblend.rank.calibration.logistic_fit`) on *challenger vs the pool's favourite* pairs
only, with an intercept ``b`` (the incumbent's edge): exactly the decision the pool-seeded
strategy makes. Each pair weighs its oracle-score gap, so the fit cares most about the
pairs whose order moves the picked answer's score. The ``full`` strategy makes the same decision
with the same intercept and threshold; only its ranker evidence differs: the ranker's strengths
fitted to every pair (:func:`~llmblend.rank.pool_ranker.ranker_evidence`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmblend.rank.calibration import logistic_fit

#: Every term the combination knows, in the order weights are stored and reported.
TERMS = ("pool", "ranker", "length", "consensus", "rel_length", "pool_consensus")
#: Terms that cost no ranker forward pass.
FREE_TERMS = ("pool", "length", "consensus", "rel_length", "pool_consensus")
#: Terms computed from the candidates' sentence embeddings.
EMBEDDING_TERMS = ("consensus", "pool_consensus")


def length_term(first: np.ndarray | Sequence[float], second: np.ndarray | Sequence[float], scale: float):
    """The length term of a pair, ``tanh((len_first − len_second) / scale)`` in characters,
    element-wise over arrays of lengths (broadcast)."""
    return np.tanh((np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)) / scale)


def length_matrix(texts: Sequence[str], scale: float) -> np.ndarray:
    """:func:`length_term` of every ordered pair of ``texts``: float64 ``[N, N]``."""
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    return length_term(lengths[:, None], lengths[None, :], scale)


def difference_matrix(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``v_i − v_j``: float64 ``[N, N]``."""
    v = np.asarray(values, dtype=np.float64)
    return v[:, None] - v[None, :]


def consensus_scores(
    embeddings: np.ndarray, strengths: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """Mean cosine similarity of each row of ``embeddings [N, D]`` to the other rows: ``[N]``.

    With ``strengths`` (θ per row), the mean is weighted by each other row's Bradley–Terry odds
    ``e^θ_j`` (weighted MBR); equal strengths give the plain mean.
    """
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    n = len(similarity)
    if n < 2:
        return np.zeros(n)
    theta = np.zeros(n) if strengths is None else np.asarray(strengths, dtype=np.float64)
    odds = np.tile(np.exp(theta - theta.max()), (n, 1))
    np.fill_diagonal(odds, 0.0)
    return (similarity * odds).sum(axis=1) / odds.sum(axis=1)


@dataclass(frozen=True)
class Combination:
    """Weights of the terms, the length scale, and the pool-seeded strategy's switching threshold.

    ``threshold`` is the calibrated probability a challenger must reach against the incumbent to
    take its place, and ``bias`` the intercept of that probability (pool-seeded strategy).
    ``fitted_on`` and ``calibration`` record the data and the expected calibration error (ECE) of
    the ranker alone and of the combination on it.
    """

    weights: dict[str, float]
    length_scale: float = 1000.0
    threshold: float = 0.5
    bias: float = 0.0
    fitted_on: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown combination term {unknown[0]!r}; known: {', '.join(TERMS)}")
        if not self.length_scale > 0:
            raise ValueError(f"length_scale must be > 0, got {self.length_scale}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Combination:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown combination key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def weight(self, term: str) -> float:
        return float(self.weights.get(term, 0.0))

    @property
    def uses_ranker(self) -> bool:
        return self.weight("ranker") != 0.0

    @property
    def uses_embeddings(self) -> bool:
        """Whether a weighted term (consensus, pool consensus) needs the candidates' embeddings."""
        return any(self.weight(term) != 0.0 for term in EMBEDDING_TERMS)

    def logits(self, terms: Mapping[str, np.ndarray], only: Sequence[str] = TERMS) -> np.ndarray:
        """``Σ_k w_k φ_k``: the combined log-odds matrix ``[N, N]`` over the terms in ``only``.

        A term with a non-zero weight must be in ``terms``; NaN entries (a ranker pair not scored)
        stay NaN.
        """
        total: np.ndarray | None = None
        for term in only:
            w = self.weight(term)
            if w == 0.0:
                continue
            if term not in terms:
                raise ValueError(f"the combination needs the {term!r} term, which was not computed")
            part = w * terms[term]
            total = part if total is None else total + part
        if total is None:
            n = len(next(iter(terms.values()))) if terms else 0
            return np.zeros((n, n))
        return total

    def contributions(self, terms: Mapping[str, np.ndarray], i: int, j: int) -> dict[str, float]:
        """Each term's share ``w_k φ_k[i, j]`` of the log-odds that ``i`` beats ``j``."""
        return {
            term: round(float(self.weight(term) * terms[term][i, j]), 6)
            for term in TERMS
            if self.weight(term) != 0.0 and term in terms
        }


def fit_switch(
    features: Sequence[Mapping[str, np.ndarray]],
    oracle: Sequence[np.ndarray],
    favourites: Sequence[int],
    terms: Sequence[str],
    *,
    l2: float = 1e-3,
) -> tuple[float, dict[str, float]]:
    """(bias, weights) of P(challenger beats the favourite) = σ(b + w · φ(challenger, favourite)).

    Only the pairs of each example's ``favourites[e]`` with every other candidate are used, with
    the label "the challenger scored higher" and weight |score gap| (ties drop out).
    """
    rows, labels, weights = [], [], []
    for matrices, scores, fav in zip(features, oracle, favourites, strict=True):
        for c in range(len(scores)):
            gap = scores[c] - scores[fav]
            if c == fav or gap == 0:
                continue
            x = [matrices[t][c, fav] for t in terms]
            if np.isfinite(x).all():
                rows.append([1.0, *x])
                labels.append(float(gap > 0))
                weights.append(abs(gap))
    if not rows:
        raise ValueError("no challenger scored differently from the favourite: nothing to fit")
    beta = logistic_fit(np.array(rows), np.array(labels), np.array(weights), l2)
    return round(float(beta[0]), 6), {t: round(float(b), 6) for t, b in zip(terms, beta[1:], strict=True)}
