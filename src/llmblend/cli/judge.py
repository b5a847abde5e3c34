"""``llmblend eval judge``: an LLM judge's GPT-Rank verdicts on every pair of a file (LLM-Blender §5)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmblend.cli.common import (
    AddressOption,
    CpusPerWorker,
    EngineOption,
    GpusPerWorker,
    NumWorkersOption,
    chunk_progress,
    console,
    engine_settings,
    err_console,
    input_files_argument,
    progress_bars,
    resumable_output,
    shard_size_option,
    user_errors,
)
from llmblend.cli.eval import eval_app
from llmblend.cli.tables import ray_workers_table, rich_table

if TYPE_CHECKING:
    from llmblend.eval.judge import JudgeUsage
    from llmblend.eval.judge_file import JudgedSummary

ShardSize = shard_size_option("examples", 16)
InputFiles = input_files_argument("judged")


@eval_app.command("judge")
def eval_judge(
    files: InputFiles,
    judge: Annotated[
        str,
        typer.Option(
            metavar="YAML[#NAME]",
            help="models.yaml of the judge and, after #, its backend (default: the judge: section's "
            "backend, else the first).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the judged records go (appended; rerun to resume). Default: FILE.judged.jsonl "
            "(one FILE)."
        ),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Examples whose pairs go to the judge (and to OUT) together.")
    ] = 4,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Judge only the first N examples (default: all).")
    ] = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
    num_workers: NumWorkersOption = None,
    cpus_per_worker: CpusPerWorker = None,
    gpus_per_worker: GpusPerWorker = None,
    shard_size: ShardSize = None,
) -> None:
    """Judge every pair of each example's candidates in both orders with an LLM judge (GPT-Rank,
    LLM-Blender §5) and write the verdicts to OUT as MixInstruct's cmp_results.

    The judge's settings (prompt, reply tokens, cache) come from the file's judge: section. A
    verdict that flips with the order is a tie. Each record also gets "judge": the pairs, decided,
    ties, inconsistent and failed verdicts, and, when FILE already had cmp_results (MixInstruct's
    ChatGPT verdicts), how often the judge agreed with them. eval report, train pool and train
    ranker read OUT as they read MixInstruct; rank -r judge: and train pool --judge reuse the cache.

    OUT is appended chunk by chunk; rerunning the same command after an interruption judges only
    what OUT lacks. A failed call leaves its pair without a verdict and is counted, not fatal. With
    --engine ray, Ray workers judge shards of --shard-size examples, the judge's concurrency holds
    for all of them together, and OUT is the same as a local run's.
    """
    from llmblend.eval.judge_file import summarize

    with user_errors():
        out = resumable_output(files, out, "judged")
        ray_options = engine_settings(
            engine,
            address=address,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            shard_size=shard_size,
        )
        if ray_options is None:
            _judge_locally(judge, files, out, chunk_size, limit)
        else:
            _judge_on_ray(judge, files, out, chunk_size, limit, ray_options)
        summary = summarize(out)
    console.print(rich_table(_standing_cells(summary), f"{out}: {summary.examples} examples judged"))
    if summary.recorded_examples:
        console.print(_agreement_line(summary), highlight=False, markup=False)


def _judge_locally(spec: str, files: list[Path], out: Path, chunk_size: int, limit: int | None) -> None:
    from llmblend.eval.judge_file import judge_label, judge_pending
    from llmblend.rank.judge_ranker import judge_from_spec
    from llmblend.rank.rank_file import pending_examples

    judge, _ = judge_from_spec(spec)
    todo, done = pending_examples(files, out, limit)
    if done:
        err_console.print(f"{out}: {done} examples already judged; judging the {len(todo)} left")
    with progress_bars() as start:
        on_chunk = chunk_progress(start(f"judging ({judge.backend.name})", len(todo)))
        report = judge_pending(
            judge,
            todo,
            out,
            already_done=done,
            judge_label=judge_label(spec),
            chunk_size=chunk_size,
            on_chunk=on_chunk,
        )
    console.print(
        f"judged {report.judged} examples in {report.seconds:.1f} s ({report.examples_per_second:.3g} "
        f"examples/s); {_usage_text(report.usage)}; {report.already_done} were already done, "
        f"{report.failed} with a failed pair; output: {out}",
        highlight=False,
        markup=False,
    )


def _judge_on_ray(
    spec: str, files: list[Path], out: Path, chunk_size: int, limit: int | None, options: dict
) -> None:
    from llmblend.engines.ray_judge_file import judge_file_on_ray
    from llmblend.engines.ray_session import require_ray

    require_ray("llmblend eval judge --engine ray")
    report = judge_file_on_ray(spec, files, out, chunk_size=chunk_size, limit=limit, **options)
    console.print(ray_workers_table(report.workers, report.judged_now, report.seconds, "Ray workers"))
    console.print(
        f"judged {report.judged_now} examples on Ray in {report.seconds:.1f} s "
        f"({report.records_per_second:.3g} records/s; {report.startup_seconds:.1f} s joining Ray); "
        f"{_usage_text(report.usage)}; {report.shards_run} shards judged now, {report.shards_reused} "
        f"({report.reused} records) from an earlier run; {report.already_done} were already done, "
        f"{report.failed} with a failed pair; output: {out}",
        highlight=False,
        markup=False,
    )


def _agreement_line(summary: JudgedSummary) -> str:
    """How often the judge agreed with the verdicts FILE already had (MixInstruct's cmp_results)."""
    if not summary.recorded_pairs:
        return (
            f"agreement with FILE's cmp_results: no pair of its {summary.recorded_examples} examples "
            "with verdicts was decided by both"
        )
    return (
        f"agreement with FILE's cmp_results: {summary.agreement:.3f} of {summary.recorded_pairs} pairs "
        "both decided"
    )


def _usage_text(usage: JudgeUsage) -> str:
    return (
        f"judge: {usage.calls} calls ({usage.cached} cached), {usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} completion tokens, {usage.failures} failures"
    )


def _standing_cells(summary: JudgedSummary) -> tuple[list[str], list[list[str]]]:
    """Each model's mean GPT-Rank (1 = best), wins, losses, ties and win rate, best first."""
    headers = ["model", "examples", "GPT-Rank", "wins", "losses", "ties", "win rate"]
    rows = [
        [
            name,
            str(s.examples),
            f"{s.mean_rank:.2f}",
            str(s.wins),
            str(s.losses),
            str(s.ties),
            "-" if s.wins + s.losses == 0 else f"{s.win_rate:.3f}",
        ]
        for name, s in summary.models.items()
    ]
    return headers, rows
