"""ONNX Runtime inference for PairRanker: export once, fuse, optionally quantize to int8, cache.

:func:`onnx_module` turns a :class:`~llmblend.rank.pairranker.PairRanker`'s module into an
:class:`OnnxPairModule`, a numpy callable with the same inputs and outputs as
``PairRankerModule.forward``. It reads only what :class:`ExportableRanker` names, so this module
does not depend on :mod:`llmblend.rank.pairranker` (which uses it for its ONNX runtimes). Variants:

* ``"onnx"``: fp32, the graph fused by ONNX Runtime's transformer optimizer (Attention,
  SkipLayerNormalization, BiasGelu, EmbedLayerNormalization for BERT-like encoders);
* ``"onnx-int8"``: the same graph with int8 weights (dynamic quantization, per output channel) on
  the encoder's MatMul and Attention nodes; embeddings and the head stay fp32.

The export uses torch's TorchScript exporter (``dynamo=False``): with torch 2.13 and onnxruntime
1.31 the transformer optimizer fuses attention only in its graphs (the dynamo exporter's graphs keep
attention unfused). Attention must be exported as eager ops for that, so the export runs on a deep
copy of the module with eager attention; the caller's module is not touched.

Models are cached under ``$LLMBLEND_CACHE/onnx/<key>/model.onnx`` (default
``~/.cache/llmblend``), keyed by a hash of the weights, the ranker settings, the encoder config,
the variant and the torch/onnxruntime versions. A ranker loaded from a folder also records which
key the folder's files give (``onnx/by-folder/<folder key>``, :func:`remember_folder`), so a later
load finds the graph from the files alone (:func:`cached_graph_key`), without torch; each file's
digest is remembered by its path, size, inode and modification and change times (``onnx/digests``,
:func:`file_digest`), so that lookup does not read the weights again. Files appear
by ``os.replace`` only, so a crash never leaves a partial model that a later call would load.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmblend.atomic import write_file
from llmblend.errors import LlmblendError, MissingExtraError
from llmblend.rank.base import PairQuery

log = logging.getLogger(__name__)

VARIANTS = ("onnx", "onnx-int8")
#: Bump when the export, fusion or quantization recipe changes, so old cache entries are not reused.
EXPORT_VERSION = 1
OPSET = 17
MODEL_FILE = "model.onnx"
#: An ONNX file is one protobuf message, which cannot exceed 2 GiB; the graph is exported in fp32.
MAX_GRAPH_BYTES = 2**31 - 2**26
META_FILE = "meta.json"
#: Where the folder keys point to graph keys (:func:`remember_folder`).
BY_FOLDER = "by-folder"
#: Where files' digests are remembered by their stat (:func:`file_digest`).
DIGESTS = "digests"
#: How recently a file may have changed and still have its digest remembered (:func:`file_digest`).
RACY_SECONDS = 2.0
#: Encoder ``model_type``s whose graphs onnxruntime's "bert" optimizer knows how to fuse.
FUSABLE_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta"})
#: Node types quantized in "onnx-int8": the encoder's weight matrices. Attention (QKV, fused to
#: QAttention) is where most of the int8 speed-up comes from. EmbedLayerNormalization (the
#: embedding tables) stays fp32: quantizing it shrinks the file ~2.5x but is no faster and flips
#: more comparisons (MiniLM PairRanker: 90% sign agreement with fp32 instead of 96%).
INT8_OP_TYPES = ("MatMul", "Attention")
#: Graph scopes (exported node-name prefixes) kept fp32 in "onnx-int8": the small ranking head and
#: length layer, whose outputs are the margins themselves.
FP32_SCOPES = ("/head_layer", "/length_layer")
#: Node types reported after optimization, to show whether fusion happened.
FUSED_OP_TYPES = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "LayerNormalization",
)
_INPUTS = ("input_ids", "attention_mask")
_OUTPUTS = ("left", "right")


class ExportableRanker(Protocol):
    """What the export reads of a ranker (:class:`~llmblend.rank.pairranker.PairRanker` has it all):
    its torch ``module`` (``PairRankerModule``: ``forward(input_ids, attention_mask[, lengths]) ->
    (left, right)``, the encoder as ``module.pretrained_model``), its settings dataclass ``config``
    (with ``length_feature``), and ``encode_pairs`` (padded CPU tensors for ``module``)."""

    module: Any
    config: Any

    def encode_pairs(self, queries: Sequence[PairQuery]) -> dict[str, Any]: ...


def _require(purpose: str, *packages: str) -> None:
    for package in packages:
        try:
            __import__(package)
        except ImportError as exc:
            raise MissingExtraError(package, "ml", purpose) from exc


def default_cache_dir() -> Path:
    """``$LLMBLEND_CACHE``, else ``~/.cache/llmblend``."""
    return Path(os.environ.get("LLMBLEND_CACHE") or Path.home() / ".cache" / "llmblend").expanduser()


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}; valid variants are {', '.join(VARIANTS)}")


# ---- the callable -------------------------------------------------------------------------------


class OnnxPairModule:
    """Callable like ``PairRankerModule.forward`` but on numpy: ``(input_ids int64 [B, T],
    attention_mask int64 [B, T], lengths float32 [B, 2] | None) -> (left, right)``, float32
    ``[B, n_tasks]`` each. ``lengths`` is required iff the ranker uses the length feature."""

    def __init__(
        self,
        session: Any,
        *,
        path: Path,
        variant: str,
        length_feature: bool,
        export_seconds: float = 0.0,
        ops: dict[str, int] | None = None,
    ) -> None:
        self.session = session
        self.path = path
        self.variant = variant
        self.length_feature = length_feature
        #: Seconds spent exporting/optimizing/quantizing in this call; 0.0 when loaded from the cache.
        self.export_seconds = export_seconds
        #: Node counts of the graph by type (fused, quantized, MatMul; see :func:`op_counts`).
        self.ops = ops or {}

    @property
    def cached(self) -> bool:
        """True when the model came from the disk cache rather than a fresh export."""
        return self.export_seconds == 0.0

    def __call__(
        self, input_ids: Any, attention_mask: Any, lengths: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        feeds = {
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        if self.length_feature:
            if lengths is None:
                raise ValueError("this ranker uses the length feature: pass lengths [B, 2]")
            feeds["lengths"] = np.ascontiguousarray(lengths, dtype=np.float32)
        elif lengths is not None:
            raise ValueError("this ranker has no length feature: do not pass lengths")
        left, right = self.session.run(list(_OUTPUTS), feeds)
        return left, right

    def __repr__(self) -> str:
        return f"OnnxPairModule(variant={self.variant!r}, path='{self.path}')"


# ---- cache key ----------------------------------------------------------------------------------


def _encoder_config(encoder: Any) -> dict[str, Any]:
    """The encoder config without private or path-dependent fields (they do not change the graph)."""
    values = encoder.config.to_dict()
    return {k: v for k, v in values.items() if not k.startswith("_") and k not in ("transformers_version",)}


def cache_key(ranker: ExportableRanker, variant: str) -> str:
    """Hex digest of the weights, settings, encoder config, variant and library versions."""
    import onnxruntime
    import torch

    _check_variant(variant)
    digest = hashlib.sha256()
    header = {
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
        "variant": variant,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "settings": asdict(ranker.config),
        "encoder": _encoder_config(ranker.module.pretrained_model),
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in sorted(ranker.module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()[:32]


def folder_key(files: Sequence[Path], variant: str, cache_dir: str | Path | None = None) -> str:
    """Hex digest of the files a ranker's weights come from (its folder's config.json and weights,
    e.g. :func:`llmblend.rank.compact.weight_files`), the variant and library versions; computed
    without torch."""
    _check_variant(variant)
    digest = hashlib.sha256()
    header = {
        "export_version": EXPORT_VERSION,
        "variant": variant,
        "versions": {package: _version(package) for package in ("onnxruntime", "torch")},
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in files:
        digest.update(f"{path.name}:".encode() + file_digest(path, cache_dir))
    return digest.hexdigest()[:32]


def file_digest(path: Path, cache_dir: str | Path | None = None) -> bytes:
    """SHA-256 of the file's bytes, read once per version of the file: remembered under a stamp of
    its resolved path, size, inode and modification and change times (ns), as git tells a changed
    file. A file modified in the last :data:`RACY_SECONDS` is not remembered (a rewrite within the
    clock's resolution could keep its stamp)."""
    info = path.stat()
    stamp = f"{path.resolve()}\0{info.st_size}\0{info.st_ino}\0{info.st_mtime_ns}\0{info.st_ctime_ns}"
    memo = _onnx_dir(cache_dir) / DIGESTS / hashlib.sha256(stamp.encode()).hexdigest()[:32]
    try:
        return bytes.fromhex(memo.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        pass
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").digest()
    if time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) > RACY_SECONDS * 1e9:
        write_file(memo, digest.hex() + "\n")
    return digest


def _version(package: str) -> str | None:
    """The installed version of ``package``, None when it is not installed (no graph then)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _alias_path(key: str, cache_dir: str | Path | None) -> Path:
    return _onnx_dir(cache_dir) / BY_FOLDER / key


def _onnx_dir(cache_dir: str | Path | None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "onnx"


def remember_folder(key: str, graph_key: str, cache_dir: str | Path | None = None) -> None:
    """Record that the files with :func:`folder_key` ``key`` give the graph :func:`cache_key`
    ``graph_key`` (written once the weights are loaded and before anything can change them)."""
    write_file(_alias_path(key, cache_dir), graph_key + "\n")


def cached_graph_key(key: str, cache_dir: str | Path | None = None) -> str | None:
    """The graph key recorded for the folder key ``key`` when that graph is in the cache, else None."""
    try:
        graph_key = _alias_path(key, cache_dir).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return graph_key if graph_key and (_onnx_dir(cache_dir) / graph_key / MODEL_FILE).is_file() else None


# ---- export, fuse, quantize ---------------------------------------------------------------------


def _use_eager_attention(encoder: Any) -> None:
    """Switch ``encoder`` (a copy) to eager attention, whose ops the ORT optimizer can fuse."""
    setter = getattr(encoder, "set_attn_implementation", None)
    if setter is not None:
        try:
            setter("eager")
            return
        except (ValueError, NotImplementedError, AttributeError) as exc:
            log.debug("set_attn_implementation('eager') failed (%s); setting the config field", exc)
    encoder.config._attn_implementation = "eager"


def _dummy_batch(ranker: ExportableRanker) -> dict[str, Any]:
    """Two tokenised pairs of different lengths: inputs for tracing (all axes are dynamic)."""
    return ranker.encode_pairs(
        [PairQuery("which city is it", "paris", "it is rome, i think"), PairQuery("name one", "two", "three")]
    )


def _export(ranker: ExportableRanker, path: Path) -> None:
    """Trace an eager-attention copy of ``ranker.module`` to an fp32 ONNX graph at ``path``."""
    import torch

    module = copy.deepcopy(ranker.module).to("cpu").float().eval()
    _use_eager_attention(module.pretrained_model)
    names = [*_INPUTS, "lengths"] if ranker.config.length_feature else list(_INPUTS)
    batch = _dummy_batch(ranker)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    axes.update({name: {0: "batch"} for name in (*names[2:], *_OUTPUTS)})
    with warnings.catch_warnings(), torch.inference_mode():
        # tracing notes (shape checks that are constant for encoders, the legacy exporter's
        # deprecation, advanced indexing with non-negative indices, DeBERTa's scale tensor):
        # all expected, all harmless
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
        warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
        torch.onnx.export(
            module,
            tuple(batch[name] for name in names),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=list(_OUTPUTS),
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each :data:`FUSED_OP_TYPES` type (and their quantized forms) a graph has."""
    import onnx

    counts = Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
    wanted = (*FUSED_OP_TYPES, "QAttention", "MatMulInteger", "DynamicQuantizeMatMul", "MatMul")
    return {op: counts[op] for op in wanted if counts[op]}


def _optimize(source: Path, target: Path, encoder_config: Any) -> bool:
    """Fuse ``source`` into ``target`` with the ORT transformer optimizer; False if it was not fused."""
    model_type = getattr(encoder_config, "model_type", "")
    if model_type not in FUSABLE_MODEL_TYPES:
        log.warning("ONNX Runtime's optimizer cannot fuse %r encoders; keeping the unfused graph", model_type)
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=encoder_config.num_attention_heads,
            hidden_size=encoder_config.hidden_size,
        )
        optimized.save_model_to_file(str(target))
    except Exception as exc:  # the optimizer is best effort: any failure leaves a working fp32 graph
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("ONNX Runtime's optimizer failed (%s); keeping the unfused graph", reason)
        return False
    return True


def _gemms_to_matmuls(source: Path, target: Path) -> list[str]:
    """Rewrite ``Gemm(A, W, b)`` nodes with a constant ``W`` as ``MatMul(A, Wᵀ) + b``; return the
    names of the nodes in the new graph.

    The quantizer does this rewrite itself, but transposes ``W`` in place once per node: the head
    (used twice, for ``left`` and ``right``) shares its weights between two Gemm nodes, so they
    were transposed twice and the int8 graph failed to load ("Incompatible dimensions").
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    transposed: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA")
        if node.op_type != "Gemm" or not plain or node.input[1] not in weights:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB"):
            if weight not in transposed:
                transposed[weight] = f"{weight}_transposed"
                array = numpy_helper.to_array(weights[weight]).T.copy()
                graph.initializer.append(numpy_helper.from_array(array, transposed[weight]))
            weight = transposed[weight]
        product = node.output[0] + "_matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(
            helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_MatMul")
        )
        if len(node.input) > 2:
            nodes.append(
                helper.make_node("Add", [product, node.input[2]], list(node.output), name=f"{node.name}_Add")
            )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    onnx.save(model, str(target))
    return [node.name for node in graph.node]


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8 quantization, per output channel, of the :data:`INT8_OP_TYPES` nodes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    untied = target.with_name(f"{target.stem}.untied.onnx")
    names = _gemms_to_matmuls(source, untied)
    keep_fp32 = [name for name in names if name.startswith(FP32_SCOPES)]
    # the quantizer logs on the root logger; its advice to run shape-inference pre-processing
    # does not apply (the fused graph's contrib ops defeat symbolic shape inference)
    quiet = _DropMessage("Please consider to run pre-processing")
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(
            str(untied),
            str(target),
            op_types_to_quantize=list(INT8_OP_TYPES),
            nodes_to_exclude=keep_fp32,
            per_channel=True,
            weight_type=QuantType.QInt8,
            # contrib ops (SkipLayerNormalization, ...) have no ONNX type inference: their outputs are fp32
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(quiet)
        untied.unlink(missing_ok=True)


def _build(ranker: ExportableRanker, variant: str, folder: Path) -> dict[str, int]:
    """Export, fuse and (for int8) quantize into ``folder``/model.onnx, atomically."""
    _require("the ONNX export of PairRanker", "torch", "onnx", "onnxruntime")
    fp32_bytes = 4 * sum(p.numel() for p in ranker.module.parameters())
    if fp32_bytes >= MAX_GRAPH_BYTES:
        raise LlmblendError(
            f"this ranker has {fp32_bytes / 2**30:.1f} GiB of fp32 weights: too large for a "
            "single-file ONNX graph (protobuf's 2 GiB limit); use the torch runtime"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        exported, fused, final = staging / "exported.onnx", staging / "fused.onnx", staging / "final.onnx"
        _export(ranker, exported)
        encoder_config = ranker.module.pretrained_model.config
        graph = fused if _optimize(exported, fused, encoder_config) else exported
        counts = op_counts(graph)
        if graph is fused and not (counts.get("Attention") or counts.get("MultiHeadAttention")):
            log.warning("ONNX Runtime's optimizer did not fuse attention (nodes: %s)", counts)
        if variant == "onnx-int8":
            _quantize(graph, final)
            graph = final
            counts = op_counts(graph)
        log.info("ONNX PairRanker %s graph nodes: %s", variant, counts)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"variant": variant, "ops": counts, "settings": asdict(ranker.config)}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(staging / META_FILE, folder / META_FILE)
        os.replace(graph, folder / MODEL_FILE)  # last: the model exists only once it is complete
        return counts
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---- loading ------------------------------------------------------------------------------------


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _read_ops(folder: Path) -> dict[str, int]:
    try:
        return dict(json.loads((folder / META_FILE).read_text()).get("ops", {}))
    except (OSError, ValueError):
        return {}


def default_threads() -> int:
    """torch's thread count when torch is in use (so ``torch.set_num_threads`` holds here too),
    else 0: ONNX Runtime's own default, one thread per physical core, which is torch's default."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else 0


def onnx_module(
    ranker: ExportableRanker,
    variant: str = "onnx-int8",
    *,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    key: str | None = None,
) -> OnnxPairModule:
    """Export ``ranker.module`` (once; cached on disk) and load it in ONNX Runtime on the CPU.

    ``cache_dir`` defaults to :func:`default_cache_dir`; ``threads`` (intra-op) to
    :func:`default_threads`; ``key`` to :func:`cache_key` (pass one from :func:`cached_graph_key`
    to load without touching ``ranker.module``). Raises ValueError for an unknown ``variant`` and
    :class:`~llmblend.errors.MissingExtraError` when onnxruntime is not installed.
    """
    _check_variant(variant)
    _require("the ONNX Runtime path of PairRanker", "onnxruntime")
    folder = _onnx_dir(cache_dir) / (key or cache_key(ranker, variant))
    path = folder / MODEL_FILE
    threads = threads or default_threads()
    length_feature = ranker.config.length_feature
    if path.is_file():
        try:
            session = _session(path, threads)
        except Exception as exc:  # e.g. a file damaged on disk: rebuild it
            log.warning("cached ONNX model %s does not load (%s); exporting it again", path, exc)
        else:
            log.debug("loaded cached ONNX model %s", path)
            return OnnxPairModule(
                session, path=path, variant=variant, length_feature=length_feature, ops=_read_ops(folder)
            )
    started = time.perf_counter()
    counts = _build(ranker, variant, folder)
    seconds = time.perf_counter() - started
    log.info("exported %s PairRanker to %s in %.1f s", variant, path, seconds)
    try:
        session = _session(path, threads)
    except Exception as exc:
        raise LlmblendError(f"ONNX Runtime cannot load the exported model {path}: {exc}") from exc
    return OnnxPairModule(
        session,
        path=path,
        variant=variant,
        length_feature=length_feature,
        export_seconds=max(seconds, 1e-9),
        ops=counts,
    )
