"""The base of the trainable one-candidate-at-a-time rankers (pointwise and dual encoder, §5).

Both are a Hugging Face encoder plus a little on top, trained by ``llmblend train ranker`` on the
same pairwise data as PairRanker: ``module(**encode_pairs(queries))`` returns ``(left, right)``
scores ``[B, n_tasks]`` of ``first`` and ``second``. Pair batches keep the two sides of a pair
together in a ``[B, 2, L]`` layout, so slicing a batch along its first axis never splits a pair.
A subclass supplies the module, :meth:`EncoderRanker.encode_pairs` and
:meth:`EncoderRanker._score_examples`; building, saving, loading, pair comparison and ranking are
shared here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from llmblend.hf_loading import pick_device
from llmblend.rank.base import CONFIG_KEY, PairQuery
from llmblend.rank.compact import load_weights
from llmblend.rank.encoding import fit_lengths, load_encoder, require_fast_tokenizer, to_device
from llmblend.rank.hf import (
    chunks,
    inference,
    load_into,
    load_tokenizer,
    read_settings,
    require_torch,
    resolve_model_dir,
    save_model_folder,
)
from llmblend.rank.scoring import check_rank_options, rank_by_scores
from llmblend.types import Example, Ranking

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class EncoderRanker:
    """Shared machinery; subclasses set :attr:`architecture` and implement the abstract hooks."""

    #: ``config.json`` → ``llmblend.architecture``; also the registry name of the ranker.
    architecture: ClassVar[str]

    def __init__(
        self,
        module: torch.nn.Module,
        tokenizer: Any,
        settings: dict[str, Any],
        *,
        device: torch.device | None = None,
        batch_size: int = 32,
    ) -> None:
        require_fast_tokenizer(tokenizer, f"the {self.architecture} ranker")
        self.device = device if device is not None else pick_device(None)
        self.module = module.to(self.device)
        self.tokenizer = tokenizer
        self._settings = dict(settings)
        self.n_tasks = int(settings["n_tasks"])
        self.source_max_length = int(settings["source_max_length"])
        self.candidate_max_length = int(settings["candidate_max_length"])
        self.batch_size = batch_size
        self.name = self.architecture

    # ---- building, saving, loading ----

    @classmethod
    def from_backbone(
        cls,
        backbone: str,
        *,
        n_tasks: int = 1,
        dropout: float = 0.1,
        source_max_length: int = 128,
        candidate_max_length: int = 128,
        device: str | None = None,
        batch_size: int = 32,
    ):
        """A fresh ranker on a pretrained encoder (folder or hub id), its head randomly initialised."""
        require_torch(f"the {cls.architecture} ranker")
        cls._check_tasks(n_tasks)
        folder = resolve_model_dir(backbone)
        tokenizer = load_tokenizer(folder)
        encoder = load_encoder(folder)
        settings = {
            "architecture": cls.architecture,
            "backbone": str(backbone),
            "n_tasks": n_tasks,
            "dropout": dropout,
            "source_max_length": fit_lengths(
                tokenizer, encoder.config, source_max_length, candidate_max_length
            ),
            "candidate_max_length": candidate_max_length,
            **cls._default_settings(),
        }
        module = cls._build_module(encoder, settings)
        return cls(module, tokenizer, settings, device=pick_device(device), batch_size=batch_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None, batch_size: int = 32):
        """Reload a folder written by :meth:`save_pretrained` (a local path or a hub id)."""
        require_torch(f"the {cls.architecture} ranker")
        from transformers import AutoConfig

        folder = resolve_model_dir(path)
        settings = read_settings(folder, cls.architecture)
        settings.pop("format_version", None)  # save_model_folder writes the current one
        module = cls._build_module(
            load_encoder(folder, config=AutoConfig.from_pretrained(str(folder))), settings
        )
        load_into(module, load_weights(folder), where=str(folder))
        log.info("loaded %s ranker from %s", cls.architecture, folder)
        return cls(
            module, load_tokenizer(folder), settings, device=pick_device(device), batch_size=batch_size
        )

    def settings(self) -> dict[str, Any]:
        """What config.json keeps under ``llmblend``: architecture, lengths, tasks, head options."""
        return dict(self._settings)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a Hugging Face folder: config.json (backbone + settings), tokenizer, safetensors."""
        backbone_config = self.module.encoder.config.to_dict()
        backbone_config.pop(CONFIG_KEY, None)
        save_model_folder(
            path,
            backbone_config=backbone_config,
            settings=self.settings(),
            tokenizer=self.tokenizer,
            state=self.module.state_dict(),
        )

    # ---- subclass hooks ----

    @classmethod
    def _check_tasks(cls, n_tasks: int) -> None:
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be at least 1, got {n_tasks}")

    @classmethod
    def _default_settings(cls) -> dict[str, Any]:
        """Architecture-specific settings added by :meth:`from_backbone`."""
        return {}

    @classmethod
    def _build_module(cls, encoder: torch.nn.Module, settings: dict[str, Any]) -> torch.nn.Module:
        raise NotImplementedError

    def encode_pairs(self, queries: Sequence[PairQuery]) -> dict[str, torch.Tensor]:
        """Tokenised CPU tensors of a pair batch, for ``module(**batch) -> (left, right)``."""
        raise NotImplementedError

    def _score_examples(self, examples: Sequence[Example]) -> list[tuple[np.ndarray, int]]:
        """Per example: one score per candidate (mean over tasks) and the sequences encoded."""
        raise NotImplementedError

    # ---- inference ----

    def compare_pairs(self, queries: Sequence[PairQuery]) -> np.ndarray:
        """``mean_over_tasks(left - right)`` per query, float64; > 0 means ``first`` is better.

        The candidates are scored independently, so there is no position bias to undo.
        """
        out = [np.zeros(0)]
        with inference(self.module, device=self.device):
            for batch in chunks(queries, self.batch_size):
                left, right = self.module(**to_device(self.encode_pairs(batch), self.device))
                out.append((left - right).float().mean(dim=-1).double().cpu().numpy())
        return np.concatenate(out)

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        """Score every candidate once, batched across examples; best score first."""
        check_rank_options(self.name, strategy, top_k)
        with inference(self.module, device=self.device):
            return rank_by_scores(examples, self._score_examples)
