"""Load a Hugging Face language model and its tokenizer: the one loader of llmblend's local LMs.

:func:`load_lm` is what :class:`~llmblend.backends.hf_local.HFBackend` (a causal LM answering
prompts), :class:`~llmblend.fuse.trained.TrainedFuser` (a seq2seq or causal LM fusing candidates,
LLM-Blender §4) and the fuser trainer (:mod:`llmblend.train.fuser`) load their models with. It
takes care of, in order:

- **threads**: torch's (process-wide) CPU thread count, set before anything loads;
- **where the weights are** (:func:`resolve_weights`): a folder, a hub id (downloaded or cached by
  transformers, as ``from_pretrained`` does), a ``.gguf`` path, ``local:NAME`` (a GGUF model
  packaged for llama.cpp), or a folder/hub id with ``gguf_file=`` (dequantised by transformers,
  which needs the ``gguf`` package);
- **kind**: ``"causal"`` (``AutoModelForCausalLM``), ``"seq2seq"`` (``AutoModelForSeq2SeqLM``) or
  ``"auto"`` (seq2seq when the config says ``is_encoder_decoder``);
- **dtype** (:data:`DTYPES`; "auto" is float32 on CPU and the checkpoint's own dtype elsewhere) and
  **device**;
- an optional **peft adapter** on top (LoRA), frozen or trainable;
- the **tokenizer**: the adapter folder's when it has one, else the model's.

torch, transformers, peft and gguf are imported on use; a missing one raises
:class:`~llmblend.errors.MissingExtraError` naming ``pip install 'llmblend[ml]'``. Anything else that
stops a model from loading (a wrong path, an unknown architecture, no network for a hub id) raises
:class:`~llmblend.errors.LlmblendError` saying what could not be loaded and why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from llmblend.errors import LlmblendError, MissingExtraError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Accepted ``dtype`` values; "auto" is float32 on CPU and the checkpoint's own dtype elsewhere.
DTYPES: Final = ("auto", "float32", "bfloat16", "float16")
#: The two kinds of LM: decoder-only, or encoder-decoder (T5, BART).
LMKind = Literal["causal", "seq2seq"]
LM_KINDS: Final = ("causal", "seq2seq")


# ---------------------------------------------------------------- optional packages, devices


def import_ml(purpose: str) -> tuple[Any, Any]:
    """``(torch, transformers)``, or :class:`MissingExtraError` naming the extra to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingExtraError(exc.name or "transformers", "ml", purpose) from exc
    return torch, transformers


def import_peft(purpose: str) -> Any:
    """The ``peft`` module, or :class:`MissingExtraError` naming the extra to install."""
    try:
        import peft
    except ImportError as exc:
        raise MissingExtraError("peft", "ml", purpose) from exc
    return peft


def require_gguf(purpose: str = "loading a GGUF model with transformers") -> None:
    """:class:`MissingExtraError` unless the ``gguf`` package (transformers' GGUF reader) imports."""
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("gguf", "ml", purpose) from exc


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft model (an adapter on a base); False when peft is not installed."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def pick_device(device: str | None) -> torch.device:
    """``device`` as given, else CUDA when available, else CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int | None) -> None:
    """Set torch's (process-wide) CPU thread count; None leaves torch's choice."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1 (or None for torch's default), got {threads}")
    torch, _ = import_ml("setting torch's threads")
    torch.set_num_threads(threads)


def check_dtype(dtype: str) -> None:
    """ValueError unless ``dtype`` is one of :data:`DTYPES`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def torch_dtype(dtype: str, device: str, torch: Any) -> Any:
    """The ``dtype=`` argument of ``from_pretrained`` for one of :data:`DTYPES` on ``device``."""
    check_dtype(dtype)
    if dtype == "auto":
        return torch.float32 if str(device).startswith("cpu") else "auto"
    return getattr(torch, dtype)


# ---------------------------------------------------------------- where the weights are


def resolve_weights(spec: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder or hub id, GGUF file name or None)`` as transformers loads them.

    ``local:NAME`` is a GGUF model packaged for llama.cpp (``local:gemma3-270m``): its folder and
    file. A path to a ``.gguf`` file is split the same way. Anything else is returned as given.
    """
    if spec.startswith("local:"):
        from llmblend.backends.llama_cpp import resolve_model

        path, _ = resolve_model(spec)
        if gguf_file and gguf_file != path.name:
            raise LlmblendError(
                f"{spec} is the GGUF file {path.name}; gguf_file={gguf_file!r} contradicts it"
            )
        return str(path.parent), path.name
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        if gguf_file and gguf_file != path.name:
            raise LlmblendError(f"{spec} is a GGUF file; gguf_file={gguf_file!r} contradicts it")
        return str(path.parent), path.name
    return spec, gguf_file


def has_tokenizer(folder: str | Path) -> bool:
    """Whether ``folder`` is a local folder with tokenizer files."""
    return (Path(folder).expanduser() / "tokenizer_config.json").is_file()


# ---------------------------------------------------------------- loading


def load_model(
    spec: str,
    gguf_file: str | None = None,
    *,
    kind: LMKind | Literal["auto"] = "auto",
    dtype: str = "auto",
    device: str = "cpu",
    what: str = "the model",
    purpose: str = "loading a Hugging Face model",
) -> tuple[Any, LMKind]:
    """``(model, kind)``: the LM of a folder, hub id, ``.gguf`` path or ``local:NAME``
    (:func:`resolve_weights`), in ``dtype`` on ``device``, in eval mode.

    ``kind="auto"`` reads the config first: a seq2seq LM when it says ``is_encoder_decoder``, else a
    causal LM. ``what`` names the model in the error raised when it cannot be loaded.
    """
    if kind != "auto" and kind not in LM_KINDS:
        raise ValueError(f"kind must be one of auto, {', '.join(LM_KINDS)}, got {kind!r}")
    torch, transformers = import_ml(purpose)
    weights_dtype = torch_dtype(dtype, device, torch)
    path, gguf = resolve_weights(str(spec), gguf_file)
    extra = {"gguf_file": gguf} if gguf else {}
    if gguf:
        require_gguf()
    started = time.perf_counter()
    try:
        if kind == "auto":
            config = transformers.AutoConfig.from_pretrained(path, **extra)
            kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
            extra["config"] = config
        auto = transformers.AutoModelForSeq2SeqLM if kind == "seq2seq" else transformers.AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype=weights_dtype, **extra)
        model.to(device)
    except (ImportError, LlmblendError):
        raise
    except Exception as exc:  # a wrong path, an unknown architecture, no network, no GPU: all mean "no model"
        raise LlmblendError(
            f"cannot load {what} {spec!r}{f' (GGUF {gguf})' if gguf else ''}: {type(exc).__name__}: {exc}"
        ) from exc
    model.eval()
    log.info("loaded %s LM %s on %s in %.1fs", kind, spec, device, time.perf_counter() - started)
    return model, kind


def load_tokenizer(spec: str, gguf_file: str | None = None, *, purpose: str = "loading a tokenizer") -> Any:
    """The tokenizer of a folder / hub id / GGUF model (:func:`resolve_weights`)."""
    _, transformers = import_ml(purpose)
    path, gguf = resolve_weights(str(spec), gguf_file)
    extra = {"gguf_file": gguf} if gguf else {}
    try:
        return transformers.AutoTokenizer.from_pretrained(path, **extra)
    except Exception as exc:
        raise LlmblendError(f"cannot load the tokenizer of {spec!r}: {type(exc).__name__}: {exc}") from exc


def load_adapter(
    model: Any, adapter: str | Path, *, trainable: bool = False, device: str = "cpu", base: str = "the model"
) -> Any:
    """``model`` with the peft adapter (LoRA) of folder or hub id ``adapter`` on top, on ``device``.

    ``trainable`` leaves the adapter's weights trainable (resuming a LoRA run); else they are frozen.
    """
    peft = import_peft("LoRA training" if trainable else "loading a LoRA adapter")
    try:
        model = peft.PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except Exception as exc:
        raise LlmblendError(
            f"cannot load the adapter {adapter} on {base}: {type(exc).__name__}: {exc}"
        ) from exc
    model.to(device)
    return model


@dataclass(frozen=True, slots=True)
class LoadedLM:
    """A loaded model (with its adapter, if any), its tokenizer, and its ``kind``."""

    model: Any
    tokenizer: Any
    kind: LMKind


def load_lm(
    spec: str | Path,
    *,
    gguf_file: str | None = None,
    kind: LMKind | Literal["auto"] = "auto",
    dtype: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    adapter: str | Path | None = None,
    trainable_adapter: bool = False,
    what: str = "the model",
    purpose: str = "loading a Hugging Face model",
) -> LoadedLM:
    """Load an LM and its tokenizer, in eval mode (see the module notes for every step).

    ``spec`` is a folder, a hub id, a ``.gguf`` path or ``local:NAME``; ``gguf_file`` a GGUF file
    inside that folder or hub repo. ``adapter`` is a peft adapter folder or hub id put on top; the
    tokenizer comes from the adapter folder when it has one, else from ``spec``. ``purpose`` names
    what needs the ML extra in a :class:`MissingExtraError`; ``what`` names the model in the
    :class:`LlmblendError` raised when it cannot be loaded.
    """
    spec = str(spec)
    check_dtype(dtype)
    import_ml(purpose)
    set_threads(threads)
    model, kind = load_model(
        spec, gguf_file, kind=kind, dtype=dtype, device=device, what=what, purpose=purpose
    )
    if adapter is not None:
        model = load_adapter(model, adapter, trainable=trainable_adapter, device=device, base=spec)
        model.eval()
    if adapter is not None and has_tokenizer(adapter):
        tokenizer = load_tokenizer(str(Path(adapter).expanduser()), purpose=purpose)
    else:
        tokenizer = load_tokenizer(spec, gguf_file, purpose=purpose)
    return LoadedLM(model, tokenizer, kind)
