"""An LLM judge as a pairwise ranker: pairwise ranking prompting (PRP, Qin et al., 2023) with the
MT-bench ``pair-v2`` or LLM-Blender's GPT-Rank prompt (§5), behind the same strategies as PairRanker.

:class:`JudgeRanker` is a :data:`~llmblend.rank.base.PairScorer`: one ordered pair is one judge call
with the first answer shown as A, scored +1 (A better), −1 (B better) or 0 (a tie, an unreadable
reply or a failed call). The strategies (§3.2) ask both orders of each pair they play and average
them, so a judge that always prefers slot A gives only zero margins: its position bias cancels
instead of skewing the ranking. The judged answers' model names never reach the prompt. Judgements
go to the judge's JSONL cache when one is given, so a rerun asks only what it lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmblend.backends.base import Backend
from llmblend.blend.aio import LoopRunner
from llmblend.eval.judge import PairwiseJudge
from llmblend.rank.base import PairQuery, rank_items
from llmblend.types import Example, Ranking

#: The score of one judged ordering, by its verdict about positions (A, B).
VERDICT_SCORES = {"A is better": 1.0, "B is better": -1.0}


class JudgeRanker:
    """Ranks candidates with an LLM judge; see the module docstring.

    ``prompt``: ``"mt-bench"`` (default) or ``"gpt-rank"``; ``strategy``: the default ranking
    strategy (``full`` asks every pair in both orders: N(N−1) calls; ``bubble``, ``knockout`` and
    ``sparse-refine`` ask fewer); ``cache_path``: the judge's resumable JSONL cache.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        prompt: str = "mt-bench",
        strategy: str = "full",
        cache_path: str | Path | None = None,
    ) -> None:
        self.judge = PairwiseJudge(backend, prompt, cache_path=cache_path)  # type: ignore[arg-type]
        self.strategy = strategy
        self.name = f"judge:{backend.name}"
        self._loop = LoopRunner("JudgeRanker", "none: rank from a worker thread")

    @classmethod
    def from_spec(cls, spec: str) -> JudgeRanker:
        """``MODELS.yaml`` (its first backend) or ``MODELS.yaml#NAME`` (the backend named NAME)."""
        from llmblend.backends.config import build_backend, load_backend_config
        from llmblend.errors import LlmblendError

        path, _, name = spec.partition("#")
        backends = load_backend_config(path).backends
        chosen = [b for b in backends if not name or b.display_name == name]
        if not chosen:
            known = ", ".join(b.display_name for b in backends)
            raise LlmblendError(f"{path} has no backend named {name!r}; it has: {known}")
        return cls(build_backend(chosen[0]))

    def score_pairs(self, queries: Sequence[PairQuery]) -> np.ndarray:
        """One judge call per ordered pair: +1 when the first answer wins, −1 when it loses, else 0."""
        from llmblend.eval.judge import JudgeItem

        items = [JudgeItem(q.source, "", q.first, q.second, "first", "second") for q in queries]
        judgements = self._loop.run(self.judge.judge_ordered(items))
        return np.array([VERDICT_SCORES.get(j.verdict or "", 0.0) for j in judgements])

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        """One ranking per example; every example's pairs of a round go to the judge at once."""
        from llmblend.rank.strategies import run_strategy

        return run_strategy(strategy or self.strategy, rank_items(examples), self.score_pairs, top_k=top_k)

    def close(self) -> None:
        self._loop.run(self.judge.backend.aclose())
        self._loop.close()
