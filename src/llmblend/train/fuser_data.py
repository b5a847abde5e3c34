"""What ``llmblend train fuser`` feeds the model (LLM-Blender §4): records, inputs, batches, losses.

A training record is an instruction, its candidates in the ranker's order (best first) and the
reference answer (:func:`load_fuser_records`). The fuser input of a record in an epoch is its top-K
(:func:`fuse_item`: optionally one of them swapped for a lower-ranked candidate, optionally
shuffled); which records form each micro-batch (:func:`micro_batch_indices`) and each swap and
shuffle are pure functions of the seed, the epoch and the record's position, so a resumed run sees
exactly the batches an uninterrupted one would.

Token batches: seq2seq rows are right-padded (``labels`` = target ids, padding -100); causal rows
are left-padded, prompt and target in one sequence with the loss on the target tokens only
(:func:`causal_batch`), and the LM head runs only on the last ``max target + 1`` positions
(``logits_to_keep``; with Gemma's 262k-word vocabulary that head is most of the compute).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmblend.errors import LlmblendError
from llmblend.fuse.base import FuseItem
from llmblend.fuse.inputs import ModelKind, token_ids
from llmblend.types import Prompt

log = logging.getLogger(__name__)


class DataSettings(Protocol):
    """The training settings that decide the data of a run
    (:class:`~llmblend.train.fuser.FuserTrainSettings` has them all)."""

    top_k: int
    shuffle_candidates: bool
    swap_probability: float
    seed: int
    batch_size: int
    grad_accum: int
    epochs: float
    max_steps: int | None


# ---------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class FuserRecord:
    """One training record: the instruction, every candidate in ranked order (best first), the target."""

    id: str
    instruction: Prompt
    input: str
    ranked: tuple[str, ...]
    target: str


def load_fuser_records(
    path: str | Path, top_k: int, *, limit: int | None = None
) -> tuple[list[FuserRecord], dict[str, int]]:
    """The usable records of a ranked MixInstruct file and, by reason, how many were skipped.

    Skipped: no reference ``output`` (``no_output``), no usable ``ranking`` (``no_ranking``: missing,
    failed, or an order that does not index the candidates), fewer than ``top_k`` ranked candidates
    (``too_few_candidates``). An error when nothing is usable (e.g. the file was never ranked).
    """
    from llmblend.data.mixinstruct import read_mixinstruct

    records: list[FuserRecord] = []
    skipped = {"no_output": 0, "no_ranking": 0, "too_few_candidates": 0}
    for example in read_mixinstruct(path):
        if limit is not None and len(records) >= limit:
            break
        ranking = example.extra.get("ranking")
        order = ranking.get("order") if isinstance(ranking, dict) and not ranking.get("error") else None
        if not example.output or not example.output.strip():
            skipped["no_output"] += 1
        elif not isinstance(order, list) or not all(
            isinstance(i, int) and 0 <= i < len(example.candidates) for i in order
        ):
            skipped["no_ranking"] += 1
        elif len(order) < top_k:
            skipped["too_few_candidates"] += 1
        else:
            ranked = tuple(example.candidates[i].text for i in order)
            records.append(
                FuserRecord(example.id, example.instruction, example.input, ranked, example.output)
            )
    if not records:
        hint = " (rank it first: `llmblend rank`)" if skipped["no_ranking"] else ""
        raise LlmblendError(f"{path} has no usable fuser training records{hint}; skipped: {skipped}")
    if any(skipped.values()):
        log.info("%s: skipped %s", path, {k: v for k, v in skipped.items() if v})
    return records, skipped


def fuse_item(record: FuserRecord, settings: DataSettings, epoch: int, position: int) -> FuseItem:
    """The fuser input of ``record`` (at ``position`` in its file) in ``epoch``: its top-K, with the
    swap and shuffle drawn from a generator seeded by (seed, epoch, position)."""
    k = settings.top_k
    chosen = list(record.ranked[:k])
    rng = np.random.default_rng([settings.seed, epoch, position])
    if settings.swap_probability and len(record.ranked) > k and rng.random() < settings.swap_probability:
        chosen[int(rng.integers(k))] = record.ranked[int(rng.integers(k, len(record.ranked)))]
    if settings.shuffle_candidates:
        chosen = [chosen[i] for i in rng.permutation(k)]
    return FuseItem(record.instruction, tuple(chosen), record.input)


def dev_item(record: FuserRecord, top_k: int) -> FuseItem:
    """A dev record's fuser input: the ranker's top-K in order (no shuffle, no swap)."""
    return FuseItem(record.instruction, record.ranked[:top_k], record.input)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The record order of an epoch: a pure function of seed and epoch."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def micro_batch_indices(n: int, settings: DataSettings, index: int) -> tuple[int, list[int]]:
    """``(epoch, record positions)`` of the ``index``-th micro-batch of the run (across epochs)."""
    per_epoch = math.ceil(n / settings.batch_size)
    epoch, position = divmod(index, per_epoch)
    order = epoch_order(n, settings.seed, epoch)
    start = position * settings.batch_size
    return epoch, [int(i) for i in order[start : start + settings.batch_size]]


def total_steps(n: int, settings: DataSettings) -> int:
    if settings.max_steps:
        return settings.max_steps
    micro_batches = math.ceil(math.ceil(n / settings.batch_size) * settings.epochs)
    return max(1, math.ceil(micro_batches / settings.grad_accum))


# ---------------------------------------------------------------- batches and losses


def target_ids(tokenizer: Any, kind: ModelKind, target: str, max_tokens: int) -> list[int]:
    """The label ids of a target: at most ``max_tokens``, ending with the end-of-sequence token when
    the whole target fits (a cut target has none: the model should not learn to stop mid-answer).

    Seq2seq: the tokenizer's own target encoding (T5 appends ``</s>``). Causal: the text without
    special tokens, then the tokenizer's EOS (what stops generation).
    """
    if kind == "seq2seq":
        ids = list(tokenizer(text_target=target)["input_ids"])
    else:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise LlmblendError(
                "the causal fuser's tokenizer has no end-of-sequence token to end targets with"
            )
        ids = [*token_ids(tokenizer, target), int(eos)]
    return ids if len(ids) <= max_tokens else ids[:max_tokens]


def causal_batch(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> dict[str, list[list[int]] | int]:
    """Left-padded causal LM batch from ``(prompt ids, target ids)`` rows (as lists; :func:`to_tensors`).

    ``input_ids`` = pads + prompt + target, ``labels`` = -100 over pads and prompt, the target ids
    after; ``attention_mask`` 0 over pads; ``position_ids`` count real tokens from 0 (as ``generate``
    does with left padding). ``keep`` = longest target + 1: the last positions whose logits the loss
    needs. All rows end at the same position, so the targets sit at the right edge.
    """
    width = max(len(p) + len(t) for p, t in rows)
    batch: dict[str, Any] = {"input_ids": [], "attention_mask": [], "position_ids": [], "labels": []}
    for prompt, target in rows:
        pad = width - len(prompt) - len(target)
        batch["input_ids"].append([pad_id] * pad + prompt + target)
        batch["attention_mask"].append([0] * pad + [1] * (len(prompt) + len(target)))
        batch["position_ids"].append([0] * pad + list(range(len(prompt) + len(target))))
        batch["labels"].append([-100] * (pad + len(prompt)) + target)
    batch["keep"] = min(width, max(len(t) for _, t in rows) + 1)
    return batch


def seq2seq_batch(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded seq2seq batch: ``input_ids``/``attention_mask`` of the sources, ``labels`` =
    target ids padded with -100 (the model shifts them right into decoder inputs)."""
    source_width = max(len(s) for s, _ in rows)
    target_width = max(len(t) for _, t in rows)
    return {
        "input_ids": [s + [pad_id] * (source_width - len(s)) for s, _ in rows],
        "attention_mask": [[1] * len(s) + [0] * (source_width - len(s)) for s, _ in rows],
        "labels": [t + [-100] * (target_width - len(t)) for _, t in rows],
    }


def to_tensors(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    import torch

    return {k: torch.tensor(v, device=device) if isinstance(v, list) else v for k, v in batch.items()}


def supports_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(type(base).forward).parameters


def causal_loss(model: Any, batch: dict[str, Any], *, keep_logits: bool = True) -> Any:
    """Mean cross-entropy over the target tokens of a :func:`causal_batch` (as tensors)."""
    import torch.nn.functional as F

    keep = batch["keep"]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    # logits_to_keep: the LM head runs on the last `keep` positions only (the targets' predictions)
    logits = model(**inputs, logits_to_keep=keep).logits if keep_logits else model(**inputs).logits[:, -keep:]
    labels = batch["labels"][:, -keep:]
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def seq2seq_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the (non-padding) label tokens of a :func:`seq2seq_batch`."""
    return model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
