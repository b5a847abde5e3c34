"""``llmblend train calibrate``: fit PairRanker's temperature on held-out judged pairs, report ECE.

Pairs come from MixInstruct examples with an oracle score: every pair of candidates whose scores
differ by more than ``min_gap`` (near-ties say nothing about which is better), labelled by the
oracle. The examples are split by a hash of their id — the same split on every run — into a part
the temperature is fitted on and a part it is reported on (ECE and Brier score before and after),
so the figure is never measured on the pairs it was fitted on. ``write_temperature`` stores the
result in the model folder's ``config.json`` (``llmblend.temperature``), where
:meth:`~llmblend.rank.pairranker.PairRanker.probability` reads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.atomic import write_file
from llmblend.rank.base import CONFIG_KEY, PairQuery
from llmblend.rank.calibration import brier_score, expected_calibration_error, fit_temperature, probabilities
from llmblend.types import Example


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """The fitted temperature, and the held-out pairs' ECE / Brier score before (T = 1) and after."""

    temperature: float
    fit_pairs: int
    report_pairs: int
    ece_before: float
    ece_after: float
    brier_before: float
    brier_after: float
    accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def oracle_pairs(
    examples: Sequence[Example], oracle: str, *, min_gap: float = 0.1
) -> list[tuple[PairQuery, float]]:
    """(pair, 1.0 if the first answer has the higher oracle score else 0.0) for every candidate pair
    whose scores differ by more than ``min_gap`` and whose texts differ; KeyError names a missing score."""
    pairs = []
    for example in examples:
        for i, a in enumerate(example.candidates):
            for b in example.candidates[i + 1 :]:
                if oracle not in a.scores or oracle not in b.scores:
                    raise KeyError(f"example {example.id}: a candidate has no {oracle!r} score")
                gap = a.scores[oracle] - b.scores[oracle]
                if abs(gap) > min_gap and a.text != b.text:
                    pairs.append((PairQuery(example.source, a.text, b.text), float(gap > 0)))
    return pairs


def holdout_split(examples: Sequence[Example], holdout: float) -> tuple[list[Example], list[Example]]:
    """(fit, report): each example goes to the report part when the hash of its id falls below ``holdout``."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction strictly between 0 and 1, got {holdout}")
    fit, report = [], []
    for example in examples:
        share = int.from_bytes(hashlib.sha256(example.id.encode()).digest()[:8], "big") / 2**64
        (report if share < holdout else fit).append(example)
    return fit, report


def calibrate(
    compare, examples: Sequence[Example], oracle: str, *, holdout: float = 0.5, min_gap: float = 0.1
) -> CalibrationReport:
    """Fit the temperature of ``compare`` (``PairRanker.compare_pairs``) on one part of ``examples``
    and report it on the other."""
    fit_examples, report_examples = holdout_split(examples, holdout)
    fit, report = (
        oracle_pairs(fit_examples, oracle, min_gap=min_gap),
        oracle_pairs(report_examples, oracle, min_gap=min_gap),
    )
    if not fit or not report:
        raise ValueError(
            f"need judged pairs on both sides of the split; got {len(fit)} to fit, {len(report)} to report"
        )
    margins = np.asarray(compare([q for q, _ in fit + report]), dtype=np.float64)
    fit_margins, report_margins = margins[: len(fit)], margins[len(fit) :]
    temperature = fit_temperature(fit_margins, np.array([y for _, y in fit]))
    # each held-out pair in both orders, so the figures do not depend on which answer came first
    outcomes = np.array([y for _, y in report] + [1 - y for _, y in report])
    both = np.concatenate([report_margins, -report_margins])
    before, after = probabilities(both), probabilities(both, temperature)
    return CalibrationReport(
        temperature=temperature,
        fit_pairs=len(fit),
        report_pairs=len(report),
        ece_before=expected_calibration_error(before, outcomes),
        ece_after=expected_calibration_error(after, outcomes),
        brier_before=brier_score(before, outcomes),
        brier_after=brier_score(after, outcomes),
        accuracy=float(np.mean((both > 0) == (outcomes > 0.5))),
    )


def write_temperature(folder: str | Path, temperature: float) -> None:
    """Store ``temperature`` in ``folder/config.json`` under ``llmblend`` (written atomically)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if CONFIG_KEY not in config:
        raise ValueError(f"{path} has no {CONFIG_KEY!r} section: not a PairRanker llmblend saved")
    config[CONFIG_KEY]["temperature"] = round(float(temperature), 6)
    write_file(path, json.dumps(config, indent=2) + "\n")
