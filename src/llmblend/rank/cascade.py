"""A cascade: the cheap local ranker shortlists, the LLM judge decides (LLM-Blender §3 + §5).

PairRanker (or any ranker) scores all N candidates for a few milliseconds; the judge then orders
only its ``top_m`` — a handful of calls instead of N(N−1). With ``margin``, the judge is asked only
where the first ranker is unsure: when its top two scores are closer than the margin. Pick the
margin on training data with :func:`calibrate_margin` (the smallest gap above which the first
ranker's pick agrees with the judge's often enough), never on the data you report.

The final order is the judge's order of the shortlist, then the rest in the first ranker's order;
scores are ``N − position``. ``usage`` says whether the judge was asked, the first ranker's gap and
the judge's calls, tokens and cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from llmblend.rank.base import Ranker
from llmblend.rank.budget import Budget
from llmblend.rank.judge_ranker import JudgeRanker, judge_from_spec
from llmblend.types import Example, Ranking


class CascadeRanker:
    """``first`` shortlists ``top_m`` candidates, ``judge`` orders them; see the module docstring.

    ``strategy`` in :meth:`rank` is the judge's; the first ranker uses its own default.
    """

    def __init__(
        self, first: Ranker, judge: JudgeRanker, *, top_m: int = 3, margin: float | None = None
    ) -> None:
        if top_m < 2:
            raise ValueError(f"top_m must be at least 2 (the judge decides among them), got {top_m}")
        if margin is not None and not margin >= 0:
            raise ValueError(f"margin must be at least 0 or None (always ask the judge), got {margin}")
        self.first, self.judge, self.top_m, self.margin = first, judge, top_m, margin
        self.name = f"cascade:{first.name}>{judge.name}"

    @classmethod
    def from_spec(cls, spec: str) -> CascadeRanker:
        """``MODELS.yaml[#NAME]``: the judge of the file and its ``judge.cascade`` settings."""
        from llmblend.rank.judge_config import CascadeSettings
        from llmblend.rank.registry import load_ranker

        judge, settings = judge_from_spec(spec)
        cascade = settings.cascade or CascadeSettings()
        return cls(load_ranker(cascade.first), judge, top_m=cascade.top_m, margin=cascade.margin)

    @property
    def strategy(self) -> str:
        """The judge's default strategy."""
        return self.judge.strategy

    def set_budget(self, budget: Budget) -> None:
        self.judge.set_budget(budget)

    def compare(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """The judge's debiased margins (the guard asks the stronger ranker)."""
        return self.judge.compare(instructions, a, b)

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        firsts = self.first.rank(examples)
        asked = [k for k, r in enumerate(firsts) if self._needs_judge(r)]
        shortlists = [replace(examples[k], candidates=self._shortlist(examples[k], firsts[k])) for k in asked]
        judged = dict(zip(asked, self.judge.rank(shortlists, strategy=strategy), strict=True))
        return [self._combine(firsts[k], judged.get(k)) for k in range(len(examples))]

    def _needs_judge(self, first: Ranking) -> bool:
        if not first.ok or len(first.order) < 2:
            return False
        return self.margin is None or top_gap(first) < self.margin

    def _shortlist(self, example: Example, first: Ranking) -> list:
        return [example.candidates[i] for i in first.order[: self.top_m]]

    def _combine(self, first: Ranking, judged: Ranking | None) -> Ranking:
        usage = {
            "judged": judged is not None,
            "first_gap": _rounded_gap(first),
            "first_n_forward": first.n_forward,
        }
        if judged is None:
            return replace(first, usage=usage)
        usage.update(judged.usage or {})
        if not judged.ok:  # the first ranker's order stands
            return replace(first, usage={**usage, "judge_error": judged.error})
        shortlist = first.order[: self.top_m]
        order = [shortlist[i] for i in judged.order] + list(first.order[self.top_m :])
        scores = np.zeros(len(order))
        scores[order] = np.arange(len(order), 0, -1, dtype=np.float64)
        ranking = Ranking.from_scores(scores, n_forward=first.n_forward + judged.n_forward)
        return replace(ranking, usage=usage)

    def close(self) -> None:
        for part in (self.first, self.judge):
            close = getattr(part, "close", None)
            if close is not None:
                close()


def top_gap(ranking: Ranking) -> float:
    """The first ranker's score gap between its top two candidates (inf with fewer than two)."""
    if len(ranking.order) < 2:
        return float("inf")
    return float(ranking.scores[ranking.order[0]] - ranking.scores[ranking.order[1]])


def _rounded_gap(ranking: Ranking) -> float | None:
    gap = top_gap(ranking) if ranking.ok else float("inf")
    return None if not np.isfinite(gap) else round(gap, 6)


def calibrate_margin(gaps: Sequence[float], agrees: Sequence[bool], *, target: float = 0.9) -> float:
    """The smallest gap ``g`` such that, on calibration examples with a first-ranker gap ≥ g, the
    first ranker's top-1 agrees with the judge's in at least ``target`` of them (at least 10 such
    examples); examples below ``g`` then go to the judge. ``inf`` (always ask) when none qualifies.
    """
    if len(gaps) != len(agrees):
        raise ValueError(f"gaps and agrees differ in length: {len(gaps)} vs {len(agrees)}")
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    pairs = sorted(zip(gaps, agrees, strict=True))
    for start, (gap, _) in enumerate(pairs):
        above = [agree for _, agree in pairs[start:]]
        if len(above) >= 10 and sum(above) / len(above) >= target:
            return float(gap)
    return float("inf")
