"""Calibrated pairwise probabilities: P(a better than b) = σ(margin / T), and how to measure them.

PairRanker's debiased margin (§3.2) orders pairs well but is not a probability: trained with a
margin loss, its logit is over- or under-confident. A single temperature ``T`` fitted by maximum
likelihood on held-out pairs (:func:`fit_temperature`) keeps the order and makes ``σ(margin / T)``
say how often the first answer really wins — what a reward model's user, a DPO labeller or a
guard threshold needs. It never depends on other candidates: a pair is scored alone.
:func:`expected_calibration_error` and :func:`brier_score` report it; the pool's calibrated
combination (:mod:`llmblend.rank.combine`) uses the same logistic fit and the same ECE.
"""

from __future__ import annotations

import math

import numpy as np


def logistic_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> np.ndarray:
    """Weighted, L2-penalised logistic regression (L-BFGS from zeros): the coefficients ``[T]``."""
    from scipy.optimize import minimize
    from scipy.special import expit

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ beta
        value = np.sum(w * (y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))) / w.sum()
        grad = x.T @ (w * (expit(z) - y)) / w.sum()
        return float(value + 0.5 * l2 * beta @ beta), grad + l2 * beta

    return minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B").x


def fit_temperature(margins: np.ndarray, outcomes: np.ndarray) -> float:
    """The temperature ``T > 0`` maximising the likelihood of ``outcomes`` (1: the first answer won)
    under ``σ(margin / T)``. Each pair is used in both orders, so the fit has no intercept to learn.

    ValueError when there are no pairs, or when the margins carry no signal (the fitted slope is
    not positive: no temperature makes them a probability).
    """
    margins = np.asarray(margins, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    if margins.shape != outcomes.shape or margins.ndim != 1 or not len(margins):
        raise ValueError(
            f"need equal, non-empty 1-d margins and outcomes; got {margins.shape}, {outcomes.shape}"
        )
    x = np.concatenate([margins, -margins])[:, None]
    y = np.concatenate([outcomes, 1 - outcomes])
    (slope,) = logistic_fit(x, y, np.ones(len(y)), l2=0.0)
    if not slope > 1e-6:
        raise ValueError(
            f"the margins do not predict the outcomes (fitted slope {slope:.3g}); nothing to calibrate"
        )
    return float(1.0 / slope)


def probabilities(margins: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """σ(margin / T), float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=np.float64) / temperature))


def expected_calibration_error(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> float:
    """ECE: the mean |accuracy − confidence| over equal-width probability bins, weighted by size."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    if not len(probabilities):
        return math.nan
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(outcomes[mask].mean() - probabilities[mask].mean())
    return float(error)


def brier_score(probabilities: np.ndarray, outcomes: np.ndarray) -> float:
    """The mean squared error of the probabilities (0 is perfect, 0.25 is a coin)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return (
        float(np.mean((probabilities - np.asarray(outcomes, dtype=np.float64)) ** 2))
        if len(probabilities)
        else math.nan
    )
