"""Small pieces both training loops share: a training log cut back to the checkpoint a run
resumes from, the random state an exact resume restores, and the learning-rate schedule."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.atomic import write_file


def normalise(value: Any) -> Any:
    """A setting as it reads back from JSON (tuples become lists), to compare resumed settings."""
    return list(value) if isinstance(value, tuple | list) else value


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the interruption
    write_file(path, "".join(line + "\n" for line in kept))


def rng_state() -> dict[str, Any]:
    """This process's random state: torch (and every visible GPU's), python, numpy."""
    import torch

    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set the random state :func:`rng_state` returned (a checkpoint that lacks numpy's state, or
    holds one GPU's as a single tensor, is restored as far as it goes)."""
    import torch

    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    cuda = state.get("cuda_rng")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, list | tuple):
            torch.cuda.set_rng_state_all(cuda)
        else:
            torch.cuda.set_rng_state(cuda)
    if "numpy_rng" in state:
        np.random.set_state(state["numpy_rng"])


def warmup_then_linear_decay(optimizer, steps: int, warmup_ratio: float):
    """A LambdaLR: linear warmup over ``warmup_ratio × steps`` steps, then linear decay to 0."""
    import torch

    warmup = int(steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
