"""``llmblend rank`` (a whole file, resumable, any ranker) and ``llmblend compare`` (two answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmblend.cli.common import (
    MaxCalls,
    MaxSeconds,
    MaxTokens,
    ModelOption,
    PoolOption,
    RankerOption,
    RuntimeOption,
    app,
    apply_budget,
    choose_ranker,
    console,
    err_console,
    load_pair_ranker,
    progress_bars,
    ranker_listing,
    user_errors,
)


@app.command("rank", epilog=ranker_listing())
def rank_command(
    file: Annotated[Path, typer.Argument(help="A MixInstruct JSONL file (candidates need no scores).")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the ranked records go (appended; rerun to resume). Default: FILE.ranked.jsonl."
        ),
    ] = None,
    ranker_spec: RankerOption = None,
    model: ModelOption = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="full/max-logits, max-wins, bubble, knockout or sparse-refine; with --pool: pool-seeded, "
            "full or prior; an LLM judge also takes listwise (default: sparse-refine, with --pool "
            "pool-seeded, for a judge the strategy of its judge: section)."
        ),
    ] = None,
    pool: PoolOption = None,
    runtime: RuntimeOption = None,
    max_calls: MaxCalls = None,
    max_tokens: MaxTokens = None,
    max_seconds: MaxSeconds = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Candidate pairs per forward pass.")] = 32,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Examples ranked (and written to OUT) together.")
    ] = 16,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Rank only the first N examples of FILE (default: all).")
    ] = None,
) -> None:
    """Rank every example's candidates with PairRanker (LLM-Blender §3), or any ranker given by
    --ranker, and write them to OUT.

    With --pool, the ranker also knows who answered: the pool's model strengths, the ranker's
    debiased logit and a length term are combined in one calibrated model, and the pool's favourite
    is replaced only on clear evidence (2(N-1) forwards for N candidates).

    With --ranker judge:MODELS.yaml an LLM judge ranks (its settings: the file's judge: section);
    --max-calls, --max-tokens and --max-seconds cap what it spends per example, and each ranking
    records its calls, tokens and cost.

    Each output record is the input record plus "ranking": the candidate order (best first), one
    score per candidate, the forward passes (or judge calls) used and any error. OUT is appended chunk
    by chunk; rerunning the same command after an interruption ranks only what OUT lacks.
    """
    from llmblend.rank.rank_file import pending_examples, rank_pending

    out = out or file.with_name(f"{file.name.removesuffix('.jsonl')}.ranked.jsonl")
    with user_errors():
        if file.resolve() == out.resolve():
            raise ValueError(f"--out {out} is the input file; choose another path")
        todo, done = pending_examples(file, out, limit)
        if done:
            err_console.print(f"{out}: {done} examples already ranked; ranking the {len(todo)} left")
        ranker, label = choose_ranker(ranker_spec, model, runtime, batch_size, pool)
        apply_budget(ranker, max_calls, max_tokens, max_seconds)
        strategy = strategy or _default_strategy(ranker, pool)
        with progress_bars() as start:
            advance = start(f"ranking ({strategy}, {getattr(ranker, 'runtime', ranker.name)})", len(todo))
            last = {"done": 0}

            def on_chunk(ranked: int, total: int) -> None:
                advance(ranked - last["done"])
                last["done"] = ranked

            report = rank_pending(
                ranker,
                todo,
                out,
                already_done=done,
                strategy=strategy,
                ranker_label=label,
                chunk_size=chunk_size,
                on_chunk=on_chunk,
            )
    console.print(_report_line(report, out), highlight=False, markup=False)


def _default_strategy(ranker, pool: Path | None) -> str:
    if pool is not None:
        from llmblend.rank.pool_ranker import DEFAULT_POOL_STRATEGY

        return DEFAULT_POOL_STRATEGY
    if ranker.name.startswith(("judge:", "cascade:")):
        return ranker.strategy
    return "sparse-refine"


def _report_line(report, out: Path) -> str:
    line = (
        f"ranked {report.ranked} examples in {report.seconds:.1f} s ({report.examples_per_second:.2f} "
        f"examples/s, {report.forwards_per_second:.1f} forwards/s, {report.n_forward} forwards); "
    )
    if report.usage is not None:
        u = {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, **report.usage}
        cost = f", ${u['cost_usd']:.4f}" if "cost_usd" in u else ""
        line += (
            f"judge: {u['calls']} calls ({u['cached']} cached), {u['prompt_tokens']} prompt + "
            f"{u['completion_tokens']} completion tokens{cost}; "
        )
    return line + f"{report.already_done} were already done, {report.failed} failed; output: {out}"


@app.command("compare")
def compare_command(
    instruction: Annotated[str, typer.Argument(help="The instruction both answers respond to.")],
    answer_a: Annotated[str, typer.Argument(help="Answer A.")],
    answer_b: Annotated[str, typer.Argument(help="Answer B.")],
    model: ModelOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Say which of two answers PairRanker prefers, and by how much (both orders scored, §3.2).

    The margin is a logit: > 0 favours A. P(A better) is sigmoid(margin / T), with the temperature T
    the model was calibrated with (llmblend train calibrate; 1 when it was not). It depends on these
    two answers alone, never on other candidates.
    """
    from llmblend.rank.calibration import probabilities

    with user_errors():
        ranker = load_pair_ranker(model, runtime)
        margin = float(ranker.compare([instruction], [answer_a], [answer_b])[0])
    probability = float(probabilities([margin], ranker.config.temperature)[0])
    winner = "A" if margin > 0 else "B" if margin < 0 else "neither (a tie)"
    console.print(
        f"better: {winner}  margin {margin:+.3f}  P(A better) {probability:.3f}",
        highlight=False,
        markup=False,
    )
