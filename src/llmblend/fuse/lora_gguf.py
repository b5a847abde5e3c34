"""Export a peft LoRA adapter (a trained GenFuser) to a GGUF LoRA adapter that llama.cpp applies.

GenFuser (LLM-Blender §4) trains a LoRA adapter on a causal LM dequantised from a GGUF file
(:mod:`llmblend.train.fuser`). Served through transformers that is slow on CPU; llama.cpp runs the
quantised base several times faster and applies a LoRA adapter given in GGUF form at load time::

    from llama_cpp import Llama
    export_lora_gguf("runs/fuser/best", "fuser-lora.gguf")
    llm = Llama(model_path=base_gguf, lora_path="fuser-lora.gguf")

The file is what llama.cpp's adapter loader expects: metadata ``general.type = "adapter"``,
``general.architecture`` (must equal the base model's), ``adapter.type = "lora"`` and
``adapter.lora.alpha``; for every adapted linear layer ``W`` (GGUF name ``blk.N.attn_q.weight``, ...)
two tensors ``<name>.lora_a`` (peft's ``lora_A``, ``r x in``) and ``<name>.lora_b`` (peft's
``lora_B``, ``out x r``), stored row-major as numpy writes them, so that ggml sees ``lora_a`` as
``[in, r]`` and ``lora_b`` as ``[r, out]`` next to ``W``'s ``[in, out]``. llama.cpp adds
``scale * B (A x)`` with ``scale = alpha / r`` (``r`` read from each ``lora_b``), which is peft's
LoRA; peft's other scalings (``use_rslora``, ``alpha_pattern``) are folded into ``lora_b``.

Only LoRA on the linear layers of the transformer blocks is exported (attention and MLP
projections): an adapter on the token embeddings or the LM head, DoRA, LoRA biases or
``modules_to_save`` are refused with the tensors named. The supported architectures are those whose
HF -> GGUF conversion copies the projection weights unchanged (Gemma 1-3, Qwen 2-3); Llama-family
models permute the rows of ``q_proj``/``k_proj`` on conversion, which this exporter does not do.

Only ``numpy`` and the ``gguf`` package are needed (the safetensors file is read directly, f32, f16
or bf16); torch is not imported.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from llmblend.errors import LlmblendError, MissingExtraError

ADAPTER_CONFIG: Final = "adapter_config.json"
ADAPTER_WEIGHTS: Final = "adapter_model.safetensors"
#: Architectures (GGUF names) whose conversion leaves the block projections as transformers has them.
SUPPORTED_ARCHS: Final = ("gemma", "gemma2", "gemma3", "qwen2", "qwen3")
DTYPES: Final = ("f16", "f32")
#: Largest finite float16.
_F16_MAX: Final = 65504.0
_SAFETENSORS_DTYPES: Final = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
#: Prefixes that multimodal wrappers put before the text model's modules (llama.cpp's converter drops them).
_LM_PREFIXES: Final = (("model.language_model.", "model."), ("language_model.", ""))


class LoraExportError(LlmblendError, ValueError):
    """An adapter that cannot be exported to GGUF (what and why in the message)."""


@dataclass(frozen=True, slots=True)
class _LoraPair:
    module: str  # transformers module name, e.g. model.layers.0.self_attn.q_proj
    gguf_name: str  # GGUF tensor name of the adapted weight, e.g. blk.0.attn_q.weight
    a: np.ndarray  # (r, in)
    b: np.ndarray  # (out, r)


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise MissingExtraError("gguf", "ml", "exporting a LoRA adapter to GGUF") from exc
    return gguf


# ---------------------------------------------------------------- reading the peft adapter


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as float32 numpy arrays (f64/f32/f16/bf16; no torch)."""
    path = Path(path)
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise LoraExportError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        try:
            header = json.loads(file.read(size))
        except (ValueError, UnicodeDecodeError) as exc:
            raise LoraExportError(f"{path} is not a safetensors file: unreadable header ({exc})") from exc
        data = file.read()
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        kind = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        if kind is None:
            raise LoraExportError(f"{path}: tensor {name} has dtype {info.get('dtype')}; expected float")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        array = np.frombuffer(data[start:end], dtype=np.dtype(kind).newbyteorder("<")).reshape(shape)
        if info["dtype"] == "BF16":  # the upper half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array.astype(np.float32)
    return tensors


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    """peft's ``adapter_config.json`` of ``folder``, checked to be a plain LoRA that GGUF can hold."""
    folder = Path(folder)
    file = folder / ADAPTER_CONFIG
    if not folder.is_dir():
        raise LoraExportError(f"adapter folder {folder} does not exist")
    if not file.is_file():
        raise LoraExportError(f"{folder} has no {ADAPTER_CONFIG}: not a peft adapter folder")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LoraExportError(f"{file} is not valid JSON: {exc}") from exc
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise LoraExportError(f"{file}: peft_type is {peft_type}; only LORA adapters can be exported")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int | float):
            raise LoraExportError(f"{file}: {key!r} is missing or not a number")
    if config.get("use_dora"):
        raise LoraExportError(f"{file}: DoRA (use_dora) adapters cannot be exported to a GGUF LoRA")
    if config.get("lora_bias"):
        raise LoraExportError(f"{file}: LoRA with biases (lora_bias) cannot be exported to a GGUF LoRA")
    for key in (
        "target_parameters",
        "trainable_token_indices",
        "layer_replication",
        "alora_invocation_tokens",
    ):
        if config.get(key):
            raise LoraExportError(f"{file}: {key} is set; such adapters cannot be exported to a GGUF LoRA")
    return config


def _pattern_value(patterns: dict[str, Any], module: str, default: float) -> float:
    """peft's ``alpha_pattern`` lookup: a key matches a module name that ends with it (a regex)."""
    for key, value in (patterns or {}).items():
        if re.fullmatch(rf"(?:.*\.)?(?:{key})", module):
            return float(value)
    return default


def _text_module(module: str) -> str:
    for prefix, replacement in _LM_PREFIXES:
        if module.startswith(prefix):
            return replacement + module[len(prefix) :]
    return module


def _gguf_arch(arch: str) -> Any:
    gguf = _import_gguf()
    by_name = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise LoraExportError(f"unknown GGUF architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")
    if arch not in SUPPORTED_ARCHS:
        raise LoraExportError(
            f"exporting LoRA adapters for architecture {arch!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_ARCHS)} (others may permute or fuse weights on conversion)"
        )
    return by_name[arch]


def collect_lora_pairs(
    tensors: dict[str, np.ndarray], *, arch: str = "gemma3", n_blocks: int | None = None
) -> list[_LoraPair]:
    """Pair peft's ``lora_A``/``lora_B`` tensors and name each pair's weight as GGUF does.

    Raises :class:`LoraExportError` naming every tensor that is not a block projection's LoRA factor,
    every half pair and every module the GGUF name map does not know.
    """
    gguf = _import_gguf()
    arch_key = _gguf_arch(arch)
    halves: dict[str, dict[str, np.ndarray]] = {}
    foreign: list[str] = []
    for key, value in tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            foreign.append(key)
            continue
        halves.setdefault(_text_module(match["module"]), {})[match["which"]] = value
    if foreign:
        raise LoraExportError(
            "the adapter holds tensors that are not LoRA factors of linear layers (embedding LoRA, "
            "modules_to_save, DoRA magnitudes or biases cannot go into a GGUF LoRA): "
            + ", ".join(sorted(foreign))
        )
    if not halves:
        raise LoraExportError("the adapter holds no LoRA tensors")
    incomplete = sorted(module for module, pair in halves.items() if len(pair) != 2)
    if incomplete:
        raise LoraExportError(f"lora_A or lora_B missing for: {', '.join(incomplete)}")
    layers = [int(m.group(1)) for module in halves if (m := _LAYER.search(module))]
    if n_blocks is None:
        n_blocks = max(layers, default=-1) + 1
    name_map = gguf.get_tensor_name_map(arch_key, max(n_blocks, 1))
    pairs: list[_LoraPair] = []
    unknown: list[str] = []
    outside: list[str] = []
    for module in sorted(halves, key=_module_order):
        name = name_map.get_name(module)
        if name is None:
            unknown.append(module)
        elif not name.startswith("blk."):
            outside.append(f"{module} ({name})")
        else:
            a, b = halves[module]["A"], halves[module]["B"]
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise LoraExportError(
                    f"{module}: lora_A {a.shape} and lora_B {b.shape} are not the factors of a rank-r update"
                )
            pairs.append(_LoraPair(module, f"{name}.weight", a, b))
    if unknown:
        raise LoraExportError(
            f"no GGUF tensor for these adapted modules (architecture {arch}, {n_blocks} blocks): "
            f"{', '.join(unknown)}"
        )
    if outside:
        raise LoraExportError(
            "only LoRA on the linear layers of the transformer blocks can be exported; the adapter also "
            f"adapts: {', '.join(outside)}"
        )
    return pairs


def _module_order(module: str) -> tuple[int, str]:
    match = _LAYER.search(module)
    return (int(match.group(1)) if match else -1, module)


# ---------------------------------------------------------------- writing the GGUF adapter


def export_lora_gguf(
    adapter_folder: str | Path,
    out_path: str | Path,
    *,
    arch: str = "gemma3",
    n_blocks: int | None = None,
    dtype: str = "f16",
) -> Path:
    """Write the peft LoRA adapter in ``adapter_folder`` as a GGUF LoRA adapter at ``out_path``.

    ``arch`` is the base model's GGUF architecture (``general.architecture`` of its GGUF file);
    ``n_blocks`` the number of transformer blocks (default: as many as the adapter adapts);
    ``dtype`` the tensor type, ``f16`` or ``f32``. The file is written next to ``out_path`` and
    renamed into place, so a reader never sees half of it. Returns ``out_path``.
    """
    gguf = _import_gguf()
    if dtype not in DTYPES:
        raise LoraExportError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = Path(adapter_folder)
    config = read_adapter_config(folder)
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        hint = " (it has adapter_model.bin: save it with safe_serialization=True)"
        raise LoraExportError(
            f"{folder} has no {ADAPTER_WEIGHTS}{hint if (folder / 'adapter_model.bin').is_file() else ''}"
        )
    pairs = collect_lora_pairs(read_safetensors(weights), arch=arch, n_blocks=n_blocks)

    alpha = float(config["lora_alpha"])
    rslora = bool(config.get("use_rslora"))
    np_dtype = np.float16 if dtype == "f16" else np.float32
    tensors: list[tuple[str, np.ndarray]] = []
    for pair in pairs:
        rank = pair.a.shape[0]
        module_alpha = _pattern_value(config.get("alpha_pattern") or {}, pair.module, alpha)
        wanted = module_alpha / (math.sqrt(rank) if rslora else rank)  # peft's scaling
        applied = alpha / rank if alpha else 1.0  # llama.cpp's
        b = pair.b if math.isclose(wanted, applied, rel_tol=1e-9) else pair.b * (wanted / applied)
        for suffix, array in (("lora_a", pair.a), ("lora_b", b)):
            if not np.all(np.isfinite(array)):
                raise LoraExportError(f"{pair.module}: {suffix} holds NaN or infinite values")
            if dtype == "f16" and float(np.abs(array).max(initial=0.0)) > _F16_MAX:
                raise LoraExportError(f"{pair.module}: {suffix} overflows float16; export with dtype='f32'")
            tensors.append((f"{pair.gguf_name}.{suffix}", np.ascontiguousarray(array, dtype=np_dtype)))

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name beside the target (opened by GGUFWriter, so the umask sets its mode), then renamed
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        writer = gguf.GGUFWriter(tmp, arch)  # writes general.architecture
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(folder.resolve().name)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        base = config.get("base_model_name_or_path")
        if base:
            writer.add_string("llmblend.base_model", str(base))
        for name, array in tensors:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
