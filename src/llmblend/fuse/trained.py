"""GenFuser's trained path (LLM-Blender §4): a fine-tuned seq2seq or causal LM fuses the top-K.

:class:`TrainedFuser` wraps a Hugging Face model and its tokenizer:

- **seq2seq** (``config.is_encoder_decoder``: T5, Flan-T5, BART) reads LLM-Blender's input string
  (:func:`~llmblend.fuse.inputs.seq2seq_input`); the official ``llm-blender/gen_fuser_3b`` (a
  Flan-T5-XL) loads through this path: ``TrainedFuser.from_pretrained("llm-blender/gen_fuser_3b")``.
- **causal** (Llama, Gemma, Qwen, ... also from a GGUF file, dequantised by transformers) reads the
  same request as a user message (:func:`~llmblend.fuse.inputs.causal_prompt`).

Either may carry a peft LoRA adapter. :meth:`TrainedFuser.fuse` answers a batch: prompts are
tokenized and cut to the budgets, sorted by length and generated ``batch_size`` at a time (left
padding for causal LMs, right padding for encoders), greedy unless ``num_beams > 1``, each answer up
to the first end-of-sequence token. A prompt that cannot be built or a batch that fails becomes an
error on its own items (a failing batch is retried one item at a time), never an exception.

A saved fuser is a Hugging Face folder. A full model: ``config.json`` (with an ``llmblend`` section:
fuser kind, base model, GGUF file, budgets), weights, tokenizer. An adapter: peft's
``adapter_config.json`` + ``adapter_model.safetensors``, the tokenizer, and ``llmblend.json`` (the
same ``llmblend`` section, naming the base model: a folder, a hub id or ``local:NAME``, and the GGUF
file), so ``TrainedFuser.from_pretrained(adapter_folder)`` finds and loads its base by itself. A plain
peft adapter folder without ``llmblend.json`` also loads (its ``base_model_name_or_path``).

Models, adapters and tokenizers load through :func:`llmblend.hf_loading.load_lm` (threads, dtype,
device, GGUF, adapter); torch, transformers and peft are imported on use, and
:class:`~llmblend.errors.MissingExtraError` names the extra to install when one is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from llmblend.atomic import replace_folder
from llmblend.errors import LlmblendError
from llmblend.fuse.base import Fused, FuseItem
from llmblend.fuse.inputs import MODEL_KINDS, ModelKind, encode_source
from llmblend.hf_loading import import_ml, is_peft_model, load_lm

log = logging.getLogger(__name__)

CONFIG_KEY: Final = "llmblend"
#: The file of an adapter folder that holds its ``llmblend`` section (peft owns adapter_config.json).
ADAPTER_SETTINGS_FILE: Final = "llmblend.json"
FORMAT_VERSION: Final = 1
FUSER_TYPE: Final = "trained-fuser"
#: The official LLM-Blender GenFuser (Flan-T5-XL, 3B parameters).
OFFICIAL_GEN_FUSER: Final = "llm-blender/gen_fuser_3b"
#: What needs the ML extra, in a :class:`~llmblend.errors.MissingExtraError`.
PURPOSE: Final = "a trained fuser"
#: How a model that does not load is named in the error.
WHAT: Final = "the fuser model"
#: Budgets used when neither the caller nor a saved folder gives one (LLM-Blender's GenFuser: 128
#: tokens per candidate, 1024 source tokens, 256 new tokens; top-3).
DEFAULT_BUDGETS: Final = {
    "max_candidate_tokens": 128,
    "max_source_tokens": 1024,
    "max_new_tokens": 256,
    "num_beams": 1,
    "top_k": 3,
}


# ---------------------------------------------------------------- saved fuser folders


def portable_spec(spec: str) -> str:
    """``spec`` as recorded in a saved folder: an existing local path made absolute, else unchanged."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if not spec.startswith("local:") and path.exists() else spec


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def read_fuser_settings(folder: str | Path) -> dict[str, Any]:
    """The ``llmblend`` section of a saved fuser folder (adapter or model), or {} when it has none."""
    folder = Path(folder)
    for name in (ADAPTER_SETTINGS_FILE, "config.json"):
        file = folder / name
        if file.is_file():
            section = json.loads(file.read_text(encoding="utf-8")).get(CONFIG_KEY)
            if isinstance(section, dict):
                version = section.get("format_version", 0)
                if version > FORMAT_VERSION:
                    raise LlmblendError(
                        f"{folder} was saved with fuser format version {version}; this llmblend reads up to "
                        f"{FORMAT_VERSION}. Upgrade llmblend."
                    )
                return section
    return {}


def _adapter_base(folder: Path, section: dict[str, Any]) -> str:
    base = section.get("base_model")
    if not base:
        adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        base = adapter_config.get("base_model_name_or_path")
    if not base:
        raise LlmblendError(
            f"the adapter {folder} does not name its base model; pass the base as the path and the "
            "adapter as adapter="
        )
    return str(base)


# ---------------------------------------------------------------- the fuser


@dataclass(slots=True)
class _Row:
    index: int
    ids: list[int]


class TrainedFuser:
    """A fine-tuned LM that fuses the top-K candidates (LLM-Blender §4); see the module notes.

    ``items`` give candidates best first; only the first ``top_k`` are read. Budgets: each candidate
    is cut to ``max_candidate_tokens``, the whole input to ``max_source_tokens``; answers stop at
    ``max_new_tokens`` (or at the model's context length).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        kind: ModelKind,
        base_model: str,
        gguf_file: str | None = None,
        name: str | None = None,
        max_candidate_tokens: int = 128,
        max_source_tokens: int = 1024,
        max_new_tokens: int = 256,
        num_beams: int = 1,
        batch_size: int = 4,
        top_k: int = 3,
        bf16_autocast: bool = False,
    ) -> None:
        if kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
        for option, value in (
            ("max_candidate_tokens", max_candidate_tokens),
            ("max_source_tokens", max_source_tokens),
            ("max_new_tokens", max_new_tokens),
            ("num_beams", num_beams),
            ("batch_size", batch_size),
            ("top_k", top_k),
        ):
            if value < 1:
                raise ValueError(f"{option} must be at least 1, got {value}")
        self.model = model
        self.tokenizer = tokenizer
        self.kind: ModelKind = kind
        self.base_model = base_model
        self.gguf_file = gguf_file
        self.name = name or f"trained-fuser:{Path(base_model).name or base_model}"
        self.max_candidate_tokens = max_candidate_tokens
        self.max_source_tokens = max_source_tokens
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.top_k = top_k
        self.bf16_autocast = bf16_autocast

    # ---- loading and saving ----

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        adapter: str | Path | None = None,
        gguf_file: str | None = None,
        dtype: str = "auto",
        device: str = "cpu",
        max_candidate_tokens: int | None = None,
        max_source_tokens: int | None = None,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        batch_size: int = 4,
        top_k: int | None = None,
        threads: int | None = None,
        name: str | None = None,
    ) -> TrainedFuser:
        """Load a fuser: a model folder or hub id (e.g. :data:`OFFICIAL_GEN_FUSER`), a GGUF model
        (``gguf_file=``, a ``.gguf`` path, or ``local:NAME``), optionally with a peft LoRA
        ``adapter`` on top; or an adapter folder alone, whose saved settings name its base.

        Budgets left as None come from the folder's saved ``llmblend`` section, else
        :data:`DEFAULT_BUDGETS`. ``threads`` sets torch's CPU threads.
        """
        import_ml(PURPOSE)
        spec = str(path_or_hub_id)
        local = Path(spec).expanduser()
        section: dict[str, Any] = {}
        base_gguf = gguf_file
        if local.is_dir() and is_adapter_folder(local):
            if adapter is not None:
                raise LlmblendError(
                    f"{spec} is itself an adapter folder; pass its base model as the path, "
                    "or leave out adapter="
                )
            adapter, section = local, read_fuser_settings(local)
            spec = _adapter_base(local, section)
            base_gguf = gguf_file or section.get("gguf_file")
        elif local.is_dir():
            section = read_fuser_settings(local)
        if adapter is not None and Path(adapter).expanduser().is_dir():
            section = {**section, **read_fuser_settings(Path(adapter).expanduser())}
        loaded = load_lm(
            spec,
            gguf_file=base_gguf,
            dtype=dtype,
            device=device,
            threads=threads,
            adapter=adapter,
            what=WHAT,
            purpose=PURPOSE,
        )
        given = {
            "max_candidate_tokens": max_candidate_tokens,
            "max_source_tokens": max_source_tokens,
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
            "top_k": top_k,
        }
        budgets = {
            key: value if value is not None else int(section.get(key, DEFAULT_BUDGETS[key]))
            for key, value in given.items()
        }
        default_name = section.get("name") or f"trained-fuser:{Path(str(adapter or spec)).name}"
        return cls(
            loaded.model,
            loaded.tokenizer,
            kind=loaded.kind,
            base_model=portable_spec(spec),
            gguf_file=base_gguf,
            name=name or default_name,
            batch_size=batch_size,
            **budgets,
        )

    @property
    def is_adapter(self) -> bool:
        return is_peft_model(self.model)

    def settings(self) -> dict[str, Any]:
        """The ``llmblend`` section written with the fuser."""
        from llmblend import __version__

        return {
            "format_version": FORMAT_VERSION,
            "type": FUSER_TYPE,
            "kind": self.kind,
            "adapter": self.is_adapter,
            "base_model": self.base_model,
            "gguf_file": self.gguf_file,
            "name": self.name,
            "max_candidate_tokens": self.max_candidate_tokens,
            "max_source_tokens": self.max_source_tokens,
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "top_k": self.top_k,
            "llmblend_version": __version__,
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the fuser to ``folder`` atomically (a temporary folder beside it, then renamed).

        A peft model writes only its adapter (plus tokenizer and ``llmblend.json``); a plain model
        writes its weights and config.json with the ``llmblend`` section. Returns the folder.
        """
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.write_into(staging)
            replace_folder(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def write_into(self, folder: Path) -> None:
        """Write the fuser's files into an existing (empty) ``folder``."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        section = self.settings()
        if self.is_adapter:
            text = json.dumps({CONFIG_KEY: section}, indent=2, sort_keys=True) + "\n"
            (folder / ADAPTER_SETTINGS_FILE).write_text(text, encoding="utf-8")
        else:
            config_path = folder / "config.json"
            config = json.loads(config_path.read_text(encoding="utf-8"))
            config[CONFIG_KEY] = section
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for file in folder.iterdir():
            if file.is_file():
                os.chmod(file, 0o644)

    # ---- fusing ----

    def encode(self, item: FuseItem) -> list[int]:
        """The input ids for one item (its first ``top_k`` candidates), within the budgets."""
        return encode_source(
            self.tokenizer,
            self.kind,
            item.instruction,
            item.input,
            item.candidates[: self.top_k],
            max_candidate_tokens=self.max_candidate_tokens,
            max_source_tokens=self.max_source_tokens,
        )

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        """One :class:`Fused` per item, in order; an item that fails comes back with ``error`` set."""
        results: list[Fused | None] = [None] * len(items)
        rows: list[_Row] = []
        for index, item in enumerate(items):
            try:
                rows.append(_Row(index, self.encode(item)))
            except Exception as exc:  # a prompt over budget, a template that rejects it: this item only
                results[index] = Fused("", self.name, error=f"{type(exc).__name__}: {exc}")
        rows.sort(key=lambda row: len(row.ids))
        with self._inference():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                for row, fused in zip(chunk, self._run_chunk(chunk), strict=True):
                    results[row.index] = fused
        return [r for r in results if r is not None]

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        import torch

        was_training = self.model.training
        self.model.eval()
        device_type = self.device.type
        try:
            with (
                torch.inference_mode(),
                torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16_autocast),
            ):
                yield
        finally:
            self.model.train(was_training)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def _run_chunk(self, chunk: list[_Row]) -> list[Fused]:
        """Generate for one chunk; if that fails, retry its rows alone so that only the culprit fails."""
        started = time.perf_counter()
        try:
            return self._generate(chunk)
        except Exception as exc:  # OOM, a model bug: the chunk's failure, not the caller's
            if len(chunk) > 1:
                log.warning("%s: a batch of %d failed (%s); retrying one by one", self.name, len(chunk), exc)
                return [fused for row in chunk for fused in self._run_chunk([row])]
            return [
                Fused(
                    "",
                    self.name,
                    prompt_tokens=len(chunk[0].ids),
                    latency_s=time.perf_counter() - started,
                    error=f"generate failed: {type(exc).__name__}: {exc}",
                )
            ]

    @property
    def pad_id(self) -> int:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        configured = getattr(self.model.config, "pad_token_id", None)
        if configured is not None:
            return int(configured)
        return min(self.eos_ids) if self.eos_ids else 0

    @property
    def eos_ids(self) -> set[int]:
        """End-of-sequence ids of the generation config (several for chat models) and the tokenizer."""
        config = getattr(self.model, "generation_config", None)
        configured = getattr(config, "eos_token_id", None)
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self.tokenizer.eos_token_id)
        return {int(i) for i in ids if i is not None}

    def _max_new(self, width: int) -> int:
        if self.kind == "seq2seq":
            return self.max_new_tokens
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if limit is None:
            return self.max_new_tokens
        return max(1, min(self.max_new_tokens, limit - width))

    def _generate(self, chunk: list[_Row]) -> list[Fused]:
        """One ``generate`` call over the chunk: causal rows left-padded, seq2seq rows right-padded."""
        import torch

        started = time.perf_counter()
        width = max(len(row.ids) for row in chunk)
        pad = self.pad_id
        if self.kind == "causal":
            ids = [[pad] * (width - len(row.ids)) + row.ids for row in chunk]
            mask = [[0] * (width - len(row.ids)) + [1] * len(row.ids) for row in chunk]
        else:
            ids = [row.ids + [pad] * (width - len(row.ids)) for row in chunk]
            mask = [[1] * len(row.ids) + [0] * (width - len(row.ids)) for row in chunk]
        device = self.device
        eos = sorted(self.eos_ids)
        output = self.model.generate(
            input_ids=torch.tensor(ids, device=device),
            attention_mask=torch.tensor(mask, device=device),
            max_new_tokens=self._max_new(width),
            do_sample=False,
            num_beams=self.num_beams,
            pad_token_id=pad,
            eos_token_id=eos or None,
        )
        new_tokens = (output[:, width:] if self.kind == "causal" else output[:, 1:]).tolist()
        latency = time.perf_counter() - started
        return [self._finish(row, tokens, latency) for row, tokens in zip(chunk, new_tokens, strict=True)]

    def _finish(self, row: _Row, tokens: list[int], latency: float) -> Fused:
        """The answer of one row: new tokens up to the first end-of-sequence token, decoded, stripped."""
        eos = self.eos_ids
        end = next((k for k, token in enumerate(tokens) if token in eos), None)
        if end is None:
            kept, count, reason = tokens, len(tokens), "length"
        else:
            kept, count, reason = tokens[:end], end + 1, "stop"
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Fused(
            text=text,
            fuser=self.name,
            prompt_tokens=len(row.ids),
            completion_tokens=count,
            latency_s=latency,
            extra={"finish_reason": reason},
        )

    def __repr__(self) -> str:
        return (
            f"TrainedFuser(name={self.name!r}, kind={self.kind!r}, base_model={self.base_model!r}, "
            f"adapter={self.is_adapter})"
        )
