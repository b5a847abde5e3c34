"""Rankers chosen by name: ``load_ranker("longest")``, ``load_ranker("mbr:chrf")``, or a model folder.

A spec is ``NAME`` or ``NAME:ARGUMENT`` (the argument is a model path or hub id, or an option such
as MBR's similarity), or simply the path of a saved model folder, whose ``config.json`` says which
architecture it holds. Implementations are imported only when asked for, so the core stays light.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmblend.errors import LlmblendError
from llmblend.rank.base import CONFIG_KEY, Ranker

if TYPE_CHECKING:
    from llmblend.rank.pairranker import PairRanker


@dataclass(frozen=True, slots=True)
class RankerEntry:
    """Where a ranker lives (``module:factory``) and what its argument means."""

    target: str
    help: str
    argument: str | None = None  # what NAME:ARGUMENT takes; None when the ranker takes none
    argument_required: bool = False


RANKERS: dict[str, RankerEntry] = {
    "random": RankerEntry("llmblend.rank.baselines:RandomRanker", "a uniformly random order", "seed"),
    "longest": RankerEntry("llmblend.rank.baselines:LongestRanker", "the longest answer first (in words)"),
    "mbr": RankerEntry(
        "llmblend.rank.baselines:MBRRanker",
        "MBR/consensus: the candidate most similar to the others",
        "similarity: embedding (MiniLM, default), chrf, bleu or token-f1",
    ),
    "mlm": RankerEntry(
        "llmblend.rank.mlm_scoring:MLMScoringRanker.from_pretrained",
        "pseudo-log-likelihood of the answer under a masked LM",
        "masked-LM folder or hub id",
        argument_required=True,
    ),
    "default": RankerEntry(
        "llmblend.rank.pairranker:PairRanker.default",
        "the PairRanker that ships with llmblend (MiniLM-L6 trained on alpaca-blend; offline)",
    ),
    "pairranker": RankerEntry(
        "llmblend.rank.pairranker:PairRanker.from_pretrained",
        "PairRanker, the pairwise cross-encoder (LLM-Blender §3)",
        "model folder or hub id (e.g. llm-blender/PairRM-hf)",
        argument_required=True,
    ),
    "pool": RankerEntry(
        "llmblend.rank.pool_ranker:PoolRanker.from_file",
        "pool-aware: model strengths, the shipped PairRanker and length in one calibrated model",
        "pool file (llmblend train pool)",
        argument_required=True,
    ),
    "judge": RankerEntry(
        "llmblend.rank.judge_ranker:JudgeRanker.from_spec",
        "an LLM judge: pairwise (PRP, both orders) or listwise, as the file's judge: section says",
        "models.yaml[#backend]",
        argument_required=True,
    ),
    "cascade": RankerEntry(
        "llmblend.rank.cascade:CascadeRanker.from_spec",
        "a ranker shortlists the top-m, the LLM judge of the file orders them (judge.cascade)",
        "models.yaml[#backend]",
        argument_required=True,
    ),
    "pointwise": RankerEntry(
        "llmblend.rank.pointwise:PointwiseRanker.from_pretrained",
        "pointwise cross-encoder (SummaReranker-style), one score per candidate",
        "model folder",
        argument_required=True,
    ),
    "dual-encoder": RankerEntry(
        "llmblend.rank.dual_encoder:DualEncoderRanker.from_pretrained",
        "SimCLS-style dual encoder: cosine of source and candidate embeddings",
        "model folder",
        argument_required=True,
    ),
}

#: ``config.json`` → ``llmblend.architecture`` of a saved folder → the registry name that loads it.
ARCHITECTURES = {"pair-ranker": "pairranker", "pointwise": "pointwise", "dual-encoder": "dual-encoder"}


def resolve_target(target: str):
    """The object a ``"module:attribute.path"`` target names, imported on demand."""
    module_name, _, attribute = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _architecture_of(folder: Path) -> str:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise LlmblendError(f"{folder} is a folder but has no config.json, so it is not a saved ranker")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if CONFIG_KEY not in config:
        # the official PairRM-hf layout carries its settings at the top level
        if "source_prefix_id" in config:
            return "pairranker"
        raise LlmblendError(
            f"{config_path} has no '{CONFIG_KEY}' section, so llmblend did not save it; "
            "load a hub encoder with 'pairranker:PATH' only after training it (llmblend train ranker)"
        )
    architecture = config[CONFIG_KEY].get("architecture", "pair-ranker")
    if architecture not in ARCHITECTURES:
        raise LlmblendError(
            f"{config_path}: unknown ranker architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[architecture]


def load_ranker(spec: str) -> Ranker:
    """Build the ranker a spec names (see the module docstring); errors list the known names."""
    entry, argument = check_spec(spec)
    factory = resolve_target(entry.target)
    return factory(argument) if argument else factory()


def check_spec(spec: str) -> tuple[RankerEntry, str]:
    """The registry entry a spec names and its argument, without building anything.

    Raises :class:`LlmblendError` for an unknown name or a missing or unexpected argument.
    """
    if Path(spec).is_dir():
        name, argument = _architecture_of(Path(spec)), spec
    else:
        name, _, argument = spec.partition(":")
    entry = RANKERS.get(name)
    if entry is None:
        known = ", ".join(RANKERS)
        raise LlmblendError(f"unknown ranker {spec!r}: not a folder, and {name!r} is not one of {known}")
    if argument and entry.argument is None:
        raise LlmblendError(f"ranker {name!r} takes no argument, got {spec!r}; use just {name!r}")
    if not argument and entry.argument_required:
        raise LlmblendError(f"ranker {name!r} needs an argument: {name}:<{entry.argument}>")
    return entry, argument


def describe_rankers() -> str:
    """One line per registered ranker, for ``--help`` texts."""
    lines = []
    for name, entry in RANKERS.items():
        usage = f"{name}:<{entry.argument}>" if entry.argument else name
        lines.append(f"{usage} — {entry.help}")
    return "\n".join(lines)


def load_pair_ranker(model: str | None, runtime: str | None, batch_size: int = 16) -> PairRanker:
    """The PairRanker ``model`` names (a folder or hub id), or the packaged default one."""
    from llmblend.rank.pairranker import PairRanker

    options = {"batch_size": batch_size, **({"runtime": runtime} if runtime else {})}
    if model is None:
        return PairRanker.default(**options)
    return PairRanker.from_pretrained(model, **options)


def load_ranker_with_pool(
    model: str | None, runtime: str | None, batch_size: int, pool: Path | None
) -> Ranker:
    """The PairRanker (see :func:`load_pair_ranker`), or with ``pool`` a PoolRanker over it that
    builds the PairRanker only when first needed. The pool file is read first, so a bad one fails
    before any model loads."""
    if pool is None:
        return load_pair_ranker(model, runtime, batch_size)
    from llmblend.rank.pool import PoolModel
    from llmblend.rank.pool_ranker import PoolRanker

    return PoolRanker(PoolModel.load(pool), lambda: load_pair_ranker(model, runtime, batch_size))
