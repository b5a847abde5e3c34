"""The pointwise cross-encoder baseline (SummaReranker-style; LLM-Blender §5, Ravaut et al. 2022).

The encoder reads ``[CLS] source [SEP] candidate [SEP]`` (source and candidate truncated
separately) and a small MLP head on the first token's hidden state gives one score per task. It
sees one candidate at a time, so ranking N candidates costs N forward passes (PairRanker needs
pairs). Trained with the same pairwise losses as PairRanker on ``score(first) - score(second)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmblend.errors import MissingExtraError
from llmblend.rank.base import PairQuery
from llmblend.rank.encoder_ranker import EncoderRanker
from llmblend.rank.encoding import as_pair_layout, encode_source_candidates, interleave, to_device
from llmblend.rank.hf import chunks, inference
from llmblend.rank.scoring import split_sizes
from llmblend.types import Example

try:
    import torch
    from torch import nn
except ImportError as exc:  # the registry imports this module only when the ranker is asked for
    raise MissingExtraError("torch", "ml", "the pointwise ranker") from exc


class PointwiseModule(nn.Module):
    """Encoder + MLP head on the first token: ``score(**inputs) -> [n, n_tasks]``."""

    def __init__(self, encoder: nn.Module, n_tasks: int, dropout: float) -> None:
        super().__init__()
        hidden = encoder.config.hidden_size
        self.n_tasks = n_tasks
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_tasks),
        )

    def score(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **rest: torch.Tensor
    ) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **rest).last_hidden_state
        return self.head(states[:, 0])

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 2, L]`` pair inputs → ``(left, right)``, each ``[B, n_tasks]``, in one forward of 2B rows."""
        flat = {key: value.flatten(0, 1) for key, value in inputs.items()}
        scores = self.score(**flat).view(-1, 2, self.n_tasks)
        return scores[:, 0], scores[:, 1]


class PointwiseRanker(EncoderRanker):
    """SummaReranker-style pointwise cross-encoder; ``n_forward`` = N per example."""

    architecture = "pointwise"

    @classmethod
    def _build_module(cls, encoder: nn.Module, settings: dict[str, Any]) -> PointwiseModule:
        return PointwiseModule(encoder, int(settings["n_tasks"]), float(settings["dropout"]))

    def encode_pairs(self, queries: Sequence[PairQuery]) -> dict[str, torch.Tensor]:
        """``input_ids``/``attention_mask``/(``token_type_ids``) of shape ``[B, 2, L]``."""
        sources = [q.source for q in queries for _ in range(2)]
        candidates = interleave([q.first for q in queries], [q.second for q in queries])
        return as_pair_layout(self._encode(sources, candidates))

    def _encode(self, sources: Sequence[str], candidates: Sequence[str]) -> dict[str, torch.Tensor]:
        return encode_source_candidates(
            self.tokenizer, sources, candidates, self.source_max_length, self.candidate_max_length
        )

    def score_candidates(self, sources: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Scores ``[n, n_tasks]`` of (source, candidate) rows, in batches of ``batch_size`` (eval mode)."""
        rows = list(zip(sources, candidates, strict=True))
        out = [np.zeros((0, self.n_tasks))]
        with inference(self.module, device=self.device):
            for batch in chunks(rows, self.batch_size):
                inputs = to_device(self._encode([s for s, _ in batch], [c for _, c in batch]), self.device)
                out.append(self.module.score(**inputs).float().cpu().numpy())
        return np.concatenate(out)

    def _score_examples(self, examples: Sequence[Example]) -> list[tuple[np.ndarray, int]]:
        sizes = [len(ex.candidates) for ex in examples]
        sources = [ex.source for ex in examples for _ in ex.candidates]
        scores = self.score_candidates(sources, [c.text for ex in examples for c in ex.candidates])
        return [(part.mean(axis=-1), len(part)) for part in split_sizes(scores, sizes)]
