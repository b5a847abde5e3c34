"""Pairwise ranking losses over head outputs ``left``/``right`` [B, T] and labels [B, T] in {−1, 0, +1}.

Label 0 (a tie or a missing score) contributes nothing. Every loss is a mean over labelled entries.

- ``logistic`` (PairRM's default, §3.1): ``−log σ(d · (left − right))``.
- ``bce``: each side classified on its own — ``left`` should say "better" when d = +1 and
  ``right`` when d = −1 (binary cross-entropy on both logits).
- ``margin`` (SimCLS-style ranking loss): ``max(0, m − d · (left − right))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Loss = Callable[..., "torch.Tensor"]


def _masked_mean(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mask = (labels != 0).to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def logistic_loss(left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor, **_: float) -> torch.Tensor:
    import torch.nn.functional as F

    return _masked_mean(-F.logsigmoid(labels * (left - right)), labels)


def bce_loss(left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor, **_: float) -> torch.Tensor:
    import torch.nn.functional as F

    left_target = (labels > 0).to(left.dtype)
    per_entry = F.binary_cross_entropy_with_logits(
        left, left_target, reduction="none"
    ) + F.binary_cross_entropy_with_logits(right, 1.0 - left_target, reduction="none")
    return _masked_mean(per_entry, labels)


def margin_loss(
    left: torch.Tensor, right: torch.Tensor, labels: torch.Tensor, *, margin: float = 1.0, **_: float
) -> torch.Tensor:
    return _masked_mean((margin - labels * (left - right)).clamp(min=0.0), labels)


LOSSES: dict[str, Loss] = {"logistic": logistic_loss, "bce": bce_loss, "margin": margin_loss}


def get_loss(name: str) -> Loss:
    """The loss called ``name``; ValueError listing the known ones otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
