"""``llmblend train fuser``: fine-tune GenFuser (LLM-Blender §4) on ranked MixInstruct data.

As in the paper, the fuser learns to write the reference answer (``output``) from the instruction
and the ranker's top-K candidates on the *training* split: the input of a record is its first
``top_k`` candidates in ``ranking.order`` (the ``ranking`` field ``llmblend rank`` writes), best
first. Options make the fuser robust to the ranker's mistakes: ``shuffle_candidates`` presents the K
in a random order, ``swap_probability`` replaces one of them by a lower-ranked candidate.

The model is a seq2seq LM (T5 / Flan-T5 / BART: ``labels`` = target ids, padding ignored) or a
causal LM (prompt and target in one sequence; the loss is on the target tokens only, prompt and
padding labelled -100). Causal batches are left-padded so every target ends at the last position,
and the LM head runs only on the last ``max target + 1`` positions (``logits_to_keep``): with
Gemma's 262k-word vocabulary that head is most of the compute. LoRA (peft) or full fine-tuning; bf16
autocast on CPU or GPU when ``dtype: bfloat16``.

The loop, top to bottom: build or resume the model, then per step ``grad_accum`` micro-batches,
clip, AdamW step, warmup + linear decay. The data order is a pure function of the seed and the
epoch (and so is each example's candidate shuffle and swap), so a resumed run sees exactly the
batches an uninterrupted one would. Every ``save_every`` steps ``OUTPUT/last/`` is rewritten
atomically (the adapter or model, tokenizer, and ``training_state.pt``: optimiser, scheduler, RNG,
step); rerunning the same command continues from there. With a dev file, every ``eval_every`` steps
the fuser generates for the first ``dev_limit`` dev records, is scored against their references
(ROUGE-L, BLEU, ...), and the best by ROUGE-L is kept in ``OUTPUT/best/``; without one the end
result goes to ``OUTPUT/final/``. ``best/`` and ``final/`` hold only what inference needs.

Data-parallel (``torchrun --nproc-per-node K`` or ``accelerate launch``; see
:mod:`llmblend.train.distributed`), as ``train ranker`` does it: the run's micro-batches are those of
one process with ``batch_size`` K·B; process r takes records r, r+K, … of each and weights its
token-mean loss by K × its target tokens / the micro-batch's, so DDP's average of the K gradients is
the gradient of one process's loss over the whole micro-batch. Rank 0 alone evaluates on dev (the
others wait for its scores) and writes ``config.yaml``, ``log.jsonl``, ``best/``, ``final/`` and
``last/``, whose training state holds every process's RNG; a run resumes only with the same K.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.atomic import write_file
from llmblend.errors import LlmblendError
from llmblend.fuse.trained import TrainedFuser, portable_spec
from llmblend.hf_loading import import_ml, import_peft, load_lm, pick_device, set_threads
from llmblend.train.checkpoints import (
    normalise,
    restore_rng,
    rng_state,
    truncate_log,
    warmup_then_linear_decay,
)
from llmblend.train.config import config_to_yaml, setting
from llmblend.train.distributed import DataParallel, data_parallel, require_same_world_size
from llmblend.train.fuser_data import (
    FuserRecord,
    causal_batch,
    causal_loss,
    dev_item,
    fuse_item,
    load_fuser_records,
    micro_batch_indices,
    seq2seq_batch,
    seq2seq_loss,
    supports_logits_to_keep,
    target_ids,
    to_tensors,
    total_steps,
)

__all__ = [  # the data helpers are re-exported: they were defined here before train/fuser_data.py
    "FuserRecord",
    "FuserTrainReport",
    "FuserTrainSettings",
    "FuserTrainer",
    "causal_batch",
    "causal_loss",
    "fuse_item",
    "inference_copy",
    "load_fuser_records",
    "micro_batch_indices",
    "target_ids",
    "to_tensors",
    "train_fuser",
]

log = logging.getLogger(__name__)

LAST, BEST, FINAL = "last", "best", "final"
TRAINING_STATE = "training_state.pt"
#: The dev metric that picks ``best/``.
SELECTION_METRIC = "rougeL"
#: LoRA target modules by family: attention and MLP projections.
CAUSAL_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
T5_LORA_TARGETS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")
BART_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
T5_TYPES = ("t5", "mt5", "umt5", "longt5")
#: Settings that must match for a rerun to resume ``last/`` rather than be refused.
RESUME_KEYS = (
    "train_file",
    "base_model",
    "gguf_file",
    "lora",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "top_k",
    "shuffle_candidates",
    "swap_probability",
    "batch_size",
    "grad_accum",
    "seed",
    "max_source_tokens",
    "max_target_tokens",
    "max_candidate_tokens",
)
DTYPES = ("float32", "bfloat16")


@dataclass
class FuserTrainSettings:
    """Everything ``llmblend train fuser`` needs; YAML keys and ``--set`` names are the field names."""

    train_file: str = setting("MixInstruct JSONL whose records carry a `ranking` (from `llmblend rank`)")
    output_dir: str = setting("where last/, best/ or final/, config.yaml and log.jsonl go")
    base_model: str = setting(
        "model to fine-tune: HF folder or hub id (seq2seq such as google/flan-t5-large, or a causal LM), "
        "a .gguf path, or local:NAME for a packaged GGUF (local:gemma3-270m)"
    )
    gguf_file: str | None = setting("GGUF file inside base_model's folder or hub repo (dequantised)", None)
    dev_file: str | None = setting("ranked MixInstruct file scored during training; picks best/", None)
    dev_limit: int = setting("dev records fused at each evaluation (the first ones of the file)", 24)
    dev_metrics: tuple[str, ...] = setting(
        "reference metrics on the dev fusions (rougeL always; e.g. bleu, bertscore)", ("rougeL", "bleu")
    )
    top_k: int = setting("candidates fused: the first K of ranking.order (K=3 in the paper)", 3)
    shuffle_candidates: bool = setting("present the K candidates in a random (seeded) order", False)
    swap_probability: float = setting(
        "probability of replacing one of the top-K by a lower-ranked candidate (robustness)", 0.0
    )
    lora: bool = setting("train a LoRA adapter (peft) instead of every weight", True)
    lora_r: int = setting("LoRA rank", 16)
    lora_alpha: int = setting("LoRA alpha (scale = alpha / r)", 32)
    lora_dropout: float = setting("dropout on the LoRA input", 0.05)
    lora_targets: tuple[str, ...] = setting(
        "module names LoRA adapts; default: attention + MLP projections of the model's family "
        "(q_proj..down_proj for causal LMs, q,k,v,o,wi,wo for T5, q_proj..fc2 for BART)",
        (),
    )
    dtype: str = setting("float32, or bfloat16 (autocast; weights and optimiser stay float32)", "float32")
    lr: float = setting("peak AdamW learning rate", 2e-4)
    weight_decay: float = setting("AdamW weight decay (not on biases/norms)", 0.0)
    warmup_ratio: float = setting("share of steps spent warming up", 0.03)
    batch_size: int = setting("examples per micro-batch (per process under torchrun)", 4)
    grad_accum: int = setting("micro-batches per optimiser step", 1)
    epochs: float = setting("passes over the training records", 1.0)
    max_steps: int | None = setting("stop after this many steps (overrides epochs)", None)
    max_source_tokens: int = setting("tokens of the whole fuser input (instruction + candidates)", 448)
    max_target_tokens: int = setting("tokens of the target kept (with the end-of-sequence token)", 192)
    max_candidate_tokens: int = setting("tokens kept of each candidate", 128)
    max_new_tokens: int | None = setting("dev generation length (default: max_target_tokens)", None)
    dev_batch_size: int = setting("prompts generated together at a dev evaluation", 8)
    seed: int = setting("seed of data order, candidate shuffles/swaps, LoRA init and dropout", 0)
    save_every: int = setting("steps between resumable checkpoints in last/", 20)
    eval_every: int = setting("steps between dev evaluations", 50)
    threads: int | None = setting("torch CPU threads (default: torch's choice)", None)
    device: str | None = setting("cpu, cuda, ... (default: cuda if present)", None)

    def __post_init__(self) -> None:
        from llmblend.eval.metrics import metric_names

        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in (
            "top_k",
            "lora_r",
            "batch_size",
            "grad_accum",
            "save_every",
            "eval_every",
            "dev_limit",
            "dev_batch_size",
            "max_source_tokens",
            "max_target_tokens",
            "max_candidate_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.swap_probability <= 1.0:
            raise ValueError(f"swap_probability must be in [0, 1], got {self.swap_probability}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError(f"epochs must be > 0 (got {self.epochs}) unless max_steps is set")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        metrics = tuple(dict.fromkeys((SELECTION_METRIC, *self.dev_metrics)))
        unknown = [m for m in metrics if m not in metric_names()]
        if unknown:
            raise ValueError(f"unknown dev metric(s) {unknown}; known: {', '.join(metric_names())}")
        self.dev_metrics = metrics
        self.lora_targets = tuple(self.lora_targets)


def default_lora_targets(model: Any) -> list[str] | str:
    """The attention and MLP projections of the model's family that it has, else peft's "all-linear"."""
    import torch

    config = model.config
    if config.model_type in T5_TYPES:
        family = T5_LORA_TARGETS
    elif getattr(config, "is_encoder_decoder", False):
        family = BART_LORA_TARGETS
    else:
        family = CAUSAL_LORA_TARGETS
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    chosen = [name for name in family if name in present]
    return chosen or "all-linear"


# ---------------------------------------------------------------- evaluation


def evaluate_fuser(fuser: Any, records: Sequence[FuserRecord], metrics: dict[str, Any]) -> dict[str, float]:
    """Fuse each dev record's top-K and score against its reference: ``{metric: corpus score}`` plus
    ``failed`` (items that produced no answer; scored as empty text)."""
    fused = fuser.fuse([dev_item(r, fuser.top_k) for r in records])
    texts = [f.text for f in fused]
    references = [r.target for r in records]
    scores = {name: float(metric.score(texts, references).corpus) for name, metric in metrics.items()}
    scores["failed"] = float(sum(not f.ok for f in fused))
    scores["mean_new_tokens"] = float(np.mean([f.completion_tokens for f in fused])) if fused else 0.0
    return scores


def inference_copy(fuser: Any, dtype: str) -> Any:
    """A copy of a fuser in training for generating: its LoRA merged into a copy of the weights (an
    unmerged adapter adds four small ops per layer and decoding is op-bound on CPU; merging in place
    and back would nudge the frozen weights) and, with ``dtype: bfloat16``, cast to bf16 (faster than
    autocast, which re-casts every frozen weight at every decoding step). The trained model is untouched.
    """
    import copy

    import torch

    model = copy.deepcopy(fuser.model)
    if fuser.is_adapter:
        model = model.merge_and_unload()
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.eval()
    return TrainedFuser(
        model,
        fuser.tokenizer,
        kind=fuser.kind,
        base_model=fuser.base_model,
        gguf_file=fuser.gguf_file,
        name=fuser.name,
        max_candidate_tokens=fuser.max_candidate_tokens,
        max_source_tokens=fuser.max_source_tokens,
        max_new_tokens=fuser.max_new_tokens,
        num_beams=fuser.num_beams,
        batch_size=fuser.batch_size,
        top_k=fuser.top_k,
    )


# ---------------------------------------------------------------- the run


@dataclass
class FuserTrainReport:
    """Where the fuser went and how training ended."""

    output_dir: Path
    model_dir: Path
    steps: int
    resumed_from: int
    train_examples: int
    skipped: dict[str, int]
    dev_examples: int
    best_dev: dict[str, float] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


#: Called after every optimiser step: (step, total_steps, metrics of the step).
ProgressCallback = Callable[[int, int, dict[str, float]], None]


class FuserTrainer:
    """One training run; ``run()`` trains (resuming from ``last/`` when it exists) and reports."""

    def __init__(self, settings: FuserTrainSettings, *, progress: ProgressCallback | None = None) -> None:
        import_ml("training a fuser")
        self.settings = settings
        self.out = Path(settings.output_dir)
        self.progress = progress
        self.history: list[dict[str, Any]] = []
        self.group = DataParallel()
        #: The run's micro-batches: ``settings``', with ``batch_size`` × the number of processes.
        self.batches = settings

    # ---- set-up ----

    def _check_resumable(self) -> None:
        saved = self.out / "config.yaml"
        if not saved.is_file() or self._last_dir() is None:
            return
        import yaml

        previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        current = asdict(self.settings)
        changed = [k for k in RESUME_KEYS if normalise(previous.get(k)) != normalise(current.get(k))]
        if changed:
            raise LlmblendError(
                f"{self.out} holds a run with different {', '.join(changed)}; resuming would mix two runs. "
                "Use another output_dir, or delete that folder to start over."
            )

    def _last_dir(self) -> Path | None:
        """``last/`` with a training state; ``.last.old`` when a crash hit between the two renames."""
        for candidate in (self.out / LAST, self.out / f".{LAST}.old"):
            if (candidate / TRAINING_STATE).is_file():
                return candidate
        return None

    def _build(self, device: str, resume: Path | None):
        """The fuser to train: from ``resume`` (last/) when given, else the base model (+ fresh LoRA)."""
        s = self.settings
        if resume is not None and not s.lora:
            loaded = load_lm(
                resume,
                dtype="float32",
                device=device,
                what="the fuser checkpoint",
                purpose="training a fuser",
            )
        else:
            loaded = load_lm(
                s.base_model,
                gguf_file=s.gguf_file,
                dtype="float32",
                device=device,
                adapter=resume if s.lora else None,
                trainable_adapter=True,
                what="the base model",
                purpose="training a fuser",
            )
        model, kind = loaded.model, loaded.kind
        if s.lora and resume is None:
            peft = import_peft("LoRA training")
            targets = list(s.lora_targets) or default_lora_targets(model)
            config = peft.LoraConfig(
                r=s.lora_r,
                lora_alpha=s.lora_alpha,
                lora_dropout=s.lora_dropout,
                target_modules=targets,
                task_type="SEQ_2_SEQ_LM" if kind == "seq2seq" else "CAUSAL_LM",
            )
            model = peft.get_peft_model(model, config)
            model.to(device)
        return TrainedFuser(
            model,
            loaded.tokenizer,
            kind=kind,
            base_model=portable_spec(s.base_model),
            gguf_file=s.gguf_file,
            name=f"fuser:{self.out.resolve().name}",
            max_candidate_tokens=s.max_candidate_tokens,
            max_source_tokens=s.max_source_tokens,
            max_new_tokens=s.max_new_tokens or s.max_target_tokens,
            batch_size=s.dev_batch_size,
            top_k=s.top_k,
            bf16_autocast=s.dtype == "bfloat16",
        )

    # ---- the loop ----

    def run(self) -> FuserTrainReport:
        """Join the launcher's process group, if any (:func:`data_parallel`), and train."""
        s = self.settings
        with data_parallel(s.device) as group:
            self.group = group
            if group.distributed:
                self.batches = replace(s, batch_size=s.batch_size * group.world_size)
            return self._train()

    def _train(self) -> FuserTrainReport:
        import torch

        from llmblend.eval.metrics import get_metric

        s, group = self.settings, self.group
        started = time.perf_counter()
        set_threads(s.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_resumable()
        train, skipped = load_fuser_records(s.train_file, s.top_k)
        dev = load_fuser_records(s.dev_file, s.top_k, limit=s.dev_limit)[0] if s.dev_file else None
        metrics = {name: get_metric(name) for name in s.dev_metrics} if dev else {}
        log.info("training a fuser on %d records (%s)", len(train), s.base_model)
        device = str(pick_device(group.device))
        steps = total_steps(len(train), self.batches)
        resume = self._last_dir()
        torch.manual_seed(s.seed)
        random.seed(s.seed)
        fuser = self._build(device, resume)
        params = [p for p in fuser.model.parameters() if p.requires_grad]
        optimizer, scheduler = make_optimizer(fuser.model, s, steps)
        if group.distributed:  # each process draws its own dropout (the weights are alike)
            torch.manual_seed(s.seed + group.rank)
            random.seed(s.seed + group.rank)
        state = self._resume(resume, optimizer, scheduler)
        if len(set(group.gather(state["step"]))) > 1:
            raise LlmblendError(
                f"the processes found different checkpoints in {self.out}; put output_dir on a file "
                "system that every process sees"
            )
        start, best, best_dev = state["step"], state["best"], state["best_dev"]
        self.history = state["history"]
        if group.is_main:
            write_file(self.out / "config.yaml", config_to_yaml(s))
        model = group.wrap(fuser.model)
        keep_logits = fuser.kind == "causal" and supports_logits_to_keep(fuser.model)
        fuser.model.train()
        for step in range(start, steps):
            step_metrics, ids = self._step(fuser, model, train, step, optimizer, params, keep_logits)
            scheduler.step()
            done = step + 1
            wrote = False
            if dev is not None and (done % s.eval_every == 0 or done == steps):
                scores, seconds = self._evaluate(fuser, dev, metrics)
                step_metrics.update({f"dev_{k}": v for k, v in scores.items()})
                step_metrics["eval_seconds"] = seconds
                if best is None or scores[SELECTION_METRIC] > best:
                    best, best_dev = scores[SELECTION_METRIC], {"step": done, **scores}
                    if group.is_main:
                        fuser.save_pretrained(self.out / BEST)
                    step_metrics["saved_best"] = 1.0
                    wrote = True
            self._log(done, step_metrics, ids)
            if done % s.save_every == 0 or done == steps:
                self._save_checkpoint(fuser, optimizer, scheduler, done, best, best_dev)
                wrote = True
            if wrote:
                group.barrier()  # no process goes on (or stops) while rank 0 is still writing
            if self.progress:
                self.progress(done, steps, step_metrics)
        if start >= steps:
            log.info("%s already finished %d steps; nothing to do", self.out, steps)
        if dev is None and (start < steps or not (self.out / FINAL).is_dir()):
            if group.is_main:
                fuser.save_pretrained(self.out / FINAL)
            group.barrier()
        model_dir = self.out / (BEST if dev is not None and (self.out / BEST).is_dir() else FINAL)
        return FuserTrainReport(
            output_dir=self.out,
            model_dir=model_dir,
            steps=steps,
            resumed_from=start,
            train_examples=len(train),
            skipped=skipped,
            dev_examples=len(dev) if dev else 0,
            best_dev=best_dev,
            history=self.history,
            seconds=time.perf_counter() - started,
        )

    def _step(self, fuser, model, train, step: int, optimizer, params, keep_logits: bool):
        """One optimiser step. ``model`` is the fuser's model, or under K processes its DDP wrapper;
        each process runs its share of every micro-batch: every K-th example, or when that is empty
        (a short last micro-batch) the first one as a stand-in, so that it still joins DDP's
        gradient all-reduce; its loss then weighs 0."""
        import torch

        s, group = self.settings, self.group
        started = time.perf_counter()
        total_loss, tokens, ids = 0.0, 0, []
        for micro in range(s.grad_accum):
            epoch, positions = micro_batch_indices(len(train), self.batches, step * s.grad_accum + micro)
            ids += [train[position].id for position in positions]
            share = group.shard(positions)
            batch = self._batch(fuser, train, epoch, share or positions[:1])
            mine = int((batch["labels"] != -100).sum()) if share else 0
            all_tokens = int(group.sum([mine])[0])
            with group.accumulating(model, sync=micro == s.grad_accum - 1):
                with torch.autocast(fuser.device.type, dtype=torch.bfloat16, enabled=s.dtype == "bfloat16"):
                    if fuser.kind == "causal":
                        loss = causal_loss(model, batch, keep_logits=keep_logits)
                    else:
                        loss = seq2seq_loss(model, batch)
                if group.distributed:  # DDP averages the K gradients: weigh by this share's tokens
                    loss = loss * (group.world_size * mine / max(1, all_tokens))
                (loss / s.grad_accum).backward()
            total_loss += float(loss.item()) / s.grad_accum
            tokens += all_tokens
        if group.distributed:  # the weighted losses of the K processes average to the batch's loss
            total_loss = group.sum([total_loss])[0] / group.world_size
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = {
            "loss": total_loss,
            "grad_norm": float(grad_norm),
            "lr": optimizer.param_groups[0]["lr"],
            "target_tokens": float(tokens),
            "seconds": time.perf_counter() - started,
        }
        return metrics, ids

    def _batch(self, fuser, train, epoch: int, positions: Sequence[int]) -> dict[str, Any]:
        """The padded tensors of the records at ``positions`` (inputs and labels, on the device)."""
        s = self.settings
        rows = []
        for position in positions:
            record = train[position]
            item = fuse_item(record, s, epoch, position)
            try:
                source = fuser.encode(item)
            except ValueError as exc:
                raise LlmblendError(f"training record {record.id!r}: {exc}") from exc
            rows.append((source, target_ids(fuser.tokenizer, fuser.kind, record.target, s.max_target_tokens)))
        make_batch = causal_batch if fuser.kind == "causal" else seq2seq_batch
        return to_tensors(make_batch(rows, fuser.pad_id), fuser.device)

    def _evaluate(self, fuser, dev, metrics) -> tuple[dict[str, float], float]:
        """:func:`evaluate_fuser` on a merged copy, and the seconds it took; under K processes rank 0
        evaluates and the others receive its result."""
        result = None
        if self.group.is_main:
            started = time.perf_counter()
            scores = evaluate_fuser(inference_copy(fuser, self.settings.dtype), dev, metrics)
            fuser.model.train()
            result = (scores, time.perf_counter() - started)
        return self.group.gather(result)[0]

    def _log(self, step: int, metrics: dict[str, float], ids: list[str]) -> None:
        record = {"step": step, **{k: round(v, 6) for k, v in metrics.items()}, "examples": ids}
        self.history.append(record)
        if self.group.is_main:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    # ---- checkpoints ----

    def _save_checkpoint(self, fuser, optimizer, scheduler, step: int, best, best_dev) -> None:
        """``last/``: the fuser's files plus ``training_state.pt``, built beside it and renamed in."""
        import torch

        from llmblend.atomic import replace_folder

        states = self.group.gather(rng_state())
        if not self.group.is_main:
            return
        state = {
            "step": step,
            "best": best,
            "best_dev": best_dev,
            "history": self.history,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            **states[0],
            "world_size": self.group.world_size,
        }
        if self.group.distributed:
            state["rank_rng"] = states
        staging = Path(tempfile.mkdtemp(prefix=f".{LAST}.", dir=self.out))
        try:
            fuser.write_into(staging)
            torch.save(state, staging / TRAINING_STATE)
            replace_folder(staging, self.out / LAST)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _resume(self, resume: Path | None, optimizer, scheduler) -> dict[str, Any]:
        import torch

        group = self.group
        if resume is None:
            if group.is_main:
                (self.out / "log.jsonl").unlink(missing_ok=True)
            return {"step": 0, "best": None, "best_dev": None, "history": []}
        state = torch.load(resume / TRAINING_STATE, map_location="cpu", weights_only=False)
        require_same_world_size(resume / TRAINING_STATE, state.get("world_size", 1), group.world_size)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rank_rng"][group.rank] if group.distributed else state)
        if group.is_main:
            truncate_log(self.out / "log.jsonl", state["step"])
        log.info("resuming %s from step %d", self.out, state["step"])
        return state


def make_optimizer(model, settings: FuserTrainSettings, steps: int):
    """AdamW over the trainable parameters (no weight decay on biases and norms), linear warmup then
    linear decay to 0."""
    import torch

    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.lr)
    return optimizer, warmup_then_linear_decay(optimizer, steps, settings.warmup_ratio)


def train_fuser(settings: FuserTrainSettings, progress: ProgressCallback | None = None) -> FuserTrainReport:
    """Train (or resume training) a fuser as ``settings`` say; see :class:`FuserTrainer`."""
    return FuserTrainer(settings, progress=progress).run()
