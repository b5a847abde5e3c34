"""``llmblend train pool``: fit the pool's model strengths, then calibrate how to combine them.

1. **Strengths** (:func:`~llmblend.rank.pool.fit_pool`) from every judged comparison in the files:
   oracle scores (``--oracle``), ``cmp_results``, preference pairs that name both models, and an
   LLM judge's cached verdicts on the files' candidates (``--judge``); plus each model's
   answer-length statistics.
2. **Combination** (:func:`fit_combination`): the weights of P(challenger beats the pool's
   favourite) (:func:`~llmblend.rank.combine.fit_switch`) and the switching threshold, chosen by
   cross-validated top-1 (the mean oracle score of the pick). Every feature is *cross-fitted*: the
   strengths and length statistics that describe an instruction were fitted without it, so the
   pool term is judged as it will be on new instructions.

   * ranker-free terms (pool, length, relative length, the two consensus terms): fitted on the training files
     themselves, in folds by instruction;
   * with the ranker term: on ``--calibrate`` examples the ranker was not trained on (it scores
     every challenger against the favourite there), with strengths fitted without them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.data.mixinstruct import read_mixinstruct
from llmblend.data.preferences import read_preferences
from llmblend.data.validate import detect_format
from llmblend.errors import LlmblendError
from llmblend.rank.base import PairQuery
from llmblend.rank.calibration import expected_calibration_error
from llmblend.rank.combine import EMBEDDING_TERMS, TERMS, Combination, fit_switch
from llmblend.rank.pool import (
    KnownScores,
    PoolModel,
    comparisons_from_cmp_results,
    comparisons_from_judged_pairs,
    comparisons_from_pairs,
    comparisons_from_scores,
    fit_pool,
    id_prefix_category,
    length_statistics,
)
from llmblend.rank.pool_ranker import free_terms, incumbent_ranking, pool_favourite
from llmblend.types import Example, PreferencePair, prompt_text

log = logging.getLogger(__name__)

#: The pool-seeded thresholds tried (cross-validated top-1 picks one).
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9)
#: How the threshold is chosen from the cross-validated top-1 of each: ``best``, the highest mean;
#: ``one-se``, the highest threshold within one standard error of it (switches less); ``gated``,
#: the best one only when it beats the most cautious by more than one standard error.
THRESHOLD_RULES = ("best", "one-se", "gated")
DEFAULT_THRESHOLD_RULE = "gated"
DEFAULT_TERMS = ("pool", "length", "rel_length", "pool_consensus")
FOLDS = 5

#: Starts a progress bar: (description, total) → advance(n).
ProgressStart = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class JudgedData:
    """What the input files hold: examples (MixInstruct) and preference pairs."""

    examples: list[Example]
    pairs: list[PreferencePair]

    @classmethod
    def read(cls, files: Sequence[str | Path]) -> JudgedData:
        examples, pairs = [], []
        for file in files:
            if detect_format(file) == "preferences":
                pairs.extend(read_preferences(file))
            else:
                examples.extend(read_mixinstruct(file))
        return cls(examples, pairs)

    def without(self, sources: set[str]) -> JudgedData:
        """The data with every instruction in ``sources`` left out (for cross-fitting)."""
        return JudgedData(
            [ex for ex in self.examples if ex.source not in sources],
            [p for p in self.pairs if prompt_text(p.prompt) not in sources],
        )


@dataclass(frozen=True)
class PoolSettings:
    """How strengths are fitted (``llmblend train pool`` options).

    ``known`` gives scores of candidate pairs already judged, e.g. an LLM judge's cache
    (:meth:`~llmblend.rank.judge_ranker.JudgeRanker.cached_scores`); each one is a comparison.
    """

    oracle: str | None
    categories: bool = False
    prior_scale: float = 1.0
    tie_margin: float = 0.0
    known: KnownScores | None = None

    @property
    def category_of(self):
        return id_prefix_category if self.categories else None


def fit_pool_from(data: JudgedData, settings: PoolSettings) -> PoolModel:
    """Strengths and length statistics from ``data``; LlmblendError when nothing is judged."""
    category_of = settings.category_of
    comparisons = comparisons_from_cmp_results(data.examples, category_of=category_of)
    comparisons += comparisons_from_pairs(data.pairs)
    judged = []
    if settings.known is not None:
        judged = comparisons_from_judged_pairs(data.examples, settings.known, category_of=category_of)
        comparisons += judged
    if settings.oracle is not None:
        oracle = settings.oracle
        by_score = comparisons_from_scores(
            data.examples, oracle, tie_margin=settings.tie_margin, category_of=category_of
        )
        if not by_score and data.examples:
            present = sorted({s for ex in data.examples for c in ex.candidates for s in c.scores})
            raise LlmblendError(
                f"no candidate carries the oracle score {oracle!r}; the scores present: {present}"
            )
        comparisons += by_score
    if not comparisons:
        raise LlmblendError(
            "nothing judged to fit a pool on: name the oracle score of MixInstruct files with --oracle, "
            "give files with cmp_results or preference pairs that name chosen_model and rejected_model, "
            "or --judge MODELS.yaml whose cache holds verdicts on the files' candidates"
        )
    pool = fit_pool(
        comparisons,
        prior_scale=settings.prior_scale,
        use_categories=settings.categories,
        oracle=settings.oracle,
        fitted_on={
            "examples": len(data.examples),
            "pairs": len(data.pairs),
            "judged_pairs": len(judged),
            "tie_margin": settings.tie_margin,
        },
    )
    return replace(pool, length_stats=length_statistics(data.examples))


def judge_cache_scores(spec: str) -> KnownScores:
    """The cached verdicts of the LLM judge of ``MODELS.yaml[#NAME]`` (its ``judge:`` section's
    ``cache``), as known scores; nothing is asked. LlmblendError when it has no cache to read."""
    from llmblend.rank.judge_ranker import judge_from_spec

    judge, _ = judge_from_spec(spec)
    cache = judge.judge.cache_path
    if cache is None:
        raise LlmblendError(
            f"--judge {spec}: its judge: section names no cache, so there are no verdicts to read; "
            "add 'cache: judge.jsonl' to it (and rank with that judge to fill it)"
        )
    if not cache.is_file():
        raise LlmblendError(
            f"--judge {spec}: its cache {cache} does not exist yet; rank with that judge first "
            f"(llmblend rank FILE -r judge:{spec} --out ranked.jsonl)"
        )
    return remembered(judge.cached_scores)


def remembered(known: KnownScores) -> KnownScores:
    """``known`` asked once per distinct pair: cross-fitting fits a pool per fold on subsets of the
    same examples, and each call of a judge's ``cached_scores`` reads and hashes its whole cache."""
    seen: dict[PairQuery, float] = {}

    def lookup(queries: Sequence[PairQuery]) -> np.ndarray:
        todo = [q for q in dict.fromkeys(queries) if q not in seen]
        if todo:
            seen.update(zip(todo, np.asarray(known(todo), dtype=np.float64).tolist(), strict=True))
        return np.array([seen[q] for q in queries], dtype=np.float64)

    return lookup


def length_scale_of(examples: Sequence[Example]) -> float:
    """The standard deviation of character-length differences between candidates of one example."""
    gaps = [len(a.text) - len(b.text) for ex in examples for a in ex.candidates for b in ex.candidates]
    scale = float(np.std(gaps)) if gaps else 0.0
    return scale if scale > 0 else 1000.0


def judged_examples(examples: Sequence[Example], oracle: str) -> list[Example]:
    """Each example reduced to its candidates that carry the oracle score, where 2+ of them do."""
    out = []
    for ex in examples:
        scored = [c for c in ex.candidates if oracle in c.scores]
        if len(scored) > 1:
            out.append(ex if len(scored) == len(ex.candidates) else replace(ex, candidates=scored))
    return out


def instruction_folds(examples: Sequence[Example], folds: int = FOLDS, seed: int = 0) -> list[int]:
    """A fold number per example, by instruction (the same instruction is always in one fold)."""
    sources = sorted({ex.source for ex in examples})
    order = np.random.default_rng(seed).permutation(len(sources))
    fold_of = {sources[k]: int(rank % folds) for rank, k in enumerate(order)}
    return [fold_of[ex.source] for ex in examples]


@dataclass
class Features:
    """Cross-fitted terms of judged examples: what :func:`fit_combination` learns from."""

    examples: list[Example]
    terms: list[dict[str, np.ndarray]]
    truth: list[np.ndarray]
    favourites: list[int]


def example_features(
    examples: Sequence[Example],
    pool: PoolModel,
    *,
    oracle: str,
    length_scale: float,
    settings: PoolSettings,
    embeddings: Sequence[np.ndarray] | None,
    matrices: Sequence[np.ndarray] | None = None,
) -> Features:
    """Every term of each example under ``pool`` (plus the ranker's debiased logits if given)."""
    probe = Combination(
        dict.fromkeys(EMBEDDING_TERMS, 1.0) if embeddings is not None else {}, length_scale=length_scale
    )
    terms = []
    for k, ex in enumerate(examples):
        matrix = free_terms(
            ex, pool, probe, embeddings=None if embeddings is None else embeddings[k],
            category_of=settings.category_of,
        )  # fmt: skip
        if matrices is not None:
            raw = matrices[k]
            matrix["ranker"] = (raw - raw.T) / 2
        terms.append(matrix)
    truth = [np.array([c.scores[oracle] for c in ex.candidates]) for ex in examples]
    return Features(list(examples), terms, truth, [pool_favourite(t) for t in terms])


def cross_fitted_features(
    data: JudgedData,
    settings: PoolSettings,
    *,
    length_scale: float,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
    folds: int = FOLDS,
    progress: ProgressStart | None = None,
) -> Features:
    """The training files' own judged examples, each described by a pool fitted without its fold."""
    oracle = settings.oracle or ""
    examples = judged_examples(data.examples, oracle)
    if len({ex.source for ex in examples}) < folds:
        raise LlmblendError(
            f"only {len(examples)} examples with 2+ candidates carrying {oracle!r}: too few to "
            f"cross-fit {folds} folds; give more, or --calibrate FILE"
        )
    embeddings = _embed_all(examples, embed, progress) if embed is not None else None
    fold_of = instruction_folds(examples, folds)
    parts = Features([], [], [], [])
    for fold in range(folds):
        members = [k for k, f in enumerate(fold_of) if f == fold]
        chosen = [examples[k] for k in members]
        pool = fit_pool_from(data.without({ex.source for ex in chosen}), settings)
        part = example_features(
            chosen, pool, oracle=oracle, length_scale=length_scale, settings=settings,
            embeddings=None if embeddings is None else [embeddings[k] for k in members],
        )  # fmt: skip
        for field in ("examples", "terms", "truth", "favourites"):
            getattr(parts, field).extend(getattr(part, field))
    return parts


def fit_combination(
    features: Features,
    terms: Sequence[str],
    *,
    length_scale: float,
    thresholds: Sequence[float] = THRESHOLDS,
    folds: int = FOLDS,
    threshold_rule: str = DEFAULT_THRESHOLD_RULE,
) -> Combination:
    """Switch weights on all of ``features``; the threshold by cross-validated top-1.

    For each fold, weights are fitted on the other folds and every threshold's pick is scored on
    this one. ``threshold_rule`` ``best`` takes the threshold with the highest mean oracle score of
    the pick (ties: the higher, which switches less); ``one-se`` the highest whose mean is within
    one standard error of the best's (:func:`one_standard_error_choice`): leaving the favourite
    then needs evidence beyond the noise of the folds; ``gated`` the best, unless it does not beat
    the most cautious threshold by more than one standard error (:func:`gated_choice`), when the
    most cautious: switching at all must pay beyond that noise.
    """
    check_choices(terms, threshold_rule)
    picked = {t: [] for t in thresholds}
    for bias, weights, test in cross_fits(features, terms, folds):
        for t in thresholds:
            combo = Combination(weights, length_scale=length_scale, threshold=t, bias=bias)
            picked[t] += [_pick_score(features, k, combo) for k in test]
    curve = {t: float(np.mean(v)) for t, v in picked.items() if v}
    if threshold_rule == "one-se":
        threshold = one_standard_error_choice({t: np.asarray(v) for t, v in picked.items() if v})
    elif threshold_rule == "gated":
        threshold = gated_choice({t: np.asarray(v) for t, v in picked.items() if v})
    else:
        threshold = max(curve, key=lambda t: (round(curve[t], 9), t))
    bias, weights = _fit(features, range(len(features.examples)), terms)
    combination = Combination(weights, length_scale=round(length_scale, 3), threshold=threshold, bias=bias)
    favourite = float(
        np.mean([truth[fav] for truth, fav in zip(features.truth, features.favourites, strict=True)])
    )
    return replace(
        combination,
        fitted_on={
            "examples": len(features.examples),
            "folds": folds,
            "cv_top1_by_threshold": {str(t): round(v, 6) for t, v in curve.items()},
            "threshold_rule": threshold_rule,
            "favourite_top1": round(favourite, 6),
        },
        calibration=_calibration(features, combination),
    )


def cross_fits(
    features: Features, terms: Sequence[str], folds: int = FOLDS
) -> Iterator[tuple[float, dict[str, float], list[int]]]:
    """For each fold of instructions (:func:`instruction_folds`): the switch bias and weights fitted
    on the other folds, and the rows of this fold's examples, to score what those weights pick."""
    fold_of = instruction_folds(features.examples, folds)
    for fold in range(folds):
        train = [k for k, f in enumerate(fold_of) if f != fold]
        test = [k for k, f in enumerate(fold_of) if f == fold]
        if train and test:
            yield (*_fit(features, train, terms), test)


def check_choices(terms: Sequence[str], threshold_rule: str) -> None:
    """ValueError naming an unknown term or threshold rule (checked before any data is read)."""
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {threshold_rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown term {unknown[0]!r}; known: {', '.join(TERMS)}")


def one_standard_error_choice(scores: dict[float, np.ndarray]) -> float:
    """The highest threshold whose per-instruction pick scores trail the best threshold's by at most
    one standard error of their paired difference (``scores``: threshold → score per instruction)."""
    best = max(scores, key=lambda t: (round(float(scores[t].mean()), 9), t))

    def close_enough(t: float) -> bool:
        gap, error = paired_gap(scores[best], scores[t])
        return gap <= error + 1e-12

    return max(t for t in scores if t >= best and close_enough(t))


def gated_choice(scores: dict[float, np.ndarray]) -> float:
    """The best threshold when its per-instruction pick scores beat the most cautious (highest)
    threshold's by more than one standard error of their paired difference; else the most cautious
    (``scores``: threshold → score per instruction)."""
    best = max(scores, key=lambda t: (round(float(scores[t].mean()), 9), t))
    cautious = max(scores)
    gap, error = paired_gap(scores[best], scores[cautious])
    return best if gap > error + 1e-12 else cautious


def paired_gap(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """The mean of ``first − second`` (per-instruction scores) and its standard error."""
    gap = first - second
    error = float(gap.std(ddof=1)) / np.sqrt(len(gap)) if len(gap) > 1 else 0.0
    return float(gap.mean()), error


def _fit(features: Features, rows: Iterable[int], terms: Sequence[str]) -> tuple[float, dict[str, float]]:
    rows = list(rows)
    return fit_switch(
        [features.terms[k] for k in rows],
        [features.truth[k] for k in rows],
        [features.favourites[k] for k in rows],
        tuple(terms),
    )


def _pick_score(features: Features, k: int, combination: Combination) -> float:
    """The oracle score of the pool-seeded pick of example ``k`` (the ranker term from its matrix)."""
    fav = features.favourites[k]
    pick = incumbent_ranking(combination.logits(features.terms[k])[:, fav], fav, combination).best
    return float(features.truth[k][pick])


def _calibration(features: Features, combination: Combination) -> dict[str, Any]:
    """ECE of P(challenger beats the favourite), in-sample, and of σ(ranker logit) when present."""
    probabilities, outcomes, ranker = [], [], []
    for terms, truth, fav in zip(features.terms, features.truth, features.favourites, strict=True):
        z = combination.bias + combination.logits(terms)[:, fav]
        for c in range(len(truth)):
            if c != fav and truth[c] != truth[fav]:
                probabilities.append(1 / (1 + np.exp(-z[c])))
                outcomes.append(float(truth[c] > truth[fav]))
                if "ranker" in terms:
                    ranker.append(1 / (1 + np.exp(-terms["ranker"][c, fav])))
    out: dict[str, Any] = {
        "ece_combination": round(expected_calibration_error(np.array(probabilities), np.array(outcomes)), 4),
        "pairs": len(outcomes),
        "note": "challenger vs favourite pairs of the fitting data (in-sample)",
    }
    if ranker:
        out["ece_ranker_alone"] = round(expected_calibration_error(np.array(ranker), np.array(outcomes)), 4)
    return out


def ranker_matrices(
    ranker, examples: Sequence[Example], favourites: Sequence[int], progress: ProgressStart | None = None
) -> list[np.ndarray]:
    """Raw logits ``[N, N]`` (NaN where not scored) of every challenger against the favourite,
    both orders: what the pool-seeded strategy asks the ranker."""
    total = sum(2 * (len(ex.candidates) - 1) for ex in examples)
    advance = progress("ranker: challenger vs favourite", total) if progress else None
    out = []
    for ex, fav in zip(examples, favourites, strict=True):
        n = len(ex.candidates)
        index = [p for c in range(n) if c != fav for p in ((c, fav), (fav, c))]
        queries = [PairQuery(ex.source, ex.candidates[i].text, ex.candidates[j].text) for i, j in index]
        m = np.full((n, n), np.nan)
        for (i, j), value in zip(index, ranker.pair_logits(queries), strict=True):
            m[i, j] = value
        out.append(m)
        if advance:
            advance(len(queries))
    return out


#: Without an oracle score (preference pairs only, e.g. the gateway's feedback) there is nothing to
#: cross-fit: the pool term alone at its Bradley–Terry scale, so the pick is the strongest known model.
STRENGTHS_ONLY = Combination(
    weights={"pool": 1.0},
    threshold=0.5,
    fitted_on={"source": "strengths only (no --oracle): the pool term at its Bradley-Terry scale"},
)


def train_pool_file(
    files: Sequence[str | Path],
    out: str | Path,
    *,
    settings: PoolSettings,
    terms: Sequence[str] = DEFAULT_TERMS,
    calibrate: str | Path | None = None,
    model: str | None = None,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    progress: ProgressStart | None = None,
    threshold_rule: str = DEFAULT_THRESHOLD_RULE,
) -> PoolModel:
    """What ``llmblend train pool`` does: strengths from ``files``, the combination cross-fitted on
    them (or, with ``calibrate``, on those examples with the ranker ``model``); writes ``out``.

    ``embed`` embeds answers for the consensus terms (default: the packaged MiniLM, loaded only
    when a consensus term is asked for).
    """
    check_choices(terms, threshold_rule)
    data = JudgedData.read(files)
    pool = fit_pool_from(data, settings)
    if settings.oracle is None:
        if calibrate is not None or set(terms) != set(DEFAULT_TERMS):
            raise LlmblendError("--terms and --calibrate need --oracle: the score that judges the examples")
        pool = pool.with_combination(STRENGTHS_ONLY.to_dict())
        pool.save(out)
        return pool
    length_scale = length_scale_of(data.examples)
    if not set(terms) & set(EMBEDDING_TERMS):
        embed = None
    elif embed is None:
        embed = _embedder()
    if calibrate is None:
        if "ranker" in terms:
            raise LlmblendError(
                "the ranker term needs --calibrate FILE: judged examples the ranker was not trained on"
            )
        features = cross_fitted_features(
            data, settings, length_scale=length_scale, embed=embed, progress=progress
        )
        source = "cross-fitted on the training files"
    else:
        features = _calibration_features(
            data, settings, calibrate, terms, model, length_scale, embed, progress
        )
        source = f"calibrated on {Path(calibrate).name} (ranker: {model or 'default'})"
    combination = fit_combination(features, terms, length_scale=length_scale, threshold_rule=threshold_rule)
    combination = replace(combination, fitted_on={**combination.fitted_on, "source": source})
    pool = pool.with_combination(combination.to_dict())
    pool.save(out)
    return pool


def _calibration_features(data, settings, calibrate, terms, model, length_scale, embed, progress) -> Features:
    held = judged_examples(list(read_mixinstruct(calibrate)), settings.oracle)
    if not held:
        raise LlmblendError(f"{calibrate}: no example with 2+ candidates that carry {settings.oracle!r}")
    pool = fit_pool_from(data.without({ex.source for ex in held}), settings)
    embeddings = _embed_all(held, embed, progress) if embed is not None else None
    features = example_features(
        held,
        pool,
        oracle=settings.oracle,
        length_scale=length_scale,
        settings=settings,
        embeddings=embeddings,
    )
    if "ranker" in terms:
        matrices = ranker_matrices(_pair_ranker(model), held, features.favourites, progress)
        for matrix, raw in zip(features.terms, matrices, strict=True):
            matrix["ranker"] = (raw - raw.T) / 2
    return features


def _pair_ranker(model: str | None):
    from llmblend.rank.pairranker import PairRanker

    return PairRanker.default() if model is None else PairRanker.from_pretrained(model)


def _embedder() -> Callable[[Sequence[str]], np.ndarray]:
    from llmblend.rank.embeddings import SentenceEmbedder

    return SentenceEmbedder.from_pretrained().encode


def _embed_all(examples: Sequence[Example], embed, progress: ProgressStart | None) -> list[np.ndarray]:
    advance = progress("embedding answers (consensus)", len(examples)) if progress else None
    out = []
    for ex in examples:
        out.append(np.asarray(embed([c.text for c in ex.candidates]), dtype=np.float64))
        if advance:
            advance(1)
    return out
