"""``llmblend train ranker``: train PairRanker (or a pointwise / dual-encoder baseline) on pairs (§3.1).

The loop, top to bottom: build or resume the model, draw the epoch's pair order from the seed, then
per step: ``grad_accum`` micro-batches (each pair in a random order), loss on ``left − right``,
clip, AdamW step, warmup + linear decay. Every ``eval_every`` steps: pairwise accuracy on the dev
pairs, and the best model is kept in ``OUTPUT/best``. Every ``save_every`` steps: a checkpoint
(model, optimiser, scheduler, RNG) in ``OUTPUT/checkpoint.pt``, so rerunning the same command after
a crash or kill continues from there. The data order depends only on the seed and the epoch, so a
resumed run sees exactly the pairs an uninterrupted one would.

Data-parallel (``torchrun --nproc-per-node K`` or ``accelerate launch``; see
:mod:`llmblend.train.distributed`): the K processes train one model under DDP. The run's
micro-batches are those of one process with ``batch_size`` K·B (B = the configured ``batch_size``,
the pairs each process takes); process r takes rows r, r+K, r+2K, … of each (:func:`rank_share`),
and its loss is weighted so that DDP's average of the K gradients is the gradient of the loss over
the whole micro-batch. K processes × B therefore take the steps one process with batch K·B takes
(up to float rounding, and dropout, which each process draws for its own rows). Step metrics (loss,
train accuracy) and dev accuracy (the dev pairs shared out) are summed over the processes. Rank 0
alone writes ``config.yaml``, ``log.jsonl``, ``best/``, ``last/`` and the checkpoint, which holds
every process's RNG state; the others wait for it at a barrier. Every process resumes from that
checkpoint (so ``output_dir`` must be on a file system they all see), and only with the same K.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.atomic import write_file
from llmblend.errors import LlmblendError
from llmblend.rank import hf
from llmblend.rank.encoding import to_device
from llmblend.rank.registry import resolve_target
from llmblend.train.checkpoints import (
    normalise,
    restore_rng,
    rng_state,
    truncate_log,
    warmup_then_linear_decay,
)
from llmblend.train.config import config_to_yaml, setting
from llmblend.train.distributed import DataParallel, data_parallel, require_same_world_size
from llmblend.train.losses import LOSSES, get_loss
from llmblend.train.pairs import LabelledPair, PairSet, load_pairs

log = logging.getLogger(__name__)

#: Architectures ``train ranker`` builds: name → "module:Class" (loaded on use).
ARCHITECTURES = {
    "pair-ranker": "llmblend.rank.pairranker:PairRanker",
    "pointwise": "llmblend.rank.pointwise:PointwiseRanker",
    "dual-encoder": "llmblend.rank.dual_encoder:DualEncoderRanker",
}
DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
CHECKPOINT = "checkpoint.pt"
#: Settings that must match for a rerun to resume a checkpoint rather than be refused.
RESUME_KEYS = (
    "train_file",
    "backbone",
    "architecture",
    "init_from",
    "metrics",
    "loss",
    "seed",
    "batch_size",
    "val_fraction",
    "length_feature",
    "head_lr_scale",
    "freeze_word_embeddings",
)


@dataclass
class RankerTrainConfig:
    """Everything ``llmblend train ranker`` needs; YAML keys and ``--set`` names are the field names."""

    train_file: str = setting("MixInstruct file with candidate scores, or preference pairs")
    output_dir: str = setting("where best/, last/, checkpoint.pt and log.jsonl go")
    dev_file: str | None = setting("file for pairwise accuracy during training", None)
    val_fraction: float = setting(
        "without dev_file: hold out this share of the training instructions (all their pairs) "
        "for pairwise accuracy and best/",
        0.0,
    )
    backbone: str = setting("HF encoder folder or hub id", DEFAULT_BACKBONE)
    architecture: str = setting("pair-ranker, pointwise, dual-encoder", "pair-ranker")
    init_from: str | None = setting("a saved ranker folder to fine-tune further", None)
    metrics: tuple[str, ...] = setting("scores to learn (one head output each)", ())
    pairs_per_example: int = setting("random pairs per example and metric", 5)
    max_train_pairs: int | None = setting("use a seeded sample of the pairs", None)
    max_dev_pairs: int = setting("dev pairs used for accuracy", 400)
    loss: str = setting("logistic (PairRM), bce or margin", "logistic")
    margin: float = setting("margin of the margin loss", 1.0)
    source_max_length: int = setting("tokens kept of the instruction", 128)
    candidate_max_length: int = setting("tokens kept of each candidate", 128)
    dropout: float = setting("dropout in the head", 0.05)
    length_feature: bool = setting("pair-ranker: also read each answer's untruncated length", False)
    freeze_word_embeddings: bool = setting(
        "keep the backbone's word embeddings fixed (added marker tokens still learn), so the "
        "trained model can ship as a small delta over the base",
        False,
    )
    batch_size: int = setting("pairs per micro-batch", 8)
    grad_accum: int = setting("micro-batches per optimiser step", 1)
    learning_rate: float = setting("peak AdamW learning rate", 3e-5)
    head_lr_scale: float = setting(
        "learning-rate multiplier for the layers that start random (head, length layer): with the "
        "backbone's small rate they barely move in a short run",
        1.0,
    )
    weight_decay: float = setting("AdamW weight decay (not on biases/norms)", 0.01)
    warmup_ratio: float = setting("share of steps spent warming up", 0.05)
    epochs: float = setting("passes over the training pairs", 1.0)
    max_steps: int | None = setting("stop after this many steps (overrides)", None)
    bf16: bool = setting("bf16 autocast (CPU or GPU)", False)
    eval_every: int = setting("steps between dev evaluations", 100)
    save_every: int = setting("steps between resumable checkpoints", 100)
    seed: int = setting("seed for pair sampling, order and init", 0)
    device: str | None = setting("cpu, cuda, ... (default: cuda if present)", None)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        for name in ("batch_size", "grad_accum", "eval_every", "save_every", "pairs_per_example"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError(f"epochs must be > 0 (got {self.epochs}) unless max_steps is set")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction and self.dev_file:
            raise ValueError("set either dev_file or val_fraction, not both (both would pick best/)")
        if self.length_feature and self.architecture != "pair-ranker":
            raise ValueError(
                f"length_feature is a pair-ranker setting; architecture is {self.architecture!r}"
            )
        self.metrics = tuple(self.metrics)


@dataclass
class TrainResult:
    """Where the models went and how training ended."""

    output_dir: Path
    model_dir: Path
    steps: int
    best_dev_accuracy: float | None
    history: list[dict[str, Any]]
    resumed_from: int = 0


#: Called after every optimiser step: (step, total_steps, metrics of the step).
StepCallback = Callable[[int, int, dict[str, float]], None]


def build_ranker(config: RankerTrainConfig, task_names: Sequence[str]):
    """A fresh ranker on the backbone (or ``init_from``), with one head output per task."""
    cls = resolve_target(ARCHITECTURES[config.architecture])
    if config.init_from:
        ranker = cls.from_pretrained(config.init_from, device=config.device)
        if ranker.n_tasks != len(task_names):
            raise LlmblendError(
                f"init_from {config.init_from} has {ranker.n_tasks} head outputs, the data has "
                f"{len(task_names)} task(s) {list(task_names)}; choose metrics to match"
            )
        return ranker
    settings: dict[str, Any] = dict(
        n_tasks=len(task_names),
        dropout=config.dropout,
        source_max_length=config.source_max_length,
        candidate_max_length=config.candidate_max_length,
    )
    if config.architecture == "pair-ranker":
        settings["task_names"] = tuple(task_names)
        settings["length_feature"] = config.length_feature
    return cls.from_backbone(config.backbone, device=config.device, **settings)


def split_by_instruction(pairs: PairSet, fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    """(train, validation): a seeded ``fraction`` of the distinct instructions, with all their pairs,
    goes to validation, so no validation instruction is ever trained on."""
    sources = sorted({p.query.source for p in pairs.pairs})
    n_val = max(1, round(fraction * len(sources)))
    if n_val >= len(sources):
        raise LlmblendError(
            f"val_fraction {fraction} leaves no training instructions ({len(sources)} in all)"
        )
    held_out = set(random.Random(seed).sample(sources, n_val))
    train = [p for p in pairs.pairs if p.query.source not in held_out]
    val = [p for p in pairs.pairs if p.query.source in held_out]
    return PairSet(train, pairs.task_names), PairSet(val, pairs.task_names)


def training_pairs(config: RankerTrainConfig) -> tuple[PairSet, PairSet | None]:
    """``(train, dev)`` pairs of a run, drawn exactly as ``llmblend train ranker`` draws them.

    With ``val_fraction``, dev is :func:`held_out_pairs`; with ``dev_file``, that file's pairs (at
    most ``max_dev_pairs``); else None. Reads the data files only (no model, no torch).
    """
    c = config
    train = _train_file_pairs(c)
    if c.val_fraction:
        return _hold_out(train, c)
    if not c.dev_file:
        return train, None
    dev = load_pairs(
        c.dev_file,
        metrics=train.task_names if train.task_names != ("preference",) else None,
        pairs_per_example=c.pairs_per_example,
        seed=c.seed + 1,
        limit=c.max_dev_pairs,
    )
    return train, dev


def held_out_pairs(config: RankerTrainConfig) -> PairSet:
    """The pairs of the training instructions that ``config.val_fraction`` holds out, as the run
    scores them to pick ``best/``: a seeded sample of at most ``max_dev_pairs`` of their pairs.
    ValueError when the config holds nothing out (``val_fraction`` 0)."""
    if not config.val_fraction:
        raise ValueError(
            f"the config holds no training instructions out (val_fraction is {config.val_fraction}); "
            "set val_fraction to hold some out"
        )
    return _hold_out(_train_file_pairs(config), config)[1]


def held_out_sources(config: RankerTrainConfig) -> set[str]:
    """Every training instruction (source text) that ``config.val_fraction`` holds out: the run
    never trains on any of them (all of them, not only the sampled pairs it scores). ValueError when
    the config holds nothing out."""
    if not config.val_fraction:
        raise ValueError(
            f"the config holds no training instructions out (val_fraction is {config.val_fraction}); "
            "set val_fraction to hold some out"
        )
    _, held_out = split_by_instruction(_train_file_pairs(config), config.val_fraction, config.seed)
    return {p.query.source for p in held_out.pairs}


def _train_file_pairs(c: RankerTrainConfig) -> PairSet:
    return load_pairs(
        c.train_file,
        metrics=c.metrics or None,
        pairs_per_example=c.pairs_per_example,
        seed=c.seed,
        limit=c.max_train_pairs,
    )


def _hold_out(pairs: PairSet, c: RankerTrainConfig) -> tuple[PairSet, PairSet]:
    """(train, held-out) by :func:`split_by_instruction`, the held-out pairs sampled down to
    ``max_dev_pairs``."""
    train, held_out = split_by_instruction(pairs, c.val_fraction, c.seed)
    if len(held_out.pairs) > c.max_dev_pairs:
        sample = random.Random(c.seed + 1).sample(held_out.pairs, c.max_dev_pairs)
        held_out = PairSet(sample, held_out.task_names)
    return train, held_out


def epoch_order(n_pairs: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The pair order of an epoch and which pairs are swapped: a pure function of seed and epoch."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n_pairs), rng.random(n_pairs) < 0.5


def micro_batch(pairs: Sequence[LabelledPair], config: RankerTrainConfig, index: int) -> list[LabelledPair]:
    """The ``index``-th micro-batch of the run (across epochs), each pair in its random order."""
    per_epoch = math.ceil(len(pairs) / config.batch_size)
    epoch, position = divmod(index, per_epoch)
    order, swap = epoch_order(len(pairs), config.seed, epoch)
    chosen = order[position * config.batch_size : (position + 1) * config.batch_size]
    return [pairs[i].swapped() if swap[i] else pairs[i] for i in chosen]


def labelled_entries(pairs: Sequence[LabelledPair]) -> int:
    """How many (pair, task) labels are not 0: what the losses' masked mean divides by."""
    return sum(label != 0 for pair in pairs for label in pair.labels)


def rank_share(
    batch: Sequence[LabelledPair], rank: int, world_size: int
) -> tuple[list[LabelledPair], list[LabelledPair], float]:
    """Process ``rank``'s part of a global micro-batch: ``(share, rows, factor)``.

    ``share`` is rows ``rank``, ``rank + world_size``, … of ``batch``. ``rows`` is what the process
    runs forward: ``share``, or the batch's first pair when ``share`` is empty (a last micro-batch
    with fewer pairs than processes), so that it still joins DDP's gradient all-reduce. ``factor``
    scales its masked-mean loss: ``world_size`` × its labelled entries / the batch's (0 for the
    stand-in pair), so that DDP's average of the gradients is the gradient of the masked mean over
    the whole batch. One process: ``(batch, batch, 1.0)``.
    """
    if world_size == 1:
        return list(batch), list(batch), 1.0
    share = list(batch[rank::world_size])
    if not share:
        return share, list(batch[:1]), 0.0
    return share, share, world_size * labelled_entries(share) / max(1, labelled_entries(batch))


def total_steps(n_pairs: int, config: RankerTrainConfig) -> int:
    if config.max_steps:
        return config.max_steps
    micro_batches = math.ceil(n_pairs / config.batch_size) * config.epochs
    return max(1, math.ceil(micro_batches / config.grad_accum))


def freeze_word_embeddings(ranker) -> Any:
    """Zero the gradient of every word-embedding row the base tokenizer had; rows of tokens added
    for the ranker (markers) still learn. Returns the embedding weight (kept out of weight decay)."""
    weight = ranker.module.pretrained_model.get_input_embeddings().weight
    base_vocab = ranker.tokenizer.vocab_size

    def keep_added_rows(grad):
        grad = grad.clone()
        grad[:base_vocab] = 0
        return grad

    weight.register_hook(keep_added_rows)
    return weight


def backbone_of(module):
    """The pretrained encoder inside a ranker module (PairRanker: ``pretrained_model``)."""
    return getattr(module, "pretrained_model", None) or module.encoder


def make_optimizer(module, config: RankerTrainConfig, steps: int, *, frozen=()):
    """AdamW with linear warmup then linear decay to 0. No weight decay on biases, norms and
    ``frozen``; the layers outside the backbone learn at ``head_lr_scale`` × the rate."""
    import torch

    frozen_ids = {id(param) for param in frozen}
    pretrained = {id(param) for param in backbone_of(module).parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in module.named_parameters():
        if param.requires_grad:
            plain = param.ndim < 2 or "norm" in name.lower() or id(param) in frozen_ids
            groups.setdefault((plain, id(param) in pretrained), []).append(param)
    optimizer = torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": 0.0 if plain else config.weight_decay,
                "lr": config.learning_rate * (1.0 if in_backbone else config.head_lr_scale),
            }
            for (plain, in_backbone), params in sorted(groups.items())
        ],
        lr=config.learning_rate,
    )
    return optimizer, warmup_then_linear_decay(optimizer, steps, config.warmup_ratio)


def pairwise_counts(ranker, pairs: Sequence[LabelledPair]) -> tuple[int, int]:
    """``(right, judged)``: pairs whose debiased comparison has the label's sign, and pairs with a
    verdict (the others are skipped)."""
    judged = [p for p in pairs if p.overall != 0]
    if not judged:
        return 0, 0
    margins = ranker.compare_pairs([p.query for p in judged])
    labels = np.array([p.overall for p in judged])
    return int(np.sum(np.sign(margins) == labels)), len(judged)


def pairwise_accuracy(ranker, pairs: Sequence[LabelledPair]) -> float:
    """Share of pairs whose debiased comparison has the label's sign (pairs without a verdict skipped)."""
    right, judged = pairwise_counts(ranker, pairs)
    return right / judged if judged else float("nan")


class RankerTrainer:
    """One training run; ``run()`` trains (resuming if a checkpoint exists) and returns the result.

    Under a launcher every process runs it and gets the same result; ``on_step`` is called in each
    process with the same (summed) metrics, so a callback that stops the run must stop all of them.
    """

    def __init__(self, config: RankerTrainConfig, *, on_step: StepCallback | None = None) -> None:
        hf.require_torch("training a ranker")
        self.config = config
        self.out = Path(config.output_dir)
        self.on_step = on_step
        self.history: list[dict[str, Any]] = []
        self.group = DataParallel()
        #: The run's micro-batches: ``config``'s, with ``batch_size`` × the number of processes.
        self.batches = config

    # ---- set-up --------------------------------------------------------------------------------

    def _check_resumable(self) -> None:
        saved = self.out / "config.yaml"
        if not saved.is_file():
            return
        import yaml

        previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        current = asdict(self.config)
        changed = [k for k in RESUME_KEYS if normalise(previous.get(k)) != normalise(current.get(k))]
        if changed and (self.out / CHECKPOINT).is_file():
            raise LlmblendError(
                f"{self.out} holds a run with different {', '.join(changed)}; resuming would mix two runs. "
                "Use another --output-dir, or delete that folder to start over."
            )

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Join the launcher's process group, if any (:func:`data_parallel`), and train."""
        c = self.config
        with data_parallel(c.device) as group:
            self.group = group
            if group.distributed:
                self.batches = replace(c, batch_size=c.batch_size * group.world_size)
            return self._train()

    def _train(self) -> TrainResult:
        import torch

        c, group = self.config, self.group
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_resumable()
        train, dev = training_pairs(c)
        log.info("training on %d pairs, tasks %s", len(train.pairs), list(train.task_names))
        torch.manual_seed(c.seed)
        random.seed(c.seed)
        ranker = build_ranker(replace(c, device=group.device), train.task_names)
        module = ranker.module
        frozen = [freeze_word_embeddings(ranker)] if c.freeze_word_embeddings else []
        steps = total_steps(len(train.pairs), self.batches)
        optimizer, scheduler = make_optimizer(module, c, steps, frozen=frozen)
        if group.distributed:  # each process draws its own dropout (the weights are alike)
            torch.manual_seed(c.seed + group.rank)
            random.seed(c.seed + group.rank)
        state = self._resume(ranker, optimizer, scheduler)
        if len(set(group.gather(state["step"]))) > 1:
            raise LlmblendError(
                f"the processes found different checkpoints in {self.out}; put output_dir on a file "
                "system that every process sees"
            )
        model = group.wrap(module)
        start, best = state["step"], state["best"]
        self.history = state["history"]
        if group.is_main:
            write_file(self.out / "config.yaml", config_to_yaml(c))
        loss_fn = get_loss(c.loss)
        module.train()
        for step in range(start, steps):
            metrics = self._step(ranker, model, train.pairs, step, loss_fn, optimizer)
            scheduler.step()
            done = step + 1
            wrote = False
            if dev is not None and (done % c.eval_every == 0 or done == steps):
                metrics["dev_accuracy"] = self._dev_accuracy(ranker, dev.pairs)
                module.train()
                if best is None or metrics["dev_accuracy"] > best:
                    best = metrics["dev_accuracy"]
                    if group.is_main:
                        ranker.save_pretrained(self.out / "best")
                    metrics["saved_best"] = 1.0
                    wrote = True
            self._log(done, metrics)
            if done % c.save_every == 0 or done == steps:
                self._save_checkpoint(ranker, optimizer, scheduler, done, best)
                wrote = True
            if wrote:
                group.barrier()  # no process goes on (or stops) while rank 0 is still writing
            if self.on_step:
                self.on_step(done, steps, metrics)
        model_dir = self.out / ("best" if dev is not None and (self.out / "best").is_dir() else "last")
        if start >= steps:
            log.info("%s already finished %d steps; nothing to do", self.out, steps)
        return TrainResult(self.out, model_dir, steps, best, self.history, resumed_from=start)

    def _step(self, ranker, model, pairs, step: int, loss_fn, optimizer) -> dict[str, float]:
        """One optimiser step. ``model`` is the module, or under K processes its DDP wrapper; each
        process runs its :func:`rank_share` of every micro-batch."""
        import torch

        c, group = self.config, self.group
        started = time.perf_counter()
        total_loss, correct, judged = 0.0, 0, 0
        for micro in range(c.grad_accum):
            batch = micro_batch(pairs, self.batches, step * c.grad_accum + micro)
            share, rows, factor = rank_share(batch, group.rank, group.world_size)
            inputs = to_device(ranker.encode_pairs([p.query for p in rows]), ranker.device)
            labels = torch.tensor([p.labels for p in rows], dtype=torch.float32, device=ranker.device)
            with group.accumulating(model, sync=micro == c.grad_accum - 1):
                with torch.autocast(ranker.device.type, dtype=torch.bfloat16, enabled=c.bf16):
                    left, right = model(**inputs)
                loss = loss_fn(left.float(), right.float(), labels, margin=c.margin)
                if factor != 1.0:
                    loss = loss * factor
                (loss / c.grad_accum).backward()
            total_loss += loss.item() / c.grad_accum
            if share:  # not the stand-in pair of an empty share
                overall = torch.sign(labels.sum(dim=1))
                predicted = torch.sign((left - right).float().mean(dim=1).detach())
                correct += int(((predicted == overall) & (overall != 0)).sum())
                judged += int((overall != 0).sum())
        if group.distributed:  # the whole step's: the weighted losses average to the batch's loss
            total_loss, correct, judged = group.sum([total_loss, correct, judged])
            total_loss /= group.world_size
        torch.nn.utils.clip_grad_norm_(ranker.module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {
            "loss": total_loss,
            "train_accuracy": correct / judged if judged else float("nan"),
            "lr": optimizer.param_groups[-1]["lr"],  # the backbone's (groups sorted: backbone last)
            "seconds": time.perf_counter() - started,
        }

    def _dev_accuracy(self, ranker, pairs: Sequence[LabelledPair]) -> float:
        """:func:`pairwise_accuracy` on ``pairs``; under K processes each scores its share of them
        and the counts are summed."""
        if not self.group.distributed:
            return pairwise_accuracy(ranker, pairs)
        right, judged = self.group.sum(pairwise_counts(ranker, self.group.shard(pairs)))
        return right / judged if judged else float("nan")

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: round(v, 6) for k, v in metrics.items()}}
        self.history.append(record)
        if self.group.is_main:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    # ---- checkpoints ---------------------------------------------------------------------------

    def _save_checkpoint(self, ranker, optimizer, scheduler, step: int, best: float | None) -> None:
        """Model folder ``last/`` for users, then one atomic file with everything needed to resume.
        Under K processes each hands rank 0 its RNG state (``rank_rng``), and rank 0 alone writes."""
        import torch

        states = self.group.gather(rng_state())
        if not self.group.is_main:
            return
        ranker.save_pretrained(self.out / "last")
        state = {
            "step": step,
            "best": best,
            "history": self.history,
            "module": ranker.module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            **states[0],
            "world_size": self.group.world_size,
        }
        if self.group.distributed:
            state["rank_rng"] = states
        partial = self.out / f".{CHECKPOINT}.partial"
        torch.save(state, partial)
        os.replace(partial, self.out / CHECKPOINT)

    def _resume(self, ranker, optimizer, scheduler) -> dict[str, Any]:
        """The checkpoint's state, loaded into ``ranker``, the optimiser, the scheduler and the RNG
        (each process its own); a fresh start without one."""
        import torch

        group = self.group
        path = self.out / CHECKPOINT
        if not path.is_file():
            if group.is_main:
                (self.out / "log.jsonl").unlink(missing_ok=True)
            return {"step": 0, "best": None, "history": []}
        state = torch.load(path, map_location="cpu", weights_only=False)
        require_same_world_size(path, state.get("world_size", 1), group.world_size)
        ranker.module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rank_rng"][group.rank] if group.distributed else state)
        if group.is_main:
            truncate_log(self.out / "log.jsonl", state["step"])
        log.info("resuming %s from step %d", self.out, state["step"])
        return state


def train_ranker(config: RankerTrainConfig, *, on_step: StepCallback | None = None) -> TrainResult:
    """Train (or resume training) a ranker as ``config`` says; see :class:`RankerTrainer`."""
    return RankerTrainer(config, on_step=on_step).run()
