"""What every ranker shares: the :class:`Ranker` protocol, pair queries and item checks.

A ranker takes examples (an instruction with N candidates) and returns one
:class:`~llmblend.types.Ranking` per example. PairRanker (§3) and every baseline implement the same
protocol, so evaluation (`llmblend eval ranker`) treats them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from llmblend.types import Example, Ranking

if TYPE_CHECKING:
    import torch

#: The ``config.json`` key under which llmblend keeps its own settings in a saved model folder.
CONFIG_KEY = "llmblend"
#: Bumped when the saved layout changes in a way older readers cannot read.
FORMAT_VERSION = 1


class PairQuery(NamedTuple):
    """One ordered pair to score: the source, then candidate 1 and candidate 2."""

    source: str
    first: str
    second: str


#: Scores ordered pairs in one batched call: ``f(queries) -> float64[len(queries)]``; > 0 means
#: ``first`` is better. Raw, single-order logits: strategies debias by scoring both orders.
PairScorer = Callable[[Sequence[PairQuery]], np.ndarray]


class RankItem(NamedTuple):
    """What a ranking strategy needs from one example: the source text and candidate texts."""

    source: str
    candidates: Sequence[str]


@runtime_checkable
class Ranker(Protocol):
    """Anything that ranks the candidates of examples."""

    name: str

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        """One ranking per example, in input order; failures come back as ``Ranking.failed``."""
        ...


def rank_items(examples: Sequence[Example]) -> list[RankItem]:
    """The source and candidate texts of each example."""
    return [RankItem(ex.source, [c.text for c in ex.candidates]) for ex in examples]


def trivial_ranking(n_candidates: int) -> Ranking | None:
    """The ranking of an example that needs no model (0 or 1 candidates), else None."""
    if n_candidates == 0:
        return Ranking.failed("the example has no candidates to rank")
    if n_candidates == 1:
        return Ranking(scores=(0.0,), order=(0,), n_forward=0)
    return None


class TrainableRanker(Ranker, Protocol):
    """A ranker that ``llmblend train ranker`` can train (PairRanker, pointwise, dual encoder).

    The trainer only needs this: ``module(**encode_pairs(queries))`` returns ``(left, right)``,
    two float tensors of shape ``[len(queries), n_tasks]`` scoring ``first`` and ``second``
    (LLM-Blender §3.1: the comparison logit is ``mean_over_tasks(left - right)``).
    """

    module: torch.nn.Module
    n_tasks: int

    def encode_pairs(self, queries: Sequence[PairQuery]) -> dict[str, torch.Tensor]:
        """Tokenised, padded CPU tensors for a batch of ordered pairs."""
        ...

    def compare_pairs(self, queries: Sequence[PairQuery]) -> np.ndarray:
        """Position-debiased comparison, float64 ``[len(queries)]``; > 0 means ``first`` is better."""
        ...

    def save_pretrained(self, path: str | Path) -> None:
        """Write a self-describing Hugging Face folder (config.json with :data:`CONFIG_KEY`)."""
        ...

    def settings(self) -> dict[str, Any]:
        """The llmblend settings stored under :data:`CONFIG_KEY` in config.json."""
        ...
