"""Reference-based metrics chosen by name (LLM-Blender §5.1: BERTScore, BARTScore, BLEURT, BLEU/ROUGE).

LLM-Blender scores every candidate and every fused answer against the reference answer of
MixInstruct with BERTScore, BARTScore and BLEURT (§5.1, Table 2), and reports BLEU/ROUGE as well.
Each metric here is a small class with one batched method::

    metric = get_metric("bertscore")            # or "bleu", "chrf", "rouge1", "bartscore", ...
    result = metric.score(candidates, references, progress=bar.advance)
    result.per_example   # float64 [N], one score per (candidate, reference) pair
    result.corpus        # one float for the whole set

Conventions:

* ``candidates[i]`` is scored against ``references[i]``; both are sequences of N strings.
  ``sources`` (the instructions, N strings) is accepted by every metric so that callers need no
  special case; none of the metrics below reads it.
* Every metric here is higher-is-better (``higher_is_better`` says so, for metrics to come).
* Scales are the usual ones: BLEU and chrF 0–100 (as sacrebleu reports them); ROUGE F-measure and
  BERTScore F1 in [0, 1] (BERTScore can dip below 0); BARTScore a mean token log-likelihood (≤ 0);
  BLEURT the checkpoint's regression output.
* ``corpus`` is the corpus-level statistic for BLEU and chrF (not a mean of sentence scores) and the
  mean of ``per_example`` for the others. An empty input gives ``per_example`` of shape [0] and a
  NaN corpus score.
* ``progress(n)`` is told how many more examples are done, after each batch; nothing is printed.

The string metrics (BLEU, chrF, ROUGE) and the registry are here; :mod:`llmblend.eval.metric_base`
holds what every metric shares and :mod:`llmblend.eval.model_metrics` the metrics computed by a
model (BERTScore, BARTScore, BLEURT).

Heavy packages (torch, transformers, bert_score, rouge_score, sacrebleu) are imported only when a
metric is built or used; a missing one raises :class:`~llmblend.errors.MissingExtraError` with the
``pip install`` command. ``evaluate.load`` is not used: it fetches scripts from the hub.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from llmblend.eval.metric_base import Metric, MetricResult, ProgressFn, batched, check_inputs, require_module
from llmblend.eval.model_metrics import BartScoreMetric, BertScoreMetric, BleurtMetric

__all__ = [  # Metric, MetricResult, ProgressFn, check_inputs live in metric_base; the model metrics
    # in model_metrics; all are importable from here as before
    "METRICS",
    "ROUGE_VARIANTS",
    "BartScoreMetric",
    "BertScoreMetric",
    "BleuMetric",
    "BleurtMetric",
    "ChrfMetric",
    "Metric",
    "MetricEntry",
    "MetricResult",
    "ProgressFn",
    "RougeMetric",
    "check_inputs",
    "get_metric",
    "metric_names",
    "metric_options",
]

#: Examples per progress step for the string metrics (BLEU, chrF, ROUGE), which need no batching.
TEXT_CHUNK = 256


def _pairwise(
    candidates: list[str], references: list[str], progress: ProgressFn | None, fn: Callable[[str, str], float]
) -> np.ndarray:
    """float64 [N]: ``fn(candidate, reference)`` per pair; ``progress`` after each :data:`TEXT_CHUNK`."""

    def chunk(start: int, stop: int) -> list[float]:
        return [fn(c, r) for c, r in zip(candidates[start:stop], references[start:stop], strict=True)]

    return batched(len(candidates), TEXT_CHUNK, progress, chunk)


# ---------------------------------------------------------------- BLEU and chrF (sacrebleu)


def _sacrebleu_metrics() -> ModuleType:
    return require_module("sacrebleu.metrics", "sacrebleu", "eval", "BLEU and chrF")


class BleuMetric(Metric):
    """BLEU (sacrebleu, 0–100): per-example sentence BLEU with ``effective_order=True``; corpus =
    sacrebleu's corpus BLEU (n-gram counts pooled over the set, not a mean of sentence scores)."""

    name = "bleu"

    def __init__(self, *, tokenize: str | None = None, lowercase: bool = False) -> None:
        metrics = _sacrebleu_metrics()
        self._sentence = metrics.BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=True)
        self._corpus_bleu = metrics.BLEU(tokenize=tokenize, lowercase=lowercase)

    def _per_example(self, candidates, references, progress):
        return _pairwise(
            candidates, references, progress, lambda c, r: self._sentence.sentence_score(c, [r]).score
        )

    def _corpus(self, candidates, references, per_example):
        return float(self._corpus_bleu.corpus_score(candidates, [references]).score)


class ChrfMetric(Metric):
    """chrF (sacrebleu, 0–100; ``word_order=2`` gives chrF++): per-example sentence chrF; corpus =
    sacrebleu's corpus chrF."""

    name = "chrf"

    def __init__(
        self, *, char_order: int = 6, word_order: int = 0, beta: int = 2, lowercase: bool = False
    ) -> None:
        self._chrf = _sacrebleu_metrics().CHRF(
            char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase
        )

    def _per_example(self, candidates, references, progress):
        return _pairwise(
            candidates, references, progress, lambda c, r: self._chrf.sentence_score(c, [r]).score
        )

    def _corpus(self, candidates, references, per_example):
        return float(self._chrf.corpus_score(candidates, [references]).score)


# ---------------------------------------------------------------- ROUGE (rouge_score)

ROUGE_VARIANTS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class RougeMetric(Metric):
    """ROUGE F-measure in [0, 1] (Google's ``rouge_score``, Porter stemming on by default); corpus =
    mean. ``rougeLsum`` splits texts into sentences at newlines (summary-level LCS)."""

    def __init__(self, variant: str, *, use_stemmer: bool = True) -> None:
        if variant not in ROUGE_VARIANTS:
            raise ValueError(f"unknown ROUGE variant {variant!r}; choose one of {', '.join(ROUGE_VARIANTS)}")
        rouge_scorer = require_module("rouge_score.rouge_scorer", "rouge-score", "eval", "ROUGE")
        self.name = variant
        self._scorer = rouge_scorer.RougeScorer([variant], use_stemmer=use_stemmer)

    def _per_example(self, candidates, references, progress):
        # RougeScorer.score(target, prediction): the reference comes first.
        return _pairwise(
            candidates, references, progress, lambda c, r: self._scorer.score(r, c)[self.name].fmeasure
        )


# ---------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class MetricEntry:
    """A metric by name: the factory that builds it, a one-line help and the extra(s) it needs."""

    factory: Callable[..., Metric]
    help: str
    extra: str


METRICS: dict[str, MetricEntry] = {
    "bleu": MetricEntry(BleuMetric, "sacrebleu BLEU, 0-100 (sentence: effective order)", "eval"),
    "chrf": MetricEntry(ChrfMetric, "sacrebleu chrF, 0-100 (word_order=2: chrF++)", "eval"),
    **{
        variant: MetricEntry(partial(RougeMetric, variant), f"{variant} F-measure, 0-1, stemmed", "eval")
        for variant in ROUGE_VARIANTS
    },
    "bertscore": MetricEntry(BertScoreMetric, "BERTScore F1 (default: packaged MiniLM-L6, layer 6)", "ml"),
    "bartscore": MetricEntry(
        BartScoreMetric, "BARTScore: mean token log-likelihood under a seq2seq LM (model=...)", "ml"
    ),
    "bleurt": MetricEntry(BleurtMetric, "BLEURT regression output (checkpoint=... required)", "ml"),
}


def metric_names() -> list[str]:
    """The registered metric names, sorted."""
    return sorted(METRICS)


def metric_options(name: str) -> list[str]:
    """The keyword options ``get_metric(name, ...)`` accepts."""
    factory = _entry(name).factory
    return [p.name for p in inspect.signature(factory).parameters.values() if p.kind is p.KEYWORD_ONLY]


def _entry(name: str) -> MetricEntry:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(metric_names())}") from None


def get_metric(name: str, **options: Any) -> Metric:
    """Build the metric called ``name`` with its keyword ``options`` (see :data:`METRICS`).

    ValueError for an unknown name (listing the known ones) or an option the metric does not take
    (listing the ones it does); :class:`MissingExtraError` when a package it needs is not installed.
    """
    entry = _entry(name)
    accepted = metric_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"metric {name!r} takes no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(accepted) or 'none'}"
        )
    return entry.factory(**options)
