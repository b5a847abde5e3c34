"""Masked-LM scoring baseline: pseudo-log-likelihood (PLL) of each answer (Salazar et al. 2020).

The input is ``[CLS] source [SEP] candidate [SEP]``; each candidate token in turn is replaced by
``[MASK]`` and the masked LM's log-probability of the true token is read off. The PLL is the sum
over the candidate's tokens; by default the ranker uses the *mean* per token instead, because the
sum falls with every extra token and would favour the shortest answer (``aggregate="sum"`` gives
the paper's raw PLL). All masked copies of all candidates of all examples go through the model
in batches of ``batch_size`` rows, one forward per batch; ``n_forward`` counts masked rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.errors import LlmblendError, MissingExtraError
from llmblend.hf_loading import pick_device
from llmblend.rank.encoding import PairFeatures, encode_pair_features, fit_lengths, pad_features, to_device
from llmblend.rank.hf import chunks, inference, load_tokenizer, require_torch, resolve_model_dir
from llmblend.rank.scoring import RankerOptionError, check_rank_options, rank_by_scores, split_sizes
from llmblend.types import Example, Ranking

try:
    import torch
    from torch import nn
except ImportError as exc:  # the registry imports this module only when the ranker is asked for
    raise MissingExtraError("torch", "ml", "masked-LM scoring") from exc

log = logging.getLogger(__name__)

AGGREGATES = ("mean", "sum")
#: How far below the example's worst real answer an empty answer (no tokens, no PLL) is scored:
#: last, but on the same scale, so score-based metrics (Pearson) are not thrown off by an outlier.
EMPTY_GAP = 1.0
#: Child modules of ``*ForMaskedLM`` models that map hidden states to vocabulary logits.
_HEAD_NAMES = ("cls", "lm_head")


class MLMScoringRanker:
    """Rank candidates by their (mean) pseudo-log-likelihood given the source under a masked LM."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        device: torch.device | None = None,
        aggregate: str = "mean",
        batch_size: int = 32,
        source_max_length: int = 128,
        candidate_max_length: int = 128,
    ) -> None:
        if aggregate not in AGGREGATES:
            raise RankerOptionError(f"unknown PLL aggregate {aggregate!r}; known: {', '.join(AGGREGATES)}")
        if tokenizer.mask_token_id is None:
            raise LlmblendError(
                f"the tokenizer {type(tokenizer).__name__} has no mask token; use a masked LM"
            )
        self.device = device if device is not None else pick_device(None)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.aggregate = aggregate
        self.batch_size = batch_size
        self.candidate_max_length = candidate_max_length
        self.source_max_length = fit_lengths(tokenizer, model.config, source_max_length, candidate_max_length)
        self.head = _masked_lm_head(model)
        self.name = "mlm"

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | None = None, **options: Any
    ) -> MLMScoringRanker:
        """Load an ``AutoModelForMaskedLM`` folder or hub id; ``options`` go to the constructor."""
        require_torch("masked-LM scoring")
        from transformers import AutoModelForMaskedLM

        folder = resolve_model_dir(path)
        model = AutoModelForMaskedLM.from_pretrained(str(folder))
        log.info("loaded masked LM %s for PLL scoring", folder)
        return cls(model, load_tokenizer(folder), device=pick_device(device), **options)

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        check_rank_options(self.name, strategy, top_k)
        return rank_by_scores(examples, self._score_examples)

    def _score_examples(self, examples: Sequence[Example]) -> list[tuple[np.ndarray, int]]:
        sources = [ex.source for ex in examples for _ in ex.candidates]
        candidates = [c.text for ex in examples for c in ex.candidates]
        totals, counts = self.pseudo_log_likelihoods(sources, candidates)
        sizes = [len(ex.candidates) for ex in examples]
        return [
            (self._aggregate(total, count), int(count.sum()))
            for total, count in zip(split_sizes(totals, sizes), split_sizes(counts, sizes), strict=True)
        ]

    def pseudo_log_likelihoods(
        self, sources: Sequence[str], candidates: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate: the PLL (sum of masked-token log-probs) and its token count (= masked rows)."""
        features = encode_pair_features(
            self.tokenizer, sources, candidates, self.source_max_length, self.candidate_max_length
        )
        rows = [(i, position) for i, feature in enumerate(features) for position in feature.second_positions]
        totals = np.zeros(len(features))
        with inference(self.model, device=self.device):
            for batch in chunks(rows, self.batch_size):
                log_probs = self._masked_log_probs([features[i] for i, _ in batch], [p for _, p in batch])
                np.add.at(totals, [i for i, _ in batch], log_probs)
        counts = np.array([len(feature.second_positions) for feature in features], dtype=np.int64)
        return totals, counts

    def _aggregate(self, totals: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """One example's scores: mean or sum PLL; empty answers :data:`EMPTY_GAP` below the worst."""
        scores = totals / np.maximum(counts, 1) if self.aggregate == "mean" else totals.astype(np.float64)
        empty = counts == 0
        if empty.any():
            scores[empty] = (scores[~empty].min() if (~empty).any() else 0.0) - EMPTY_GAP
        return scores

    def _masked_log_probs(self, features: Sequence[PairFeatures], positions: Sequence[int]) -> np.ndarray:
        """One forward of masked copies: log p(true token at ``positions[r]`` | row r with it masked)."""
        masked = [list(f.input_ids) for f in features]
        for row, position in zip(masked, positions, strict=True):
            row[position] = self.tokenizer.mask_token_id
        inputs = to_device(pad_features(self.tokenizer, features, input_ids=masked), self.device)
        rows = torch.arange(len(features), device=self.device)
        where = torch.tensor(list(positions), device=self.device)
        targets = torch.tensor(
            [f.input_ids[p] for f, p in zip(features, positions, strict=True)], device=self.device
        )
        if self.head is not None:  # vocabulary logits only at the masked position: saves memory
            states = self.model.base_model(**inputs).last_hidden_state[rows, where]
            logits = self.head(states)
        else:
            logits = self.model(**inputs).logits[rows, where]
        return torch.log_softmax(logits.float(), dim=-1)[rows, targets].cpu().numpy()


def _masked_lm_head(model: nn.Module) -> nn.Module | None:
    """The module mapping hidden states to logits, when the model has a plain one (BERT, RoBERTa)."""
    children = [name for name, child in model.named_children() if child is not model.base_model]
    if len(children) == 1 and children[0] in _HEAD_NAMES:
        return getattr(model, children[0])
    log.debug("no separable masked-LM head on %s; computing full logits", type(model).__name__)
    return None
