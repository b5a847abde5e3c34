"""Compact ranker folders: only what differs from a packaged base encoder, stored in fp16.

A ranker fine-tuned with ``freeze_word_embeddings`` differs from its base encoder in the
transformer layers, the rows of the added marker tokens and the head, but not in the base
vocabulary's word embeddings — half of all-MiniLM-L6-v2's 22.7M parameters. A compact folder keeps
config.json and the tokenizer as usual, names the base under ``llmblend.base_model``, and stores in
``model.safetensors`` every tensor that differs from the base (fp16), with the word-embedding matrix
reduced to its added rows (``….weight.added_rows``). :func:`expand_state` rebuilds the full fp32
state from the base, and :func:`load_weights` reads compact and full folders alike (the rankers
load their weights with it). fp16 storage changes scores by about 1e-3 (measured in
``bench/bench_ranker_runtimes.py``); computation stays fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmblend.errors import LlmblendError
from llmblend.rank import hf
from llmblend.rank.base import CONFIG_KEY

if TYPE_CHECKING:
    import torch

ENCODER_PREFIX = "pretrained_model."
ADDED_ROWS = ".added_rows"
STORAGE_DTYPE = "float16"


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The full weights of a model folder (:func:`~llmblend.rank.hf.read_state_dict`); a compact
    folder's delta (``model.safetensors`` with ``llmblend.base_model`` in config.json) is expanded
    over its base model (:func:`expand_state`)."""
    state = hf.read_state_dict(folder)
    if (folder / hf.WEIGHTS_FILE).is_file():
        base_model = hf.read_config(folder).get(CONFIG_KEY, {}).get("base_model")
        if base_model:
            return expand_state(state, base_model)
    return state


def weight_files(folder: Path) -> list[Path]:
    """The files :func:`load_weights` builds a folder's weights from: its config.json and weights,
    and for a compact folder its base model's, in a fixed order."""
    names = ("config.json", hf.WEIGHTS_FILE, "pytorch_model.bin")
    files = [folder / name for name in names if (folder / name).is_file()]
    if (folder / hf.WEIGHTS_FILE).is_file():
        base_model = hf.read_config(folder).get(CONFIG_KEY, {}).get("base_model")
        if base_model:
            files += weight_files(hf.resolve_model_dir(base_model))
    return files


def base_encoder_state(base_model: str) -> dict[str, torch.Tensor]:
    """The base encoder's weights, keyed as inside a ranker module (``pretrained_model.…``)."""
    state = load_weights(hf.resolve_model_dir(base_model))
    return {ENCODER_PREFIX + key: value for key, value in state.items()}


def word_embedding_key(module) -> str:
    weight = module.pretrained_model.get_input_embeddings().weight
    return next(name for name, param in module.named_parameters() if param is weight)


def compact_state(module, base_model: str) -> dict[str, torch.Tensor]:
    """The tensors of ``module`` that differ from ``base_model``, in fp16, embeddings as added rows.

    Raises when the base vocabulary's embeddings were trained (the delta would be the whole
    matrix): retrain with ``freeze_word_embeddings: true``, or save a full folder instead.
    """
    import torch

    base = base_encoder_state(base_model)
    embedding_key = word_embedding_key(module)
    compact = {}
    for key, value in module.state_dict().items():
        value = value.detach().cpu()
        if key == embedding_key:
            base_rows = base[key].shape[0]
            if not torch.equal(value[:base_rows], base[key].to(value.dtype)):
                raise LlmblendError(
                    f"the word embeddings of the base vocabulary differ from {base_model}; a compact folder "
                    "needs them frozen (train with freeze_word_embeddings: true) — save a full folder instead"
                )
            compact[key + ADDED_ROWS] = value[base_rows:].to(torch.float16)
        elif key in base and torch.equal(value, base[key].to(value.dtype)):
            continue
        elif value.is_floating_point():
            compact[key] = value.to(torch.float16)
        else:
            compact[key] = value
    return compact


def expand_state(compact: dict[str, torch.Tensor], base_model: str) -> dict[str, torch.Tensor]:
    """The full fp32 state of a compact folder: the base's weights overlaid with the stored delta."""
    import torch

    state = base_encoder_state(base_model)
    for key, value in compact.items():
        if key.endswith(ADDED_ROWS):
            key = key.removesuffix(ADDED_ROWS)
            if key not in state:
                raise LlmblendError(
                    f"the compact weights add rows to {key}, which {base_model} does not have"
                )
            state[key] = torch.cat([state[key].float(), value.float()])
        else:
            state[key] = value.float() if value.is_floating_point() else value
    return state


def save_compact(ranker, path: str | Path, *, base_model: str) -> Path:
    """Write ``ranker`` as a compact folder over ``base_model`` (a hub id or folder users also have)."""
    path = Path(path)
    settings = {**ranker.settings(), "base_model": base_model, "weights_dtype": STORAGE_DTYPE}
    state = compact_state(ranker.module, base_model)  # first: a lazily loaded module brings its tokenizer
    hf.save_model_folder(
        path,
        backbone_config=_backbone_config(ranker),
        settings=settings,
        tokenizer=ranker.tokenizer,
        state=state,
    )
    return path


def _backbone_config(ranker) -> dict[str, Any]:
    """The config.json body a full save would write (PairRanker adds PairRM's fields)."""
    config_for = getattr(ranker, "folder_config", None)
    return config_for() if config_for else ranker.module.pretrained_model.config.to_dict()
