"""What every reference metric shares (see :mod:`llmblend.eval.metrics` for the conventions).

:class:`Metric` (``score(candidates, references) -> MetricResult``), the input checks, batching
with progress, and the import of optional packages with a :class:`~llmblend.errors.MissingExtraError`
that names the ``pip install`` command.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

import numpy as np

from llmblend.errors import MissingExtraError

#: Told how many more examples are done.
ProgressFn = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class MetricResult:
    """Scores of N (candidate, reference) pairs: ``per_example`` float64 [N] and one ``corpus`` float."""

    name: str
    per_example: np.ndarray
    corpus: float


def require_module(module: str, package: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the pip package and extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(package, extra, purpose) from exc


def _check_texts(what: str, texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a sequence of strings, not one string; wrap it: [{texts[:30]!r}]")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{index}] is a {type(text).__name__}, not a str: {text!r}")


def check_inputs(
    candidates: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None
) -> None:
    """TypeError/ValueError unless candidates, references (and sources) are equally long lists of str."""
    _check_texts("candidates", candidates)
    _check_texts("references", references)
    if len(candidates) != len(references):
        raise ValueError(
            f"got {len(candidates)} candidates but {len(references)} references; "
            "each candidate is scored against the reference at the same index, so pass one reference each"
        )
    if sources is not None:
        _check_texts("sources", sources)
        if len(sources) != len(candidates):
            raise ValueError(
                f"got {len(sources)} sources for {len(candidates)} candidates; pass one source per "
                "candidate, or sources=None"
            )


def check_positive(option: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value!r}")


def _spans(total: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` index spans of at most ``size`` items covering ``range(total)``."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


class Metric:
    """A reference metric: ``score(candidates, references) -> MetricResult`` (see the module notes).

    Subclasses set ``name`` and implement :meth:`_per_example`; :meth:`_corpus` defaults to the mean.
    """

    name: str = "metric"
    higher_is_better: ClassVar[bool] = True

    def score(
        self,
        candidates: Sequence[str],
        references: Sequence[str],
        *,
        sources: Sequence[str] | None = None,
        progress: ProgressFn | None = None,
    ) -> MetricResult:
        """Score ``candidates[i]`` against ``references[i]``: per-example float64 [N] and a corpus score."""
        check_inputs(candidates, references, sources)
        candidates, references = list(candidates), list(references)
        if not candidates:
            return MetricResult(self.name, np.zeros(0, dtype=np.float64), math.nan)
        per_example = np.asarray(self._per_example(candidates, references, progress), dtype=np.float64)
        return MetricResult(self.name, per_example, self._corpus(candidates, references, per_example))

    def _per_example(
        self, candidates: list[str], references: list[str], progress: ProgressFn | None
    ) -> np.ndarray:
        raise NotImplementedError

    def _corpus(self, candidates: list[str], references: list[str], per_example: np.ndarray) -> float:
        return mean_or_nan(per_example)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def batched(
    n: int, size: int, progress: ProgressFn | None, batch_fn: Callable[[int, int], Sequence[float]]
) -> np.ndarray:
    """float64 [n]: ``batch_fn(start, stop)`` over consecutive spans, telling ``progress`` after each."""
    out = np.empty(n, dtype=np.float64)
    for start, stop in _spans(n, size):
        out[start:stop] = batch_fn(start, stop)
        if progress is not None:
            progress(stop - start)
    return out
