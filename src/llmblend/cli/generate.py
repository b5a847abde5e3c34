"""``llmblend generate``: every model answers every instruction; MixInstruct records out (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmblend.cli.common import (
    AddressOption,
    CpusPerWorker,
    EngineOption,
    GpusPerWorker,
    InstructionsOption,
    NumWorkersOption,
    app,
    console,
    engine_settings,
    progress_bars,
    shard_size_option,
    user_errors,
)
from llmblend.cli.tables import ray_workers_table, usage_table

ShardSize = shard_size_option("instructions", 16)


@app.command("generate")
def generate_command(
    instructions: InstructionsOption,
    out: Annotated[Path, typer.Option(help="The MixInstruct JSONL to write (rerun to resume).")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="models.yaml (see README); default: the packaged local models, 2 samples each.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Answer only the first N instructions (default: all).")
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(min=1, help="Instructions answered at once, per worker (default: from the backends)."),
    ] = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
    num_workers: NumWorkersOption = None,
    cpus_per_worker: CpusPerWorker = None,
    gpus_per_worker: GpusPerWorker = None,
    shard_size: ShardSize = None,
) -> None:
    """Ask every model in the config to answer every instruction and write MixInstruct records (§2).

    All backends and instructions run concurrently (each backend within its own limit). Each record
    is appended as soon as it is complete; killed and rerun, the command asks only what is missing,
    including generations that failed (each record's "generation" list says which model failed and
    why). Instructions that no model answered go to OUT.failed.jsonl until a rerun succeeds.

    With --engine ray, Ray workers answer shards of --shard-size instructions, each worker with its
    own backends; an HTTP backend's concurrency holds for all workers together (one limit for the
    cluster). OUT is the same as a local run's, and a rerun asks only what OUT lacks.
    """
    from llmblend.data.generate import failed_path_for, read_instructions
    from llmblend.engines.recipe import SlotsRecipe

    with user_errors():
        if instructions.resolve() == out.resolve():
            raise ValueError(f"--out {out} is the instructions file; choose another path")
        ray_options = engine_settings(
            engine,
            address=address,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            shard_size=shard_size,
        )
        items = read_instructions(instructions)[:limit]
        recipe = SlotsRecipe(config)
        if ray_options is None:
            report = generate_locally(recipe, items, out, max_in_flight, "generating")
        else:
            report = generate_on_ray(recipe, items, out, max_in_flight, "generating", ray_options)
    console.print(usage_table(report))
    throughput = report.usage.completion_tokens / report.wall_s if report.wall_s else 0.0
    missing = failed_path_for(out)
    console.print(
        f"wrote {report.written} records ({report.candidates} candidates) in {report.wall_s:.1f} s, "
        f"{throughput:.1f} completion tokens/s; {report.already_done} were already done; "
        f"{report.failed_slots} generations failed (recorded; rerun to retry)"
        + (f"; {report.without_candidates} instructions got no answer: {missing}" if missing.exists() else "")
        + f"; output: {out}",
        highlight=False,
        markup=False,
    )


def generate_locally(recipe, items, out: Path, max_in_flight: int | None, what: str):
    """Answer ``items`` with the recipe's slots in this process, with a progress bar; the report."""
    import asyncio

    from llmblend.data.generate import close_backends, generate_dataset

    slots = recipe.build()

    async def run():
        try:
            with progress_bars() as start:
                advance = start(f"{what} ({len(slots)} candidates each)", len(items))
                return await generate_dataset(
                    items,
                    slots,
                    out,
                    max_in_flight=max_in_flight,
                    on_record=lambda _n: advance(1),
                    on_plan=lambda done: advance(done),
                )
        finally:
            await close_backends(slots)

    return asyncio.run(run())


def generate_on_ray(recipe, items, out: Path, max_in_flight: int | None, what: str, options: dict):
    """Answer ``items`` on Ray workers, with a progress bar and a per-worker table; the report."""
    from llmblend.engines.ray_generate import generate_on_ray as run_on_ray
    from llmblend.engines.ray_session import require_ray

    require_ray("llmblend generate --engine ray")
    with progress_bars() as start:
        advance = start(f"{what} on Ray", len(items))
        report = run_on_ray(
            recipe, items, out, max_in_flight=max_in_flight, on_plan=advance, on_shard=advance, **options
        )
    generated = report.generated
    console.print(ray_workers_table(report.workers, generated.written, generated.wall_s, "Ray workers"))
    shards = f"{report.shards} shards answered (at most {report.read_ahead} in Ray at once)"
    console.print(shards, highlight=False, markup=False)
    for name, limit in report.limits.items():
        console.print(
            f"{name}: at most {limit['peak']} of {limit['capacity']} calls in flight across the cluster "
            f"({limit['granted']} calls)",
            highlight=False,
            markup=False,
        )
    return report.generated
