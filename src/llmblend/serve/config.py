"""What ``llmblend serve`` serves: the ``serve.yaml`` schema (pydantic; unknown keys are errors).

A config lists the backends (the same entries as ``models.yaml``), the ranker and fuser, and the
*models the gateway exposes*::

    backends:
      - model: local:smollm2-135m
      - {name: gpt-4o-mini, model: gpt-4o-mini, base_url: "https://api.openai.com/v1",
         api_key_env: OPENAI_API_KEY}
    ranker: {pool: pool.json}            # the shipped PairRanker, pool-aware
    fuser: default                       # the shipped GenFuser; none returns the top candidate
    profiles:
      blend-fast: {kind: blend, backends: [smollm2-135m, gpt-4o-mini], fuse: false}
    limits: {max_concurrent: 4, max_queue: 16, deadline_s: 60, rate_per_minute: 120}
    traffic: {log: traffic/blends.jsonl}

Every config exposes ``blend`` (all backends → rank → fuse top-K → guard: LLM-Blender §3–4),
``rank`` (all backends → the top-ranked candidate), ``best-of-n:<backend>`` (``best_of_n`` seeded
samples of one backend, ranked) and each backend under its own name (a plain proxy), plus the
named ``profiles``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmblend.backends.config import (
    DEFAULT_CONFIG,
    DEFAULT_SAMPLING,
    BackendSpec,
    Sampling,
    load_yaml_config,
)

ProfileKind = Literal["blend", "rank", "best-of-n"]
#: The names every gateway exposes besides its backends; a profile or backend may not take them.
BUILT_IN_PROFILES = ("blend", "rank")
BEST_OF_N_PREFIX = "best-of-n:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileSpec(_Strict):
    """One exposed model that is more than one backend.

    ``backends``: the backend names it asks (all when unset; ``best-of-n`` asks exactly one, ``n``
    times with seeds 0..n-1); ``fuse``: whether a ``blend`` profile fuses the top ``top_k`` (False:
    like ``rank``); ``guard``: whether a fused answer must beat the top candidate; ``strategy``: the
    ranking strategy (the ranker's default when unset).
    """

    kind: ProfileKind = "blend"
    backends: list[str] | None = Field(None, min_length=1)
    n: int = Field(4, ge=2, le=32)
    fuse: bool = True
    top_k: int = Field(3, ge=1, le=16)
    guard: bool = True
    strategy: str | None = None

    @model_validator(mode="after")
    def _one_backend_for_best_of_n(self) -> ProfileSpec:
        if self.kind == "best-of-n" and (self.backends is None or len(self.backends) != 1):
            raise ValueError("a best-of-n profile names exactly one backend: backends: [NAME]")
        return self


class RankerSpec(_Strict):
    """The ranker every profile shares. ``spec``: a ``-r`` ranker spec (``length``, ``mbr``, a folder,
    ``pool:FILE``...); otherwise the PairRanker ``model`` (the shipped one when unset) on ``runtime``,
    pool-aware when ``pool`` names a file from ``llmblend train pool``."""

    spec: str | None = None
    model: str | None = None
    runtime: str | None = None
    pool: Path | None = None
    batch_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _spec_or_model(self) -> RankerSpec:
        if self.spec is not None and (self.model or self.runtime or self.pool):
            raise ValueError("give either spec or model/runtime/pool, not both")
        return self


class Limits(_Strict):
    """What one request may ask and how much the gateway takes on at once.

    ``max_body_bytes`` (413 beyond), ``max_messages``, ``max_candidates`` (``/v1/rank``) and
    ``max_tokens`` (400 beyond); ``rate_per_minute`` requests per API key (429 with ``Retry-After``;
    None: no limit); ``max_concurrent`` blends at once with ``max_queue`` more waiting (503 when the
    queue is full); ``deadline_s`` per request (504, or with ``deadline_fallback`` the best answer
    so far); ``generate_timeout_s``: how long a blend waits for its slowest backend before it goes
    on without it.
    """

    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_messages: int = Field(64, ge=1)
    max_candidates: int = Field(32, ge=2)
    max_tokens: int = Field(2048, ge=1)
    rate_per_minute: int | None = Field(None, ge=1)
    max_concurrent: int = Field(4, ge=1)
    max_queue: int = Field(16, ge=0)
    deadline_s: float = Field(300.0, gt=0)
    deadline_fallback: bool = False
    generate_timeout_s: float = Field(120.0, gt=0)


class TrafficSpec(_Strict):
    """Traffic as data (opt-in): each blend appended to ``log`` as a MixInstruct record (rotated at
    ``max_bytes``, ``backups`` old files kept); ``POST /v1/feedback`` appends to ``feedback``."""

    log: Path
    feedback: Path | None = None
    max_bytes: int = Field(64 * 2**20, ge=4096)
    backups: int = Field(5, ge=0)

    @property
    def feedback_path(self) -> Path:
        return self.feedback or self.log.with_name("feedback.jsonl")


class BatchingSpec(_Strict):
    """Cross-request micro-batching of the ranker: while the ranker is busy, rank requests that arrive
    meanwhile wait and go in its next call (at most ``max_examples``); ``window_ms`` > 0 also holds
    a request that finds the ranker idle that long, for company. Off by itself for a ranker on a
    runtime that scores one pair per forward (``onnx-int8``), where it was measured not to pay."""

    enabled: bool = True
    window_ms: float = Field(0.0, ge=0)
    max_examples: int = Field(16, ge=1)


class ServeConfig(_Strict):
    """A ``serve.yaml``; see the module docstring."""

    defaults: Sampling = DEFAULT_SAMPLING
    backends: list[BackendSpec] = Field(min_length=1)
    ranker: RankerSpec = RankerSpec()
    fuser: str | None = "default"
    best_of_n: int = Field(4, ge=2, le=32)
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    limits: Limits = Limits()
    traffic: TrafficSpec | None = None
    batching: BatchingSpec = BatchingSpec()
    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> ServeConfig:
        backends = [b.display_name for b in self.backends]
        if duplicates := sorted({n for n in backends if backends.count(n) > 1}):
            raise ValueError(f"backend names must be unique; {duplicates} repeat: give each a `name`")
        for name in backends:
            if name in BUILT_IN_PROFILES or name.startswith(BEST_OF_N_PREFIX):
                raise ValueError(f"backend name {name!r} is reserved for a profile; give it another `name`")
        for name, profile in self.profiles.items():
            if name in backends or name in BUILT_IN_PROFILES or name.startswith(BEST_OF_N_PREFIX):
                raise ValueError(f"profile name {name!r} is already a backend or a built-in profile")
            if unknown := sorted(set(profile.backends or ()) - set(backends)):
                raise ValueError(f"profile {name!r} names unknown backends {unknown}; known: {backends}")
        return self

    def profile(self, name: str) -> ProfileSpec | None:
        """The profile an exposed model name stands for; None for a backend name (a proxy) or an
        unknown name."""
        if name in self.profiles:
            return self.profiles[name]
        if name == "blend":
            return ProfileSpec(kind="blend")
        if name == "rank":
            return ProfileSpec(kind="rank")
        backend = name.removeprefix(BEST_OF_N_PREFIX)
        if name.startswith(BEST_OF_N_PREFIX) and backend in self.backend_names:
            return ProfileSpec(kind="best-of-n", backends=[backend], n=self.best_of_n)
        return None

    @property
    def backend_names(self) -> list[str]:
        return [b.display_name for b in self.backends]

    @property
    def model_names(self) -> list[str]:
        """Every model name a client may ask for, profiles first."""
        return [
            *BUILT_IN_PROFILES,
            *self.profiles,
            *(f"{BEST_OF_N_PREFIX}{name}" for name in self.backend_names),
            *self.backend_names,
        ]


#: The embedded default: the two packaged local models, the shipped ranker and fuser, offline.
DEFAULT_SERVE_CONFIG = ServeConfig(defaults=DEFAULT_CONFIG.defaults, backends=DEFAULT_CONFIG.backends)


def load_serve_config(path: str | Path | None) -> ServeConfig:
    """The config in ``path`` (YAML), or :data:`DEFAULT_SERVE_CONFIG` when ``path`` is None; a bad
    file is one error naming the file and each bad key path."""
    return DEFAULT_SERVE_CONFIG if path is None else load_yaml_config(ServeConfig, path, "serve config")
