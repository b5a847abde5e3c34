"""Best-of-n: n seeded samples of one model, ranked, the best returned — the ranker as a reward model.

The most common use of PairRM is not blending several LLMs but picking the best of n samples of one
(best-of-16 lifts zephyr-7b-beta on AlpacaEval 2 from 11.0 to 12.8). :func:`sample_slots` makes the
n candidates: the backend's settings with seeds ``seed, seed + 1, …``, so the n answers differ and
a rerun asks for the same ones. The rest is the LLM-Blender pipeline without a fuser (§3):
:meth:`~llmblend.blender.Blender.best_of_n` for one instruction at a time, ``llmblend best-of-n``
for a file (resumable), the gateway's ``best-of-n:<backend>`` models for requests.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmblend.backends.base import Backend, GenerationParams
from llmblend.backends.config import BackendSpec, GenerateConfig, Slot, build_backend, load_backend_config
from llmblend.errors import LlmblendError
from llmblend.types import Example, Ranking


def sample_slots(backend: Backend, params: GenerationParams, n: int) -> list[Slot]:
    """``n`` samples of ``backend``: ``params`` with seeds ``params.seed or 0`` onwards."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 samples, got {n}")
    first = params.seed or 0
    return [Slot(backend, replace(params, seed=first + i)) for i in range(n)]


def sampled_backend(config: Path | None, backend: str | None, n: int) -> tuple[BackendSpec, GenerationParams]:
    """The backend of a models.yaml that best-of-n samples (its first when ``backend`` is None; None
    config: the packaged local models) and its first sampling variant, checked for ``n`` samples;
    nothing is built, so this is cheap enough to fail fast on."""
    parsed = load_backend_config(config)
    spec = backend_spec(parsed, backend)
    params = spec.sampling_variants(parsed.defaults)[0]
    check_sampling(params, n, spec.display_name)
    return spec, params


def best_of_n_slots(config: Path | None, backend: str | None, n: int, cores: int | None = None) -> list[Slot]:
    """The ``n`` sample slots of :func:`sampled_backend`, its local models sharing ``cores`` cores."""
    spec, params = sampled_backend(config, backend, n)
    return sample_slots(build_backend(spec, cores or os.cpu_count() or 1), params, n)


def backend_spec(config: GenerateConfig, name: str | None) -> BackendSpec:
    """The backend called ``name`` in ``config`` (its first for None), or a ValueError listing them."""
    if name is None:
        return config.backends[0]
    for spec in config.backends:
        if spec.display_name == name:
            return spec
    known = ", ".join(spec.display_name for spec in config.backends)
    raise ValueError(f"--backend {name!r} is not in the config; it has: {known}")


def check_sampling(params: GenerationParams, n: int, backend: str) -> None:
    """A clear error when ``n`` greedy samples would all be the same answer."""
    if n > 1 and params.greedy:
        raise LlmblendError(
            f"best-of-n with n={n} needs sampling, but backend {backend!r} decodes greedily (temperature 0): "
            "every sample would be the same answer; set its temperature above 0"
        )


def best_record(example: Example, ranking: Ranking) -> dict[str, Any]:
    """The ``best`` field of a best-of-n output record: the top candidate (or why there is none)."""
    if not ranking.ok or ranking.best is None:
        return {"best": {"index": None, "error": ranking.error or "no candidates"}}
    best = example.candidates[ranking.best]
    return {
        "best": {
            "index": ranking.best,
            "model": best.model,
            "decoding_method": best.decoding_method,
            "score": round(float(ranking.scores[ranking.best]), 6),
            "text": best.text,
        }
    }
