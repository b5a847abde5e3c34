"""The dual-encoder baseline (SimCLS-style; LLM-Blender §5, Liu & Liu 2021).

One shared encoder embeds the source and each candidate separately (mean pooling); a candidate's
score is ``scale * cosine(source, candidate)``. The fixed ``scale`` (default 10) stretches the
cosine's [-1, 1] range so that the logistic pairwise loss can push a score gap beyond what
``sigmoid(2)`` allows; it does not change any ranking. Ranking N candidates costs N + 1 forward
passes (one per candidate, one for the source), and the encoder never sees source and candidate
together, which is the weakness the paper's cross-encoders address.

A cosine is one number, so the ranker has exactly one task: a multi-task version would need one
projection per task, which SimCLS does not have; train one dual encoder per metric instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmblend.errors import MissingExtraError
from llmblend.rank.base import PairQuery
from llmblend.rank.encoder_ranker import EncoderRanker
from llmblend.rank.encoding import as_pair_layout, embed_mean_pooled, encode_texts, interleave, to_device
from llmblend.rank.hf import chunks, inference
from llmblend.rank.scoring import split_sizes
from llmblend.types import Example

try:
    import torch
    from torch import nn
except ImportError as exc:  # the registry imports this module only when the ranker is asked for
    raise MissingExtraError("torch", "ml", "the dual-encoder ranker") from exc

#: Multiplies the cosine similarity (see the module docstring).
DEFAULT_SCALE = 10.0
_SOURCE, _CANDIDATE = "source_", "candidate_"


def _with_prefix(inputs: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in inputs.items() if key.startswith(prefix)}


class DualEncoderModule(nn.Module):
    """Shared encoder + mean pooling; ``forward`` scores ``[B, 2]`` candidates against B sources."""

    def __init__(self, encoder: nn.Module, dropout: float, scale: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.scale = scale

    def embed(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Unit-length mean-pooled embeddings ``[n, hidden]`` (dropout acts in training only)."""
        return embed_mean_pooled(self.encoder, inputs, dropout=self.dropout)

    def similarity(self, sources: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``scale * cosine`` of unit vectors; ``sources`` broadcasts against ``candidates``."""
        return self.scale * (sources * candidates).sum(dim=-1)

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``source_*`` ``[B, Ls]`` and ``candidate_*`` ``[B, 2, Lc]`` → ``(left, right)``, ``[B, 1]``."""
        candidates = {key: value.flatten(0, 1) for key, value in _with_prefix(inputs, _CANDIDATE).items()}
        source = self.embed(**_with_prefix(inputs, _SOURCE))
        pair = self.embed(**candidates).view(source.shape[0], 2, -1)
        scores = self.similarity(source.unsqueeze(1), pair)
        return scores[:, :1], scores[:, 1:]


class DualEncoderRanker(EncoderRanker):
    """SimCLS-style dual encoder; one task; ``n_forward`` = N + 1 per example."""

    architecture = "dual-encoder"

    @classmethod
    def _check_tasks(cls, n_tasks: int) -> None:
        if n_tasks != 1:
            raise ValueError(
                f"the dual encoder scores with one cosine similarity, so n_tasks must be 1, got {n_tasks}; "
                "train one dual encoder per metric, or use the pointwise or pair ranker for several tasks"
            )

    @classmethod
    def _default_settings(cls) -> dict[str, Any]:
        return {"scale": DEFAULT_SCALE, "pooling": "mean"}

    @classmethod
    def _build_module(cls, encoder: nn.Module, settings: dict[str, Any]) -> DualEncoderModule:
        cls._check_tasks(int(settings["n_tasks"]))
        return DualEncoderModule(encoder, float(settings["dropout"]), float(settings["scale"]))

    def encode_pairs(self, queries: Sequence[PairQuery]) -> dict[str, torch.Tensor]:
        """``source_*`` tensors ``[B, Ls]`` and ``candidate_*`` tensors ``[B, 2, Lc]``."""
        sources = encode_texts(self.tokenizer, [q.source for q in queries], self.source_max_length)
        pairs = interleave([q.first for q in queries], [q.second for q in queries])
        candidates = as_pair_layout(encode_texts(self.tokenizer, pairs, self.candidate_max_length))
        return {
            **{_SOURCE + key: value for key, value in sources.items()},
            **{_CANDIDATE + key: value for key, value in candidates.items()},
        }

    def embed_texts(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        """Unit-length embeddings ``[len(texts), hidden]`` on the ranker's device, batched (eval mode)."""
        out = [torch.zeros((0, self.module.encoder.config.hidden_size), device=self.device)]
        with inference(self.module, device=self.device):
            for batch in chunks(texts, self.batch_size):
                inputs = to_device(encode_texts(self.tokenizer, batch, max_length), self.device)
                out.append(self.module.embed(**inputs))
        return torch.cat(out)

    def _score_examples(self, examples: Sequence[Example]) -> list[tuple[np.ndarray, int]]:
        sizes = [len(ex.candidates) for ex in examples]
        sources = self.embed_texts([ex.source for ex in examples], self.source_max_length)
        candidates = self.embed_texts(
            [c.text for ex in examples for c in ex.candidates], self.candidate_max_length
        )
        index = torch.repeat_interleave(
            torch.arange(len(examples), device=self.device), torch.tensor(sizes, device=self.device)
        )
        scores = self.module.similarity(sources[index], candidates).float().cpu().numpy()
        return [(part, len(part) + 1) for part in split_sizes(scores, sizes)]
