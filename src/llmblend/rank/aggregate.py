"""From a matrix of pairwise comparisons to one score per candidate (LLM-Blender §3.2).

A comparison matrix ``M`` has shape ``[N, N]``: ``M[i, j]`` is PairRanker's raw logit f(i, j) with
candidate ``i`` in slot 1 and ``j`` in slot 2 (> 0 means ``i`` is better). The diagonal is ignored.
Pairs that were not scored are NaN, so cheap strategies that score only some pairs use the same
functions. Scoring both orders removes the position bias: :func:`debias` keeps
``D[i, j] = (M[i, j] - M[j, i]) / 2``, so that D is antisymmetric (D[i, j] == -D[j, i]).

Every aggregator maps ``M`` (``float[N, N]``) to scores ``float64[N]``, higher is better:

* :func:`max_logits` — MaxLogits (§3.2): s_i = Σ_j (M_ij − M_ji);
* :func:`max_wins` — MaxWins (§3.2): the number of opponents beaten;
* :func:`least_squares` — scores whose differences fit the debiased comparisons best (for sparse
  comparison graphs; equals MaxLogits / (2N) on a complete matrix).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

#: An aggregator: comparison matrix ``float[N, N]`` → scores ``float64[N]`` (higher is better).
Aggregator = Callable[[ArrayLike], np.ndarray]


def as_matrix(matrix: ArrayLike) -> np.ndarray:
    """``matrix`` as a float64 ``[N, N]`` array; ValueError naming the shape when it is not square.

    Off-diagonal entries must be finite or NaN (not scored); the diagonal is ignored.
    """
    m = np.array(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a comparison matrix must be square, shape [N, N]; got shape {m.shape}")
    off = ~np.eye(len(m), dtype=bool)
    if np.isinf(m[off]).any():
        raise ValueError("a comparison matrix must hold finite logits or NaN (not scored); it has ±inf")
    return m


def debias(matrix: ArrayLike) -> np.ndarray:
    """Position-debiased comparisons ``D = (M − Mᵀ) / 2``, float64 ``[N, N]`` (§3.2, both orders).

    ``D[i, j] > 0`` means ``i`` beats ``j``; ``D[i, j] == -D[j, i]`` exactly. An entry is NaN where
    either order was not scored; the diagonal is NaN (a candidate is not compared with itself).
    """
    m = as_matrix(matrix)  # a copy
    np.fill_diagonal(m, np.nan)
    return (m - m.T) / 2


def scored_mask(matrix: ArrayLike) -> np.ndarray:
    """bool ``[N, N]``: True where both orders of a pair were scored (never on the diagonal)."""
    return ~np.isnan(debias(matrix))


def max_logits(matrix: ArrayLike) -> np.ndarray:
    """MaxLogits (§3.2): ``s_i = Σ_j (M_ij − M_ji)``, float64 ``[N]``.

    On a partial matrix the sum runs over the opponents scored in both orders and is rescaled to
    ``(N − 1) · mean``, so candidates with different numbers of comparisons stay comparable (and a
    complete matrix gives exactly the paper's sum). A candidate with no scored opponent gets 0,
    the neutral score.
    """
    d = debias(matrix)
    n = len(d)
    counts = (~np.isnan(d)).sum(axis=1)
    sums = 2 * np.nansum(d, axis=1)
    return np.where(counts > 0, sums * (n - 1) / np.maximum(counts, 1), 0.0)


def max_wins(matrix: ArrayLike) -> np.ndarray:
    """MaxWins (§3.2): the number of opponents beaten, float64 ``[N]``.

    A debiased comparison > 0 is a win, == 0 half a win. On a partial matrix the count is the win
    rate over scored opponents times ``N − 1`` (exactly the count on a complete matrix); a candidate
    with no scored opponent gets ``(N − 1) / 2``, the neutral score.
    """
    d = debias(matrix)
    n = len(d)
    counts = (~np.isnan(d)).sum(axis=1)
    wins = (d > 0).sum(axis=1) + 0.5 * (d == 0).sum(axis=1)
    return np.where(counts > 0, wins * (n - 1) / np.maximum(counts, 1), (n - 1) / 2)


def least_squares(matrix: ArrayLike) -> np.ndarray:
    """Scores ``s`` (float64 ``[N]``, summing to 0) minimising ``Σ (D_ij − (s_i − s_j))²`` over scored pairs.

    For the sparse comparison graphs of cheap strategies (§3.2 asks for fewer than N(N−1) passes):
    a comparison with a strong opponent counts for more than one with a weak opponent. On a complete
    matrix the solution is ``mean_j D_ij · (N − 1) / N`` — MaxLogits divided by 2N, the same order.
    When the scored pairs do not connect all candidates, each connected group sums to 0 and scores
    of different groups are not comparable.
    """
    d = debias(matrix)
    scored = ~np.isnan(d)
    laplacian = np.diag(scored.sum(axis=1)).astype(np.float64) - scored
    target = np.nansum(d, axis=1)
    if len(d) == 0:
        return np.zeros(0)
    solution, *_ = np.linalg.lstsq(laplacian, target, rcond=None)
    return solution - solution.mean()


def pair_winner(debiased: float, i: int, j: int) -> int:
    """The winner of ``i`` vs ``j`` given ``debiased = D[i, j]``; a tie goes to the lower index."""
    if debiased > 0:
        return i
    if debiased < 0:
        return j
    return min(i, j)


#: Aggregators by name, as the ranking strategies and the CLI name them.
AGGREGATORS: dict[str, Aggregator] = {
    "max-logits": max_logits,
    "max-wins": max_wins,
    "least-squares": least_squares,
}


def get_aggregator(name: str) -> Aggregator:
    """The aggregator called ``name``; ValueError listing the known names otherwise."""
    try:
        return AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(AGGREGATORS)}") from None


def aggregate(name: str, matrix: ArrayLike) -> np.ndarray:
    """Scores ``float64[N]`` of ``matrix`` by the aggregator called ``name``."""
    return get_aggregator(name)(matrix)
