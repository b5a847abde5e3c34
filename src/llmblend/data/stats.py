"""Descriptive statistics of a MixInstruct file: per-model scores, the best-model distribution
(LLM-Blender Figure 1), answer lengths, and the oracle score of simple selection rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from llmblend.types import Example

#: Score names used as the oracle when none is given, most trusted first.
ORACLE_PREFERENCE = ("gpt4_win", "gpt4_score", "gpt_rank", "bartscore", "bertscore", "bleu")


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One model over a file: its mean scores, how often it is the best, how long it answers."""

    model: str
    candidates: int
    mean_scores: dict[str, float]
    best_share: float
    mean_words: float
    median_words: float
    empty: int


@dataclass(frozen=True, slots=True)
class DatasetStats:
    """What ``llmblend data stats`` prints.

    ``selection`` maps a selection rule ("oracle pick", "random pick", "longest answer", and
    "model: NAME" for each model) to the mean oracle score of the candidate it picks; None when
    the file has no oracle score.
    """

    examples: int
    candidates: int
    score_names: list[str]
    oracle: str | None
    models: list[ModelStats]
    selection: dict[str, float] | None


def choose_oracle(score_names: Iterable[str]) -> str | None:
    """The first of :data:`ORACLE_PREFERENCE` present, else the first name alphabetically."""
    names = sorted(score_names)
    return next((n for n in ORACLE_PREFERENCE if n in names), names[0] if names else None)


def _best_shares(examples: list[Example], oracle: str, models: list[str]) -> dict[str, float]:
    """Share of examples each model wins on ``oracle``; a k-way tie gives each 1/k."""
    wins = dict.fromkeys(models, 0.0)
    judged = 0
    for example in examples:
        scored = [c for c in example.candidates if oracle in c.scores]
        if not scored:
            continue
        judged += 1
        top = max(c.scores[oracle] for c in scored)
        best = [c.model for c in scored if c.scores[oracle] == top]
        for model in best:
            wins[model] += 1.0 / len(best)
    return {m: w / judged if judged else 0.0 for m, w in wins.items()}


def selection_scores(examples: list[Example], oracle: str, models: list[str]) -> dict[str, float]:
    """Mean oracle score of the candidate each rule picks, over examples with oracle scores.

    "random pick" is the exact expectation of a uniform pick (the mean of the scored candidates),
    not one random draw; "longest answer" picks the most characters (first on ties).
    """
    picks: dict[str, list[float]] = {"oracle pick": [], "random pick": [], "longest answer": []}
    per_model: dict[str, list[float]] = {m: [] for m in models}
    for example in examples:
        scored = [c for c in example.candidates if oracle in c.scores]
        if not scored:
            continue
        values = np.array([c.scores[oracle] for c in scored])
        picks["oracle pick"].append(float(values.max()))
        picks["random pick"].append(float(values.mean()))
        longest = max(range(len(scored)), key=lambda i: (len(scored[i].text), -i))
        picks["longest answer"].append(float(values[longest]))
        for candidate in scored:
            per_model[candidate.model].append(candidate.scores[oracle])
    rules = picks | {f"model: {m}": v for m, v in per_model.items()}
    return {name: float(np.mean(v)) for name, v in rules.items() if v}


def _model_stats(examples: list[Example], model: str, best_share: float) -> ModelStats:
    candidates = [c for e in examples for c in e.candidates if c.model == model]
    names = sorted({k for c in candidates for k in c.scores})
    means = {n: float(np.mean([c.scores[n] for c in candidates if n in c.scores])) for n in names}
    words = np.array([len(c.text.split()) for c in candidates])
    return ModelStats(
        model=model,
        candidates=len(candidates),
        mean_scores=means,
        best_share=best_share,
        mean_words=float(words.mean()),
        median_words=float(np.median(words)),
        empty=sum(1 for c in candidates if not c.text.strip()),
    )


def dataset_stats(examples: Iterable[Example], oracle: str | None = None) -> DatasetStats:
    """Statistics of a set of examples; ``oracle`` names the score that says which answer is best."""
    examples = list(examples)
    models = list(dict.fromkeys(c.model for e in examples for c in e.candidates))
    score_names = sorted({k for e in examples for c in e.candidates for k in c.scores})
    if oracle is None:
        oracle = choose_oracle(score_names)
    elif oracle not in score_names:
        raise ValueError(f"no candidate has the score {oracle!r}; the file has {score_names or 'none'}")
    shares = _best_shares(examples, oracle, models) if oracle else dict.fromkeys(models, 0.0)
    return DatasetStats(
        examples=len(examples),
        candidates=sum(len(e.candidates) for e in examples),
        score_names=score_names,
        oracle=oracle,
        models=[_model_stats(examples, m, shares[m]) for m in models],
        selection=selection_scores(examples, oracle, models) if oracle else None,
    )
