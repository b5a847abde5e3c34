"""Model ratings from pairwise battles: online Elo, Bradley–Terry MLE and bootstrap intervals.

LLM-Blender §5 judges candidates pairwise (GPT-Rank); a set of such judgements over many examples is
a tournament between the models, which Chatbot Arena (Zheng et al., 2023, "Judging LLM-as-a-judge
with MT-Bench and Chatbot Arena", and the Arena's rating notebook) turns into ratings in two ways:

* :func:`elo_ratings` — online Elo, battles applied in order (``K=4``, scale 400, base 10, start
  1000), a tie scoring 0.5 for each side;
* :func:`bradley_terry` — the maximum-likelihood Bradley–Terry fit (``P(i beats j) =
  σ(θ_i − θ_j)``), the "Elo via logistic regression" of the Arena notebook, which does not depend on
  battle order; reported on the Elo scale ``400·log10(e)·θ``, shifted so the mean rating is 1000.

:func:`bootstrap_ratings` gives percentile confidence intervals by resampling battles with
replacement. Everything here is pure numpy/scipy over a :class:`Battle` list.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import numpy as np
from scipy.optimize import minimize

log = logging.getLogger(__name__)

WINNERS: Final = ("a", "b", "tie")
#: Score of ``model_a`` for each winner: a win 1, a loss 0, a tie half a win each way.
_SCORE: Final = {"a": 1.0, "b": 0.0, "tie": 0.5}
METHODS: Final = ("elo", "bt")


@dataclass(frozen=True, slots=True)
class Battle:
    """One comparison of two models: ``winner`` is ``"a"`` (``model_a`` won), ``"b"`` or ``"tie"``."""

    model_a: str
    model_b: str
    winner: Literal["a", "b", "tie"]

    def __post_init__(self) -> None:
        for field_name in ("model_a", "model_b"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Battle.{field_name} must be a non-empty model name, got {value!r}")
        if self.model_a == self.model_b:
            raise ValueError(f"a battle needs two different models, got {self.model_a!r} twice")
        if self.winner not in WINNERS:
            raise ValueError(f"Battle.winner must be one of {list(WINNERS)}, got {self.winner!r}")


class RatingInterval(NamedTuple):
    """A model's rating on all battles, and the bootstrap percentile interval around it."""

    rating: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class _Encoded:
    """Battles as arrays: model names; ``model_a``/``model_b`` indices and ``model_a``'s score, shape (n,)."""

    models: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    score: np.ndarray


def _as_battle(item: Any, position: int) -> Battle:
    if isinstance(item, Battle):
        return item
    if isinstance(item, tuple) and len(item) == 3:
        return Battle(*item)
    raise TypeError(f"battle {position} is {item!r}; expected a Battle(model_a, model_b, winner)")


def _encode(battles: Iterable[Battle]) -> _Encoded:
    """Index the models (sorted by name) and turn the battles into arrays; ValueError when there are none."""
    checked = [_as_battle(item, i) for i, item in enumerate(battles)]
    if not checked:
        raise ValueError("no battles to rate: give at least one Battle(model_a, model_b, winner)")
    models = tuple(sorted({m for b in checked for m in (b.model_a, b.model_b)}))
    index = {m: i for i, m in enumerate(models)}
    a = np.fromiter((index[b.model_a] for b in checked), dtype=np.int64, count=len(checked))
    b = np.fromiter((index[b.model_b] for b in checked), dtype=np.int64, count=len(checked))
    score = np.fromiter((_SCORE[b.winner] for b in checked), dtype=np.float64, count=len(checked))
    return _Encoded(models, a, b, score)


def _check_scale(scale: float, base: float) -> None:
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not base > 1:
        raise ValueError(f"base must be greater than 1, got {base}")


# ---------------------------------------------------------------- online Elo


def _online_elo(
    a: np.ndarray, b: np.ndarray, score: np.ndarray, n_models: int, k: float, scale: float, base: float
) -> np.ndarray:
    """Online Elo of R battle sequences at once: ``a``, ``b``, ``score`` shape (R, n) → ratings (R, M).

    Ratings start at 0 (the caller adds ``init``). Each step updates every sequence's ratings with the
    t-th battle of that sequence, exactly as the Arena notebook's ``compute_online_elo`` does one.
    """
    rounds = a.shape[0]
    ratings = np.zeros((rounds, n_models))
    rows = np.arange(rounds)
    for t in range(a.shape[1]):
        ia, ib = a[:, t], b[:, t]
        expected_a = 1.0 / (1.0 + base ** ((ratings[rows, ib] - ratings[rows, ia]) / scale))
        delta = k * (score[:, t] - expected_a)
        ratings[rows, ia] += delta
        ratings[rows, ib] -= delta  # K·((1 − s_a) − e_b) with e_b = 1 − e_a
    return ratings


def elo_ratings(
    battles: Iterable[Battle],
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    init: float = 1000.0,
) -> dict[str, float]:
    """Online Elo over ``battles`` in the order given (Chatbot Arena's ``compute_online_elo``).

    For each battle, ``e_a = 1 / (1 + base ** ((r_b − r_a) / scale))`` and
    ``r_a += k·(s_a − e_a)``, ``r_b += k·((1 − s_a) − (1 − e_a))``, with ``s_a`` = 1, 0 or 0.5 (tie).
    Every model starts at ``init``. Returns model → rating.
    """
    if not k > 0:
        raise ValueError(f"k must be positive, got {k}")
    _check_scale(scale, base)
    enc = _encode(battles)
    ratings = _online_elo(enc.a[None], enc.b[None], enc.score[None], len(enc.models), k, scale, base)[0]
    return {m: float(init + r) for m, r in zip(enc.models, ratings, strict=True)}


# ---------------------------------------------------------------- Bradley–Terry


def _pair_totals(enc: _Encoded, weights: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Battles collapsed per ordered (a, b) index pair: ``(i, j, wins of i, games)``, each shape (P,).

    ``weights`` (shape (n,)) counts each battle that many times (a bootstrap resample).
    """
    n_models = len(enc.models)
    pair = enc.a * n_models + enc.b
    w = np.ones_like(enc.score) if weights is None else weights
    games = np.bincount(pair, weights=w, minlength=n_models * n_models)
    wins = np.bincount(pair, weights=w * enc.score, minlength=n_models * n_models)
    present = np.flatnonzero(games)
    return present // n_models, present % n_models, wins[present], games[present]


def _bt_objective(
    theta: np.ndarray, i: np.ndarray, j: np.ndarray, wins: np.ndarray, games: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Negative log-likelihood (+ ``l2/2·|θ|²``) of Bradley–Terry and its gradient, θ shape (M,).

    ``−Σ w·log σ(θ_i − θ_j) + (g − w)·log σ(θ_j − θ_i)`` over the pairs: a tie counts as half a win
    for each side, as in the Arena notebook.
    """
    d = theta[i] - theta[j]
    nll = float(np.sum(wins * np.logaddexp(0.0, -d) + (games - wins) * np.logaddexp(0.0, d)))
    residual = games / (1.0 + np.exp(-d)) - wins  # d(nll)/d(d): expected wins − observed wins
    grad = np.bincount(i, weights=residual, minlength=theta.size)
    grad -= np.bincount(j, weights=residual, minlength=theta.size)
    return nll + 0.5 * l2 * float(theta @ theta), grad + l2 * theta


def _fit_bt(
    totals: tuple[np.ndarray, ...], n_models: int, l2: float, start: np.ndarray | None = None
) -> np.ndarray:
    """Log-strengths θ (natural log, shape (M,)) maximising the Bradley–Terry likelihood."""
    x0 = np.zeros(n_models) if start is None else start
    result = minimize(
        _bt_objective, x0, args=(*totals, l2), jac=True, method="L-BFGS-B", options={"gtol": 1e-8}
    )
    if not result.success:
        log.warning("Bradley-Terry fit did not converge: %s", result.message)
    return result.x


def _bt_to_scale(theta: np.ndarray, scale: float, base: float, init: float) -> np.ndarray:
    """Log-strengths on the Elo scale, ``scale·log_base(e)·θ``, shifted so the mean is ``init``."""
    ratings = scale * theta / math.log(base)
    return ratings - ratings.mean(axis=-1, keepdims=True) + init


def bradley_terry(
    battles: Iterable[Battle],
    scale: float = 400.0,
    base: float = 10.0,
    init: float = 1000.0,
    l2: float = 1e-4,
) -> dict[str, float]:
    """Maximum-likelihood Bradley–Terry ratings (Chatbot Arena's "Elo via logistic regression").

    Fits log-strengths θ with ``P(i beats j) = σ(θ_i − θ_j)`` by minimising the negative
    log-likelihood (ties half a win each way) plus a tiny ``l2/2·|θ|²``, which fixes the free shift of
    θ and keeps an unbeaten model finite. Reported on the Elo scale: ``scale·log_base(e)·θ``, shifted
    so that the mean rating is ``init``; a difference of ``scale`` points means ``base``:1 odds.
    """
    if l2 < 0:
        raise ValueError(f"l2 must be non-negative, got {l2}")
    _check_scale(scale, base)
    enc = _encode(battles)
    theta = _fit_bt(_pair_totals(enc), len(enc.models), l2)
    ratings = _bt_to_scale(theta, scale, base, init)
    return {m: float(r) for m, r in zip(enc.models, ratings, strict=True)}


# ---------------------------------------------------------------- bootstrap


#: Every rating option and its default; :data:`_OPTIONS` says which method takes which.
_DEFAULTS: Final = {"k": 4.0, "scale": 400.0, "base": 10.0, "init": 1000.0, "l2": 1e-4}
_OPTIONS: Final = {
    "elo": frozenset({"k", "scale", "base", "init"}),
    "bt": frozenset({"scale", "base", "init", "l2"}),
}


def _check_options(method: str, options: dict[str, float]) -> dict[str, float]:
    """``options`` over the defaults, checked; ValueError naming what is unknown or out of range."""
    if method not in _OPTIONS:
        raise ValueError(f"unknown rating method {method!r}; choose one of {list(METHODS)}")
    unknown = sorted(set(options) - _OPTIONS[method])
    if unknown:
        raise ValueError(
            f"{method!r} ratings take no option(s) {unknown}; they take {sorted(_OPTIONS[method])}"
        )
    merged = {**_DEFAULTS, **options}
    _check_scale(merged["scale"], merged["base"])
    if not merged["k"] > 0:
        raise ValueError(f"k must be positive, got {merged['k']}")
    if merged["l2"] < 0:
        raise ValueError(f"l2 must be non-negative, got {merged['l2']}")
    return merged


def _bootstrap_elo(enc: _Encoded, samples: np.ndarray, o: dict[str, float]) -> np.ndarray:
    """Online Elo of every resample (rows of ``samples``, shape (R, n)) → ratings (R, M)."""
    ratings = _online_elo(
        enc.a[samples], enc.b[samples], enc.score[samples], len(enc.models), o["k"], o["scale"], o["base"]
    )
    return ratings + o["init"]


def _bootstrap_bt(enc: _Encoded, samples: np.ndarray, o: dict[str, float]) -> np.ndarray:
    """Bradley–Terry of every resample, each fitted on its per-pair totals → ratings (R, M)."""
    n_models = len(enc.models)
    start = _fit_bt(_pair_totals(enc), n_models, o["l2"])  # warm start: each resample is near the full fit
    thetas = np.empty((samples.shape[0], n_models))
    for r, sample in enumerate(samples):
        weights = np.bincount(sample, minlength=enc.score.size).astype(np.float64)
        thetas[r] = _fit_bt(_pair_totals(enc, weights), n_models, o["l2"], start)
    return _bt_to_scale(thetas, o["scale"], o["base"], o["init"])


_BOOTSTRAPS: Final[dict[str, Callable[[_Encoded, np.ndarray, dict[str, float]], np.ndarray]]] = {
    "elo": _bootstrap_elo,
    "bt": _bootstrap_bt,
}


def bootstrap_ratings(
    battles: Sequence[Battle],
    method: Literal["elo", "bt"] = "bt",
    rounds: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    **options: float,
) -> dict[str, RatingInterval]:
    """Ratings with bootstrap percentile intervals: model → ``(rating, low, high)``.

    ``low``/``high`` are the ``(1 ± confidence)/2`` percentiles of ``method``'s ratings over ``rounds``
    resamples of the battles with replacement (Chatbot Arena's bootstrap; a resample of online Elo
    takes the battles in the resampled order). ``rating`` is, for ``"bt"``, :func:`bradley_terry` on
    all battles; for ``"elo"``, the median over the rounds, as the Arena reports it: online Elo on the
    one given order is itself a single noisy draw (in simulations it falls outside its own 95%
    interval for about 3% of models), so the order-free median is the better point estimate.
    ``options`` go to the rating function (``k``, ``scale``, ``base``, ``init``; ``l2`` for "bt").
    Online Elo runs all rounds together, one vectorised step per battle; Bradley–Terry fits each round
    on per-pair totals, warm-started at the full fit (1,000 rounds of 3,000 battles: well under 1 s).
    """
    merged = _check_options(method, dict(options))
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    enc = _encode(battles)
    samples = np.random.default_rng(seed).integers(0, enc.score.size, size=(rounds, enc.score.size))
    boot = _BOOTSTRAPS[method](enc, samples, merged)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, middle, high = np.percentile(boot, [tail, 50.0, 100.0 - tail], axis=0)
    if method == "bt":
        full = bradley_terry(battles, **options)
        middle = np.array([full[m] for m in enc.models])
    return {
        m: RatingInterval(float(middle[i]), float(low[i]), float(high[i])) for i, m in enumerate(enc.models)
    }
