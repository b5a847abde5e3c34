"""GenFuser served by llama.cpp: a quantised GGUF base plus the trained LoRA adapter as GGUF (§4).

The trained causal fuser (``train/fuser.py``) learns on the base dequantised by transformers; here
llama.cpp runs the same quantised base with the adapter applied at load time, several times faster
on a CPU (``bench/bench_fuser.py``). The input is built by the very function training uses
(:func:`~llmblend.fuse.inputs.encode_source`), with llama.cpp's tokenizer standing in for the
Hugging Face one (same vocabulary, same ids), so the model reads exactly what it was trained on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmblend.backends.base import COMPLETION_STOP
from llmblend.backends.llama_cpp import LOAD_LOCK, quiet_native_stderr, resolve_model
from llmblend.errors import LlmblendError, MissingExtraError
from llmblend.fuse.base import Fused, FuseItem
from llmblend.fuse.inputs import encode_source

log = logging.getLogger(__name__)

#: The fuser that ships with llmblend (LoRA on Gemma-3-270M, trained on alpaca-blend).
DEFAULT_FUSER_DIR = Path(__file__).resolve().parent.parent / "models" / "fuser-gemma3-270m"
ADAPTER_GGUF = "adapter.gguf"
SETTINGS_FILE = "llmblend.json"


class LlamaTokenizer:
    """The slice of a Hugging Face tokenizer that :func:`encode_source` uses, over llama.cpp's vocab.

    Only for models without a chat template (the fuser's base is asked with the completion frame).
    """

    chat_template = None

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = self._llama.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=False)
        return {"input_ids": list(ids)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._llama.detokenize(list(ids)).decode("utf-8", errors="ignore")


class LlamaCppFuser:
    """A causal fuser run by llama-cpp-python: ``base`` (``local:NAME`` or a .gguf) + ``lora_gguf``.

    Budgets are those of training (``max_candidate_tokens``, ``max_source_tokens``); decoding is
    greedy with ``max_new_tokens``. The model loads on first use; calls are serialised.
    """

    def __init__(
        self,
        base: str = "local:gemma3-270m",
        lora_gguf: str | Path | None = None,
        *,
        name: str | None = None,
        threads: int | None = None,
        n_ctx: int = 2048,
        max_candidate_tokens: int = 128,
        max_source_tokens: int = 448,
        max_new_tokens: int = 192,
    ) -> None:
        self.base_path, _ = resolve_model(base)
        self.lora_gguf = None if lora_gguf is None else Path(lora_gguf)
        if self.lora_gguf is not None and not self.lora_gguf.is_file():
            raise LlmblendError(f"LoRA adapter {self.lora_gguf} does not exist")
        self.name = name or f"{base.removeprefix('local:')}{'+lora' if lora_gguf else ''}"
        self.threads = threads
        self.n_ctx = n_ctx
        self.max_candidate_tokens = max_candidate_tokens
        self.max_source_tokens = max_source_tokens
        self.max_new_tokens = max_new_tokens
        self._llama: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | Path, **options: Any) -> LlamaCppFuser:
        """A fuser folder with ``adapter.gguf`` and ``llmblend.json`` (base and budgets)."""
        folder = Path(folder)
        settings_path = folder / SETTINGS_FILE
        if not settings_path.is_file() or not (folder / ADAPTER_GGUF).is_file():
            raise LlmblendError(
                f"{folder} is not a llama.cpp fuser folder (needs {ADAPTER_GGUF} and {SETTINGS_FILE})"
            )
        settings = json.loads(settings_path.read_text(encoding="utf-8")).get("llmblend", {})
        budgets = {
            k: settings[k]
            for k in ("max_candidate_tokens", "max_source_tokens", "max_new_tokens")
            if k in settings
        }
        base = settings.get("base_model", "local:gemma3-270m")
        return cls(
            base, folder / ADAPTER_GGUF, **{"name": settings.get("name", folder.name), **budgets, **options}
        )

    @classmethod
    def default(cls, **options: Any) -> LlamaCppFuser:
        """The fuser that ships inside the package (works offline)."""
        return cls.from_folder(DEFAULT_FUSER_DIR, **options)

    def _model(self) -> Any:
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise MissingExtraError("llama-cpp-python", "local", "the llama.cpp fuser") from None
            options = {"lora_path": str(self.lora_gguf)} if self.lora_gguf else {}
            with LOAD_LOCK, quiet_native_stderr():
                self._llama = Llama(
                    model_path=str(self.base_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.threads,
                    verbose=False,
                    **options,
                )
        return self._llama

    def _fuse_one(self, llama: Any, item: FuseItem) -> Fused:
        started = time.perf_counter()
        try:
            ids = encode_source(
                LlamaTokenizer(llama),
                "causal",
                item.instruction,
                item.input,
                item.candidates,
                max_candidate_tokens=self.max_candidate_tokens,
                max_source_tokens=self.max_source_tokens,
            )
            out = llama.create_completion(
                prompt=ids,
                max_tokens=self.max_new_tokens,
                temperature=0.0,
                repeat_penalty=1.0,
                stop=list(COMPLETION_STOP),  # a small base model that goes on to a new turn is done
            )
        except ValueError as exc:  # an input over the context window, or one that cannot fit the budget
            return Fused("", self.name, latency_s=time.perf_counter() - started, error=f"bad_input: {exc}")
        usage = out.get("usage") or {}
        return Fused(
            text=out["choices"][0]["text"].strip(),
            fuser=self.name,
            prompt_tokens=usage.get("prompt_tokens", len(ids)),
            completion_tokens=usage.get("completion_tokens", 0),
            latency_s=time.perf_counter() - started,
            extra={"finish_reason": out["choices"][0].get("finish_reason")},
        )

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        """One fused answer per item (greedy); per-item failures come back as data."""
        with self._lock:
            llama = self._model()
            return [self._fuse_one(llama, item) for item in items]

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None


def package_fuser(adapter_folder: str | Path, out: str | Path, *, name: str | None = None) -> Path:
    """A small, shippable fuser folder from a trained LoRA adapter folder (``best/``).

    Writes ``adapter.gguf`` (f16, for llama.cpp), the peft adapter in f16 (``adapter_config.json`` +
    ``adapter_model.safetensors``, for :class:`~llmblend.fuse.trained.TrainedFuser`) and
    ``llmblend.json``; no tokenizer (both runtimes read it from the base GGUF). Returns ``out``.
    """
    from safetensors.numpy import load_file, save_file

    from llmblend.fuse.lora_gguf import export_lora_gguf

    source, out = Path(adapter_folder), Path(out)
    settings_path = source / SETTINGS_FILE
    if not settings_path.is_file():
        raise LlmblendError(
            f"{source} has no {SETTINGS_FILE}: package the best/ folder of `llmblend train fuser`"
        )
    out.mkdir(parents=True, exist_ok=True)
    export_lora_gguf(source, out / ADAPTER_GGUF, dtype="f16")
    weights = load_file(str(source / "adapter_model.safetensors"))
    save_file({k: v.astype("float16") for k, v in weights.items()}, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text((source / "adapter_config.json").read_text(encoding="utf-8"))
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    settings["llmblend"]["name"] = name or settings["llmblend"].get("name") or out.name
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for file in out.iterdir():
        file.chmod(0o644)
    return out
