"""``llmblend train ...``: train rankers and the fuser, and package what was trained."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from llmblend.cli.common import (
    ModelOption,
    RuntimeOption,
    app,
    console,
    err_console,
    load_pair_ranker,
    progress_bars,
    training_progress,
    user_errors,
)
from llmblend.cli.helptext import App, listing
from llmblend.errors import LlmblendError

train_app = App(help="Train rankers (PairRanker and baselines).")
app.add_typer(train_app, name="train")


def _settings_listing(settings_class: type | None = None) -> str:
    """Every field of a training settings dataclass, its default and its help, one per line."""
    from dataclasses import MISSING, fields

    from llmblend.train.ranker import RankerTrainConfig

    def default(f) -> str:
        return "required" if f.default is MISSING else f"default {f.default!r}"

    chosen = settings_class or RankerTrainConfig
    return listing(
        "Settings (YAML keys and --set names):",
        (f"{f.name} ({default(f)}): {f.metadata['help']}" for f in fields(chosen)),
    )


def _fuser_settings_listing() -> str:
    from llmblend.train.fuser import FuserTrainSettings

    return _settings_listing(FuserTrainSettings)


def _quiet_transformers() -> None:
    """No transformers progress bars or warnings (errors only) in the processes a launcher starts
    besides rank 0: rank 0 shows them once for the run, not K times."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _launched_progress(description: str) -> tuple[bool, AbstractContextManager]:
    """``(main, progress)`` for a training command: under a launcher only rank 0 (``main``) shows a
    progress bar and reports; the other processes run quietly (``progress`` then yields None)."""
    from llmblend.train.distributed import launch_from_env

    main_process = launch_from_env().is_main
    if not main_process:
        _quiet_transformers()
    return main_process, training_progress(description) if main_process else nullcontext()


@train_app.command("ranker", epilog=_settings_listing())
def train_ranker_command(
    config_file: Annotated[
        Path | None, typer.Argument(help="A YAML file of settings (e.g. configs/pairranker-minilm-cpu.yaml).")
    ] = None,
    train_file: Annotated[
        str | None, typer.Option(help="MixInstruct file with candidate scores, or a preference-pair file.")
    ] = None,
    dev_file: Annotated[str | None, typer.Option(help="File for pairwise accuracy during training.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Where best/, last/ and the checkpoint go.")] = None,
    backbone: Annotated[str | None, typer.Option(help="HF encoder folder or hub id.")] = None,
    architecture: Annotated[
        str | None, typer.Option(help="pair-ranker (default), pointwise or dual-encoder.")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the training pairs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per micro-batch.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak AdamW learning rate.")] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bf16 autocast.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if present).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any other setting as KEY=VALUE (listed below).")
    ] = None,
) -> None:
    """Train a ranker on pairs (LLM-Blender §3.1): YAML settings first, then these flags on top.

    A flag left out keeps the YAML's value, else the default listed below.

    Rerunning the same command after an interruption resumes from OUTPUT_DIR/checkpoint.pt.
    The best model on the dev file is kept in OUTPUT_DIR/best, the latest in OUTPUT_DIR/last.

    Under torchrun --nproc-per-node K (or accelerate launch) the K processes train one model
    together: each takes batch_size pairs of every micro-batch, so a step sees K × batch_size pairs,
    and rank 0 writes OUTPUT_DIR.
    """
    from llmblend.train.config import build_config, parse_assignments
    from llmblend.train.ranker import RankerTrainConfig, train_ranker

    with user_errors():
        flags = dict(
            train_file=train_file,
            dev_file=dev_file,
            output_dir=output_dir,
            backbone=backbone,
            architecture=architecture,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            bf16=bf16,
            device=device,
        )
        extra = parse_assignments(set_ or [])
        if clash := sorted(k for k in extra if flags.get(k.replace("-", "_")) is not None):
            raise LlmblendError(f"{', '.join(clash)} given both as a flag and with --set; give it once")
        config = build_config(RankerTrainConfig, config_file, **extra, **flags)
        main_process, progress = _launched_progress(f"training {config.architecture}")
        with progress as on_step:
            result = train_ranker(config, on_step=on_step)
    if not main_process:  # under a launcher rank 0 reports for all
        return
    best = "n/a" if result.best_dev_accuracy is None else f"{result.best_dev_accuracy:.4f}"
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    console.print(
        f"trained {result.steps} steps{resumed}; best dev accuracy {best}; model: {result.model_dir}",
        highlight=False,
        markup=False,
    )


@train_app.command("fuser", epilog=_fuser_settings_listing())
def train_fuser_command(
    config_file: Annotated[
        Path | None,
        typer.Argument(help="A YAML file of settings (e.g. configs/fuser-gemma3-270m-lora.yaml)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any setting as KEY=VALUE on top of the YAML (listed below)."),
    ] = None,
) -> None:
    """Train GenFuser (LLM-Blender §4): the ranker's top-K of each training instruction → the reference.

    The training file must be ranked first (`llmblend rank`). Rerunning the same command after an
    interruption resumes from OUTPUT_DIR/last; the best adapter on the dev file is kept in
    OUTPUT_DIR/best (else OUTPUT_DIR/final).

    Under torchrun --nproc-per-node K (or accelerate launch) the K processes train one model
    together: each takes batch_size examples of every micro-batch, so a step sees K × batch_size
    examples, and rank 0 evaluates on dev and writes OUTPUT_DIR.
    """
    from llmblend.train.config import build_config, parse_assignments
    from llmblend.train.fuser import FuserTrainSettings, train_fuser

    with user_errors():
        settings = build_config(FuserTrainSettings, config_file, **parse_assignments(set_ or []))
        main_process, progress = _launched_progress("training the fuser")
        with progress as on_step:
            report = train_fuser(settings, progress=on_step)
    if not main_process:  # under a launcher rank 0 reports for all
        return
    resumed = f" (resumed at step {report.resumed_from})" if report.resumed_from else ""
    console.print(
        f"trained {report.steps} steps{resumed} in {report.seconds / 60:.1f} min on {report.train_examples} "
        f"examples (skipped: {report.skipped}); best dev: {report.best_dev}; model: {report.model_dir}",
        highlight=False,
        markup=False,
    )


@train_app.command("package-fuser")
def train_package_fuser_command(
    adapter: Annotated[
        Path, typer.Argument(help="A trained adapter folder (OUTPUT_DIR/best of `train fuser`).")
    ],
    out: Annotated[
        Path, typer.Option(help="The folder to write (e.g. src/llmblend/models/fuser-gemma3-270m).")
    ],
    name: Annotated[
        str | None, typer.Option(help="The fuser's name in results (default: the folder's).")
    ] = None,
) -> None:
    """Make a small fuser folder for llama.cpp and transformers: the adapter as GGUF and as f16 peft
    weights, plus its settings (the tokenizer is read from the base model)."""
    from llmblend.fuse.llama_fuser import package_fuser

    with user_errors():
        folder = package_fuser(adapter, out, name=name)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    console.print(f"wrote {folder} ({size:.1f} MB)", highlight=False, markup=False)


@train_app.command("compact")
def train_compact_command(
    model: Annotated[Path, typer.Argument(help="A trained PairRanker folder (e.g. OUTPUT_DIR/best).")],
    out: Annotated[Path, typer.Option(help="Where the compact folder goes.")],
    base: Annotated[
        str, typer.Option(help="The encoder it was trained from; users need it too (a hub id or folder).")
    ] = "sentence-transformers/all-MiniLM-L6-v2",
) -> None:
    """Write a trained ranker as an fp16 delta over its base encoder (how the default ranker ships).

    Only tensors that differ from BASE are stored; the word embeddings of BASE's vocabulary must be
    unchanged (train with freeze_word_embeddings: true). The folder loads like any ranker folder.
    """
    from llmblend.rank.compact import save_compact
    from llmblend.rank.pairranker import PairRanker

    with user_errors():
        ranker = PairRanker.from_pretrained(model, device="cpu")
        save_compact(ranker, out, base_model=base)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    console.print(f"wrote {out} ({size:.1f} MB, base {base})", highlight=False, markup=False)


@train_app.command("pool")
def train_pool_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Judged data: MixInstruct files (oracle scores, cmp_results) or preference pairs."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The pool file to write (JSON).")],
    oracle: Annotated[
        str | None,
        typer.Option(
            help="The score field of MixInstruct candidates that judges them, e.g. gpt4_win. Without it "
            "(preference pairs only, such as the gateway's feedback) the pool ranks by strengths alone."
        ),
    ] = None,
    terms: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated terms to combine: pool, length, rel_length, pool_consensus, "
            "consensus, ranker (ranker needs --calibrate). Default: pool, length, rel_length, "
            "pool_consensus."
        ),
    ] = None,
    categories: Annotated[
        bool, typer.Option(help="Per-category strengths, the category being the id's prefix before '/'.")
    ] = False,
    calibrate: Annotated[
        Path | None,
        typer.Option(
            help="Judged MixInstruct examples the ranker was not trained on (e.g. from llmblend data "
            "held-out): fit the combination there, with the ranker (default: cross-fit on FILES)."
        ),
    ] = None,
    model: ModelOption = None,
    prior_scale: Annotated[
        float,
        typer.Option(help="Prior standard deviation of the strengths, in log-odds; smaller shrinks more."),
    ] = 1.0,
    judge: Annotated[
        str | None,
        typer.Option(
            metavar="MODELS.yaml",
            help="An LLM judge (MODELS.yaml or MODELS.yaml#NAME) whose cache, named in its judge: "
            "section, holds verdicts on the candidates of FILES, e.g. from llmblend rank -r "
            "judge:MODELS.yaml: each verdict is a comparison. Nothing is asked.",
        ),
    ] = None,
    threshold_rule: Annotated[
        str,
        typer.Option(
            help="How the switching threshold is chosen from its cross-validated top-1: gated (the "
            "highest, unless it beats the most cautious threshold by no more than one standard "
            "error: then the most cautious, so the pick leaves the strongest model only where that "
            "pays beyond the noise of the folds), best (the highest), or one-se (the highest "
            "threshold within one standard error of the best: fewer switches)."
        ),
    ] = "gated",  # train.pool.DEFAULT_THRESHOLD_RULE (not imported: --help stays light)
) -> None:
    """Fit the pool model: Bradley-Terry strengths of the source models, and when to trust a challenger
    over the pool's favourite.

    Strengths come from every judged comparison in FILES (and with --judge from an LLM judge's
    cached verdicts on their candidates); models with few judgements are shrunk
    towards the prior, which is also the strength of a model the pool has never seen. The weights of
    P(challenger beats the favourite) and the switching threshold are then fitted on cross-fitted
    features (each instruction described by a pool that never saw it) and chosen by cross-validated
    top-1. `llmblend rank --pool OUT` uses the result.
    """
    from llmblend.train.pool import DEFAULT_TERMS, PoolSettings, judge_cache_scores, train_pool_file

    with user_errors():
        known = None if judge is None else judge_cache_scores(judge)
        settings = PoolSettings(oracle=oracle, categories=categories, prior_scale=prior_scale, known=known)
        with progress_bars() as start:
            pool = train_pool_file(
                files,
                out,
                settings=settings,
                terms=DEFAULT_TERMS
                if terms is None
                else tuple(t.strip() for t in terms.split(",") if t.strip()),
                calibrate=calibrate,
                model=model,
                progress=start,
                threshold_rule=threshold_rule,
            )
    top = sorted(pool.strengths, key=lambda m: -pool.strengths[m])[:3]
    combination = pool.combination or {}
    fitted = combination.get("fitted_on", {})
    curve = fitted.get("cv_top1_by_threshold", {})
    if oracle is None:
        console.print(
            f"pool of {len(pool.strengths)} models from {pool.fitted_on.get('comparisons')} comparisons"
            f"{judged_note(pool)}; "
            f"strongest: {', '.join(f'{m} ({pool.strengths[m]:+.2f})' for m in top)}; no --oracle: "
            f"ranks by strengths alone; wrote {out}",
            highlight=False,
            markup=False,
        )
        return
    console.print(
        f"pool of {len(pool.strengths)} models from {pool.fitted_on.get('comparisons')} comparisons"
        f"{judged_note(pool)}; "
        f"strongest: {', '.join(f'{m} ({pool.strengths[m]:+.2f})' for m in top)}; "
        f"threshold {combination.get('threshold')} ({fitted.get('threshold_rule')} rule): "
        "cross-validated top-1 "
        f"{curve.get(str(combination.get('threshold')), float('nan')):.4f} vs the favourite's "
        f"{fitted.get('favourite_top1', float('nan')):.4f} ({fitted.get('source')}); wrote {out}",
        highlight=False,
        markup=False,
    )


def judged_note(pool) -> str:
    """How many comparisons came from an LLM judge's cache, as a note for the summary line."""
    judged = pool.fitted_on.get("judged_pairs")
    return f" ({judged} from the judge's cache)" if judged else ""


@train_app.command("calibrate")
def train_calibrate_command(
    file: Annotated[Path, typer.Argument(help="Judged MixInstruct examples the ranker was not trained on.")],
    oracle: Annotated[str, typer.Option(help="The candidates' score field that judges them.")] = "gpt4_win",
    model: ModelOption = None,
    runtime: RuntimeOption = None,
    holdout: Annotated[
        float, typer.Option(help="Share of the examples kept to report on, not fit (between 0 and 1).")
    ] = 0.5,
    min_gap: Annotated[
        float, typer.Option(min=0.0, help="Pairs whose oracle scores differ by at most this are left out.")
    ] = 0.1,
    write: Annotated[
        bool, typer.Option(help="Store the temperature in the model folder's config.json (default: report).")
    ] = False,
) -> None:
    """Fit PairRanker's temperature, so that compare's P(A better) = sigmoid(margin / T) is calibrated,
    and report the expected calibration error and Brier score before and after on held-out pairs.

    The examples are split by a hash of their id: the temperature is fitted on one part and reported
    on the other. With --write it is stored with the model (for the shipped ranker: in the package).
    """
    from llmblend.data.mixinstruct import load_mixinstruct
    from llmblend.rank.pairranker import DEFAULT_MODEL_DIR
    from llmblend.train.calibrate import calibrate, write_temperature

    with user_errors():
        examples = load_mixinstruct(file)
        ranker = load_pair_ranker(model, runtime, 32)
        with err_console.status("scoring the pairs in both orders..."):
            report = calibrate(ranker.compare_pairs, examples, oracle, holdout=holdout, min_gap=min_gap)
        if write:
            write_temperature(model or DEFAULT_MODEL_DIR, report.temperature)
    r = report
    stored = f"; stored in {model or DEFAULT_MODEL_DIR}" if write else " (not stored: --write stores it)"
    console.print(
        f"temperature {r.temperature:.4f} fitted on {r.fit_pairs} pairs; on {r.report_pairs} held-out "
        f"pairs: ECE {r.ece_before:.4f} -> {r.ece_after:.4f}, Brier {r.brier_before:.4f} -> "
        f"{r.brier_after:.4f}, accuracy {r.accuracy:.4f}{stored}",
        highlight=False,
        markup=False,
    )
