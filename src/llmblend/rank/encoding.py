"""Tokenise, pad, pool: what the encoder-based rankers share (pointwise, dual encoder, MLM, MiniLM).

Source-candidate inputs are ``[CLS] source [SEP] candidate [SEP]`` (in the tokenizer's own
template, e.g. ``<s> a </s></s> b </s>`` for RoBERTa), with the source and the candidate truncated
*separately* to their own token budgets, as SummaReranker and PairRanker do, so a long instruction
never crowds out the answer. Everything here imports torch and transformers lazily.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmblend.errors import LlmblendError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: A tokenizer's ``model_max_length`` above this is a placeholder for "no limit".
_NO_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class PairFeatures:
    """One tokenised ``(first, second)`` input; ``second_positions`` index the second text's tokens."""

    input_ids: list[int]
    token_type_ids: list[int]
    second_positions: list[int]


class TokenCache:
    """Token ids of texts already tokenized, the ``size`` most recently used kept (thread-safe).

    A ranking strategy's rounds ask for pairs of the same few texts again and again; tokenizing is
    deterministic, so the ids of a (marker, budget, text) key can be reused. ``size`` 0 turns it off.
    """

    def __init__(self, size: int = 8192) -> None:
        self._ids: OrderedDict[Hashable, list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size
        self.hits = self.misses = 0

    def ids(
        self, keys: Sequence[Hashable], encode: Callable[[list[Hashable]], list[list[int]]]
    ) -> list[list[int]]:
        """The ids of each key; ``encode(keys)`` tokenizes, in one call, the distinct ones not cached."""
        with self._lock:
            found = {key: self._ids[key] for key in keys if key in self._ids}
            for key in found:
                self._ids.move_to_end(key)
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        encoded = dict(zip(missing, encode(missing), strict=True)) if missing else {}
        with self._lock:
            self.hits += len(keys) - sum(key in encoded for key in keys)
            self.misses += len(missing)
            if self.size:
                self._ids.update(encoded)
                while len(self._ids) > self.size:
                    self._ids.popitem(last=False)
        return [found[key] if key in found else encoded[key] for key in keys]

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size
            while len(self._ids) > size:
                self._ids.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()
            self.hits = self.misses = 0


def require_fast_tokenizer(tokenizer: Any, purpose: str) -> None:
    """Separate truncation needs a Rust (fast) tokenizer; say so clearly when there is none."""
    if not getattr(tokenizer, "is_fast", False):
        raise LlmblendError(
            f"{purpose} needs a fast (tokenizers-backed) tokenizer, got {type(tokenizer).__name__}; "
            "save the model folder with a tokenizer.json (AutoTokenizer.from_pretrained(..., use_fast=True))"
        )


def encode_pair_features(
    tokenizer: Any,
    firsts: Sequence[str],
    seconds: Sequence[str],
    first_max_length: int,
    second_max_length: int,
) -> list[PairFeatures]:
    """Tokenise ``(first, second)`` pairs, each text cut to its own budget, specials added."""
    require_fast_tokenizer(tokenizer, "source/candidate encoding")
    if len(firsts) != len(seconds):
        raise ValueError(f"{len(firsts)} first texts but {len(seconds)} second texts")
    if not firsts:
        return []
    first = tokenizer(list(firsts), add_special_tokens=False, truncation=True, max_length=first_max_length)
    second = tokenizer(list(seconds), add_special_tokens=False, truncation=True, max_length=second_max_length)
    backend = tokenizer.backend_tokenizer
    # post_process re-applies the backend's current truncation/padding, which the calls above left
    # set to the candidate budget; transformers resets both on every call, so clearing them is safe
    backend.no_truncation()
    backend.no_padding()
    features = []
    for a, b in zip(first.encodings, second.encodings, strict=True):
        joined = backend.post_process(a, b, add_special_tokens=True)
        positions = [i for i, seq in enumerate(joined.sequence_ids) if seq == 1]
        features.append(PairFeatures(list(joined.ids), list(joined.type_ids), positions))
    return features


def pad_features(
    tokenizer: Any, features: Sequence[PairFeatures], *, input_ids: Sequence[Sequence[int]] | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad features into ``input_ids``/``attention_mask`` (and ``token_type_ids`` when the
    tokenizer uses them); ``input_ids`` overrides the features' ids (e.g. masked copies)."""
    import torch

    ids = input_ids if input_ids is not None else [f.input_ids for f in features]
    width = max((len(row) for row in ids), default=0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = {
        "input_ids": torch.full((len(ids), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(ids), width), dtype=torch.long),
    }
    types = torch.zeros((len(ids), width), dtype=torch.long)
    for row, (tokens, feature) in enumerate(zip(ids, features, strict=True)):
        batch["input_ids"][row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        batch["attention_mask"][row, : len(tokens)] = 1
        types[row, : len(tokens)] = torch.tensor(feature.token_type_ids, dtype=torch.long)
    if "token_type_ids" in tokenizer.model_input_names:
        batch["token_type_ids"] = types
    return batch


def encode_source_candidates(
    tokenizer: Any,
    sources: Sequence[str],
    candidates: Sequence[str],
    source_max_length: int,
    candidate_max_length: int,
) -> dict[str, torch.Tensor]:
    """Padded ``[CLS] source [SEP] candidate [SEP]`` tensors, ``[len(sources), L]``."""
    features = encode_pair_features(tokenizer, sources, candidates, source_max_length, candidate_max_length)
    return pad_features(tokenizer, features)


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Padded single-text tensors ``[len(texts), L]``, each text truncated to ``max_length`` tokens."""
    return dict(
        tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    )


def as_pair_layout(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``[2B, L]`` rows ordered first, second, first, second, ... → ``[B, 2, L]`` (pair kept together)."""
    return {key: value.view(-1, 2, value.shape[-1]) for key, value in batch.items()}


def interleave(firsts: Sequence[str], seconds: Sequence[str]) -> list[str]:
    """``[f0, s0, f1, s1, ...]``, the row order :func:`as_pair_layout` expects."""
    return [text for pair in zip(firsts, seconds, strict=True) for text in pair]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token states where ``attention_mask`` is 1 (sentence-transformers pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=-2) / mask.sum(dim=-2).clamp(min=1e-9)


def embed_mean_pooled(
    encoder: torch.nn.Module, inputs: Mapping[str, torch.Tensor], *, dropout: torch.nn.Module | None = None
) -> torch.Tensor:
    """Unit-length mean-pooled embeddings ``[n, hidden]`` of padded texts (sentence-transformers,
    SimCLS); ``dropout``, when given, acts on the pooled vectors before normalisation."""
    import torch

    pooled = mean_pool(encoder(**inputs).last_hidden_state, inputs["attention_mask"])
    if dropout is not None:
        pooled = dropout(pooled)
    return torch.nn.functional.normalize(pooled, dim=-1)


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def load_encoder(folder: Path, *, config: Any = None) -> torch.nn.Module:
    """An ``AutoModel`` encoder without its pooler (rankers read token states, and an unused pooler
    would get no gradient): pretrained weights from ``folder``, or randomly initialised from
    ``config`` when one is given (the caller then loads saved weights into it)."""
    from transformers import AutoModel

    from llmblend.rank.hf import drop_pooler

    encoder = AutoModel.from_config(config) if config is not None else AutoModel.from_pretrained(str(folder))
    drop_pooler(encoder)
    return encoder


def fit_lengths(tokenizer: Any, config: Any, source_max_length: int, candidate_max_length: int) -> int:
    """The source budget, shrunk (with a warning) so source + candidate + specials fit the model."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    limit = min((n for n in limits if isinstance(n, int) and 0 < n < _NO_LIMIT), default=None)
    if limit is None:
        return source_max_length
    room = limit - candidate_max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if room < 1:
        raise LlmblendError(
            f"candidate_max_length={candidate_max_length} leaves no room for the source in this model's "
            f"{limit} positions; lower candidate_max_length"
        )
    if source_max_length > room:
        log.warning("source_max_length %d lowered to %d to fit %d positions", source_max_length, room, limit)
        return room
    return source_max_length
