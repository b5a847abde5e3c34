"""``llmblend rank`` (a whole file, resumable, any ranker) and ``llmblend compare`` (two answers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmblend.cli.common import (
    AddressOption,
    CpusPerWorker,
    EngineOption,
    GpusPerWorker,
    MaxCalls,
    MaxSeconds,
    MaxTokens,
    ModelOption,
    NumWorkersOption,
    PoolOption,
    RankerOption,
    RuntimeOption,
    app,
    chunk_progress,
    console,
    engine_settings,
    err_console,
    input_files_argument,
    load_pair_ranker,
    progress_bars,
    ranker_listing,
    resumable_output,
    shard_size_option,
    user_errors,
)
from llmblend.cli.tables import ray_workers_table
from llmblend.engines.recipe import RankerRecipe

if TYPE_CHECKING:
    from llmblend.engines.ray_rank import RayRankReport

ShardSize = shard_size_option("examples", 64)
InputFiles = input_files_argument("ranked")


@app.command("rank", epilog=ranker_listing())
def rank_command(
    files: InputFiles,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the ranked records go (appended; rerun to resume). Default: FILE.ranked.jsonl "
            "(one FILE).",
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
        int | None, typer.Option(min=1, help="Rank only the first N examples (default: all).")
    ] = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
    num_workers: NumWorkersOption = None,
    cpus_per_worker: CpusPerWorker = None,
    gpus_per_worker: GpusPerWorker = None,
    shard_size: ShardSize = None,
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

    With --engine ray, Ray workers rank shards of --shard-size examples, each worker building the
    same ranker; finished shards wait in OUT.shards and are merged into OUT in input order, so OUT is
    the same as a local run's. A rerun after an interruption redoes only the unfinished shards.
    """
    with user_errors():
        out = resumable_output(files, out, "ranked")
        recipe = RankerRecipe(
            ranker_spec, model, runtime, pool, batch_size, max_calls, max_tokens, max_seconds
        )
        ray_options = engine_settings(
            engine,
            address=address,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            shard_size=shard_size,
        )
        job = RankJob(recipe, files, out, strategy, chunk_size, limit)
        if ray_options is None:
            _rank_locally(job)
        else:
            _rank_on_ray(job, ray_options)


@dataclass(frozen=True, slots=True)
class RankJob:
    """What ``llmblend rank`` was asked, whichever engine runs it."""

    recipe: RankerRecipe
    files: list[Path]
    out: Path
    strategy: str | None
    chunk_size: int
    limit: int | None


def _rank_locally(job: RankJob) -> None:
    from llmblend.rank.rank_file import pending_examples, rank_pending

    recipe, out, strategy = job.recipe, job.out, job.strategy
    todo, done = pending_examples(job.files, out, job.limit)
    if done:
        err_console.print(f"{out}: {done} examples already ranked; ranking the {len(todo)} left")
    ranker, label = recipe.build()
    strategy = recipe.strategy_for(ranker, strategy)
    with progress_bars() as start:
        on_chunk = chunk_progress(
            start(f"ranking ({strategy}, {getattr(ranker, 'runtime', ranker.name)})", len(todo))
        )

        report = rank_pending(
            ranker,
            todo,
            out,
            already_done=done,
            strategy=strategy,
            ranker_label=label,
            chunk_size=job.chunk_size,
            on_chunk=on_chunk,
        )
    console.print(_report_line(report, out), highlight=False, markup=False)


def _rank_on_ray(job: RankJob, options: dict) -> None:
    from llmblend.engines.ray_rank import rank_file_on_ray
    from llmblend.engines.ray_session import require_ray

    require_ray("llmblend rank --engine ray")
    report = rank_file_on_ray(
        job.recipe,
        job.files,
        job.out,
        strategy=job.strategy,
        chunk_size=job.chunk_size,
        limit=job.limit,
        **options,
    )
    title = f"Ray workers (strategy {report.strategy or '-'})"
    console.print(ray_workers_table(report.workers, report.ranked_now, report.seconds, title))
    console.print(_ray_line(report, job.out), highlight=False, markup=False)


def _ray_line(report: RayRankReport, out: Path) -> str:
    return (
        f"ranked {report.ranked_now} examples on Ray in {report.seconds:.1f} s "
        f"({report.records_per_second:.2f} records/s; {report.startup_seconds:.1f} s joining Ray, "
        f"{report.n_forward} forwards); {_usage_text(report.usage)}"
        f"{report.shards_run} shards ranked now (at most {report.read_ahead} in Ray at once), "
        f"{report.shards_reused} ({report.reused} records) from an "
        f"earlier run; {report.already_done} were already done, {report.failed} failed; output: {out}"
    )


def _report_line(report, out: Path) -> str:
    line = (
        f"ranked {report.ranked} examples in {report.seconds:.1f} s ({report.examples_per_second:.2f} "
        f"examples/s, {report.forwards_per_second:.1f} forwards/s, {report.n_forward} forwards); "
    )
    line += _usage_text(report.usage)
    return line + f"{report.already_done} were already done, {report.failed} failed; output: {out}"


def _usage_text(usage: dict | None) -> str:
    """What an LLM judge spent, for the report line ("" without a judge)."""
    if usage is None:
        return ""
    u = {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, **usage}
    cost = f", ${u['cost_usd']:.4f}" if "cost_usd" in u else ""
    return (
        f"judge: {u['calls']} calls ({u['cached']} cached), {u['prompt_tokens']} prompt + "
        f"{u['completion_tokens']} completion tokens{cost}; "
    )


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


@app.command("compare-conversations")
def compare_conversations_command(
    conversation_a: Annotated[Path, typer.Argument(help="A JSON list of {role, content} messages.")],
    conversation_b: Annotated[Path, typer.Argument(help="Another, usually sharing the first turns.")],
    model: ModelOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Say which of two conversations PairRanker prefers (LLM-Blender's compare_conversations).

    The turns the two share are the source, of which the ranker keeps the latest within its budget;
    what follows in each is the candidate: the last assistant turn, or the whole continuation when
    the histories differ. P(A better) is calibrated as in compare.
    """
    import json

    from llmblend.rank.calibration import probabilities
    from llmblend.types import Message

    def read(path: Path) -> list[Message]:
        try:
            turns = json.loads(path.read_text(encoding="utf-8"))
            return [Message(t["role"], t["content"]) for t in turns]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a JSON list of {{role, content}} messages ({exc})") from None

    with user_errors():
        a, b = read(conversation_a), read(conversation_b)
        ranker = load_pair_ranker(model, runtime)
        margin = float(ranker.compare_conversations([a], [b])[0])
    probability = float(probabilities([margin], ranker.config.temperature)[0])
    winner = "A" if margin > 0 else "B" if margin < 0 else "neither (a tie)"
    console.print(
        f"better: {winner}  margin {margin:+.3f}  P(A better) {probability:.3f}",
        highlight=False,
        markup=False,
    )
