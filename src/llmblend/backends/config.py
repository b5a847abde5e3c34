"""Which LLMs answer, and how: the ``models.yaml`` of ``llmblend generate`` (LLM-Blender §2).

A config lists backends; each gives one model and the sampling variants it is asked with, so that
a few models still give N candidates (MixInstruct recorded each candidate's ``decoding_method``)::

    defaults: {max_tokens: 256, temperature: 0.7, top_p: 0.95}
    backends:
      - model: local:smollm2-135m          # packaged GGUF, llama.cpp in-process
        samples: 2                         # two seeded samples: seeds 0 and 1
      - name: gpt-4o-mini
        model: gpt-4o-mini
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY        # the variable's name; the key itself never goes in a file
        concurrency: 8
        variants: [{temperature: 0}, {temperature: 1.0, seed: 7}]

The schema is pydantic (unknown keys are errors that name the key); :func:`load_backend_config`
turns validation errors into one message naming the file and each bad field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmblend.backends.base import Backend, GenerationParams
from llmblend.errors import LlmblendError
from llmblend.rank.judge_config import JudgeSettings
from llmblend.train.config import read_yaml

BackendType = Literal["auto", "openai", "llama_cpp", "hf"]
M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sampling(_Strict):
    """Decoding settings; any left unset come from the config's ``defaults``."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None

    def over(self, base: Sampling) -> Sampling:
        """These settings, with the unset ones taken from ``base``."""
        return base.model_copy(update=self.model_dump(exclude_none=True))

    def params(self) -> GenerationParams:
        values = self.model_dump(exclude_none=True)
        values["stop"] = tuple(values.get("stop", ()))
        return GenerationParams(**values)


DEFAULT_SAMPLING = Sampling(max_tokens=256, temperature=0.7, top_p=0.95)


class BackendSpec(Sampling):
    """One model. ``type: auto`` picks from ``model``: ``local:NAME`` or a ``.gguf`` path → llama.cpp,
    a folder → transformers, anything with ``base_url`` → an OpenAI-compatible endpoint."""

    model: str
    name: str | None = None
    type: BackendType = "auto"
    samples: int = Field(1, ge=1, le=64)
    variants: list[Sampling] | None = None
    # OpenAI-compatible endpoints
    base_url: str | None = None
    api_key_env: str | None = None
    mode: Literal["chat", "completion"] = "chat"
    concurrency: int | None = Field(None, ge=1)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    # local models
    llama_mode: Literal["auto", "server", "in-process"] = "auto"
    threads: int | None = Field(None, ge=1)
    n_ctx: int = Field(2048, ge=128)
    batch_size: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check(self) -> BackendSpec:
        if self.variants is not None and self.samples != 1:
            raise ValueError("give either samples (seeded copies of one setting) or variants, not both")
        if self.variants == []:
            raise ValueError("variants is empty; list at least one, or leave it out")
        if self.resolved_type == "openai" and not self.base_url:
            raise ValueError(f"model {self.model!r} needs a base_url (an OpenAI-compatible endpoint)")
        return self

    @property
    def display_name(self) -> str:
        """The model name recorded on candidates: ``name``, else the model without ``local:``."""
        return self.name or self.model.removeprefix("local:")

    @property
    def resolved_type(self) -> str:
        if self.type != "auto":
            return self.type
        if self.base_url:
            return "openai"
        if self.model.startswith("local:") or self.model.endswith(".gguf"):
            return "llama_cpp"
        return "hf"

    def sampling_variants(self, defaults: Sampling) -> list[GenerationParams]:
        """The settings of each candidate this model gives per instruction.

        ``samples: n`` gives n copies of the backend's setting with seeds 0..n-1 (an error for
        greedy decoding, whose copies would be identical); ``variants`` lists them explicitly.
        """
        base = Sampling(**self.model_dump(include=set(Sampling.model_fields), exclude_none=True)).over(
            defaults
        )
        if self.variants is not None:
            return _distinct([variant.over(base).params() for variant in self.variants], self.display_name)
        if self.samples == 1:
            return [base.params()]
        if base.temperature == 0:
            raise LlmblendError(
                f"backend {self.display_name!r}: samples: {self.samples} with temperature 0 gives "
                "identical answers; set a temperature > 0 or use variants"
            )
        first = base.seed or 0
        return [base.model_copy(update={"seed": first + i}).params() for i in range(self.samples)]


def _distinct(params: list[GenerationParams], name: str) -> list[GenerationParams]:
    methods = [p.decoding_method for p in params]
    if len(set(methods)) != len(methods):
        raise LlmblendError(
            f"backend {name!r}: two variants have the same decoding method {methods}; "
            "give each sampled variant its own seed"
        )
    return params


class GenerateConfig(_Strict):
    """A ``models.yaml``: sampling ``defaults``, the ``backends`` to ask, and optionally how one of
    them ranks as a ``judge`` (:mod:`llmblend.rank.judge_config`)."""

    defaults: Sampling = DEFAULT_SAMPLING
    backends: list[BackendSpec] = Field(min_length=1)
    judge: JudgeSettings | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> GenerateConfig:
        names = [b.display_name for b in self.backends]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"backend names must be unique; {duplicates} repeat: give each a `name`")
        if self.judge is not None and self.judge.backend is not None and self.judge.backend not in names:
            raise ValueError(
                f"judge.backend {self.judge.backend!r} is not a backend of the file; it has {names}"
            )
        return self


#: The embedded default: the two small models that ship on PyPI, two samples each.
DEFAULT_CONFIG = GenerateConfig(
    defaults=Sampling(max_tokens=192, temperature=0.7, top_p=0.95),
    backends=[
        BackendSpec(model="local:smollm2-135m", samples=2),
        BackendSpec(model="local:gemma3-270m", samples=2),
    ],
)


def format_validation_errors(path: Path, error: ValidationError, what: str = "backend config") -> str:
    """One message naming the file and each bad field by its key path (``backends.1.model: ...``)."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"  {where}: {problem['msg']}")
    return f"{path}: invalid {what}:\n" + "\n".join(lines)


def load_yaml_config(schema: type[M], path: str | Path, what: str) -> M:
    """The YAML file ``path`` validated by ``schema``; a bad file is one error naming the file and
    each bad key path (``what`` names the kind of config in it)."""
    path = Path(path)
    try:
        return schema.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise LlmblendError(format_validation_errors(path, exc, what)) from None


def load_backend_config(path: str | Path | None) -> GenerateConfig:
    """The config in ``path`` (YAML), or :data:`DEFAULT_CONFIG` when ``path`` is None."""
    return DEFAULT_CONFIG if path is None else load_yaml_config(GenerateConfig, path, "backend config")


@dataclass(frozen=True, slots=True)
class Slot:
    """One candidate per instruction: a backend asked with one sampling variant."""

    backend: Backend
    params: GenerationParams

    @property
    def key(self) -> tuple[str, str]:
        return self.backend.name, self.params.decoding_method


def _local_threads(config: GenerateConfig, cores: int | None = None) -> int:
    """Cores per in-process model when all local models decode at once on ``cores`` cores (default:
    the machine's); llama.cpp and torch both slow down badly when their threads outnumber the cores."""
    local = sum(b.resolved_type in ("llama_cpp", "hf") for b in config.backends)
    return max(1, (cores or os.cpu_count() or 1) // max(local, 1))


def llama_backend_class(mode: str, threads: int) -> type[Backend]:
    """In-process llama.cpp or a llama_cpp.server child process; ``auto`` picks by measurement
    (bench/bench_generation.py): a model decoding on several threads runs them at full speed only
    from a process's main thread, so it gets a server; with one thread each (several local models
    sharing the cores) both run equally fast and in-process needs no child process."""
    from llmblend.backends.llama_cpp import LlamaCppBackend
    from llmblend.backends.llama_server import LlamaServerBackend

    if mode == "server" or (mode == "auto" and threads > 1):
        return LlamaServerBackend
    return LlamaCppBackend


def build_backend(spec: BackendSpec, default_threads: int = 1) -> Backend:
    """The backend of one spec (heavy libraries are imported only for the types used)."""
    kind = spec.resolved_type
    if kind == "openai":
        from llmblend.backends.openai_http import OpenAIBackend

        return OpenAIBackend(
            name=spec.display_name,
            model=spec.model,
            base_url=spec.base_url,
            api_key_env=spec.api_key_env,
            mode=spec.mode,
            concurrency=spec.concurrency or 4,
            connect_timeout=spec.connect_timeout,
            read_timeout=spec.read_timeout,
            max_retries=spec.max_retries,
        )
    if kind == "llama_cpp":
        threads = spec.threads or default_threads
        return llama_backend_class(spec.llama_mode, threads)(
            spec.model, name=spec.display_name, threads=threads, n_ctx=spec.n_ctx
        )
    from llmblend.backends.hf_local import HFBackend

    return HFBackend(
        spec.model,
        name=spec.display_name,
        batch_size=spec.batch_size,
        threads=spec.threads or default_threads,
    )


def build_slots(config: GenerateConfig, cores: int | None = None) -> list[Slot]:
    """Every (backend, sampling variant) of a config, backends built once each; local models share
    ``cores`` cores (default: the machine's)."""
    threads = _local_threads(config, cores)
    slots = []
    for spec in config.backends:
        variants = spec.sampling_variants(config.defaults)
        backend = build_backend(spec, threads)
        slots += [Slot(backend, params) for params in variants]
    return slots
