"""Recipes: the options a ranker (or the backends) are built from, small and picklable, never a
loaded model.

``llmblend rank`` builds its ranker from ``--ranker``, or ``--model``/``--runtime``/``--pool``, with
``--batch-size`` and a judge's budget. A :class:`RankerRecipe` holds exactly those options, so an
engine can ship it to each worker (a Ray actor) and every worker builds the same ranker the local
command would, through the same code (:func:`llmblend.cli.common.choose_ranker`). A
:class:`SlotsRecipe` does the same for the backends that ``generate`` and ``best-of-n`` ask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmblend.backends.base import Backend
    from llmblend.backends.config import Slot
    from llmblend.rank.base import Ranker


@dataclass(frozen=True, slots=True)
class RankerRecipe:
    """How to build a ranker: a registry spec, or PairRanker's model, runtime and pool file."""

    spec: str | None = None
    model: str | None = None
    runtime: str | None = None
    pool: Path | None = None
    batch_size: int = 32
    max_calls: int | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    @property
    def label(self) -> str:
        """The ``ranking.ranker`` field of the records this ranker writes."""
        if self.spec is not None:
            return self.spec
        label = self.model or "default"
        return label if self.pool is None else f"pool:{self.pool}+{label}"

    def check(self) -> None:
        """Fail now, before any worker starts, on options that cannot build a ranker."""
        if self.spec is None:
            if self.pool is not None:
                from llmblend.rank.pool import PoolModel

                PoolModel.load(self.pool)
            return
        given = [
            f for f, v in (("--model", self.model), ("--pool", self.pool), ("--runtime", self.runtime)) if v
        ]
        if given:
            raise ValueError(f"--ranker {self.spec} replaces {', '.join(given)}: give one or the other")
        from llmblend.rank.registry import check_spec

        check_spec(self.spec)

    def build(self) -> tuple[Ranker, str]:
        """The ranker (with its judge budget, if any) and its label, as ``llmblend rank`` builds them."""
        from llmblend.cli.common import apply_budget, choose_ranker

        ranker, label = choose_ranker(self.spec, self.model, self.runtime, self.batch_size, self.pool)
        apply_budget(ranker, self.max_calls, self.max_tokens, self.max_seconds)
        return ranker, label

    def judge_backends(self) -> list[Backend]:
        """The backend an LLM judge of this recipe (a ``judge:`` or ``cascade:`` spec) calls, built
        but not started; none for other rankers. A Ray job limits its calls cluster-wide."""
        if self.spec is None or not self.spec.startswith(("judge:", "cascade:")):
            return []
        from llmblend.rank.judge_ranker import judge_from_spec

        return [judge_from_spec(self.spec.partition(":")[2])[0].backend]

    def strategy_for(self, ranker: Ranker, strategy: str | None) -> str:
        """``strategy``, or the default one for this ranker (see :func:`default_strategy`)."""
        return strategy or default_strategy(ranker, self.pool)

    def settings(self) -> dict[str, Any]:
        """The recipe as JSON-ready settings (a shard manifest records them)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def judge_backends_of(ranker: Ranker) -> list[Backend]:
    """The backend a built ranker's LLM judge calls: a judge ranker's ``judge`` (its
    PairwiseJudge) and a cascade's ``judge`` (a judge ranker) both have it as ``backend``."""
    backend = getattr(getattr(ranker, "judge", None), "backend", None)
    return [] if backend is None else [backend]


def default_strategy(ranker: Ranker, pool: Path | None) -> str:
    """The strategy ``llmblend rank`` uses when none is given: pool-seeded with a pool, a judge's
    own (its ``judge:`` section), else sparse-refine."""
    if pool is not None:
        from llmblend.rank.pool_ranker import DEFAULT_POOL_STRATEGY

        return DEFAULT_POOL_STRATEGY
    if ranker.name.startswith(("judge:", "cascade:")):
        return ranker.strategy
    return "sparse-refine"


@dataclass(frozen=True, slots=True)
class SlotsRecipe:
    """How to build the candidates' slots: every backend of a models.yaml (``llmblend generate``),
    or ``n`` samples of one of them (``llmblend best-of-n``: ``n`` set, ``backend`` None for the
    first). ``config`` None is the packaged local models."""

    config: Path | None = None
    backend: str | None = None
    n: int | None = None

    def build(self, cores: int | None = None) -> list[Slot]:
        """The slots, local models sharing ``cores`` cores (default: the machine's); cheap, since
        backends load their models on first use."""
        if self.n is None:
            from llmblend.backends.config import build_slots, load_backend_config

            return build_slots(load_backend_config(self.config), cores)
        from llmblend.blend.best_of_n import best_of_n_slots

        return best_of_n_slots(self.config, self.backend, self.n, cores)

    def settings(self) -> dict[str, Any]:
        """The recipe as JSON-ready settings."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
