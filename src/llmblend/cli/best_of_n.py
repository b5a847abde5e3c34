"""``llmblend best-of-n``: n samples per instruction from one model, ranked, the best marked (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmblend.cli.common import (
    AddressOption,
    CpusPerWorker,
    EngineOption,
    GpusPerWorker,
    InstructionsOption,
    ModelOption,
    NumWorkersOption,
    RankerOption,
    RuntimeOption,
    app,
    chunk_progress,
    console,
    engine_settings,
    err_console,
    progress_bars,
    ranker_listing,
    shard_size_option,
    user_errors,
)
from llmblend.engines.recipe import RankerRecipe

if TYPE_CHECKING:
    from llmblend.engines.ray_rank import RayRankReport
    from llmblend.rank.rank_file import RankFileReport

ShardSize = shard_size_option("instructions to sample (then examples to rank: 64)", 16)


@app.command("best-of-n", epilog=ranker_listing())
def best_of_n_command(
    instructions: InstructionsOption,
    out: Annotated[Path, typer.Option(help="The ranked MixInstruct JSONL to write (rerun to resume).")],
    n: Annotated[int, typer.Option("-n", min=1, max=256, help="Samples per instruction.")] = 4,
    backend: Annotated[
        str | None, typer.Option(help="The backend of the config to sample (default: its first).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="models.yaml (default: the packaged local models)."),
    ] = None,
    ranker_spec: RankerOption = None,
    model: ModelOption = None,
    runtime: RuntimeOption = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="How the samples are ranked: sparse-refine (default), bubble (2(n-1) forwards), full, "
            "knockout, max-wins."
        ),
    ] = "sparse-refine",
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N instructions (default: all).")
    ] = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
    num_workers: NumWorkersOption = None,
    cpus_per_worker: CpusPerWorker = None,
    gpus_per_worker: GpusPerWorker = None,
    shard_size: ShardSize = None,
) -> None:
    """Sample one model n times per instruction (seeds 0..n-1 on its sampling settings), rank the
    samples with PairRanker (or --ranker) and mark the best: PairRanker as a reward model.

    The samples go to OUT.samples.jsonl as they are generated, then each ranked record goes to OUT:
    the MixInstruct record with every sample, its "ranking" (scores, order) and "best" (the chosen
    sample's index, model, decoding and text). Killed and rerun, the command generates and ranks
    only what is missing. `llmblend eval report OUT` reads the result.

    With --engine ray, Ray workers draw the samples (the backend's concurrency holding for all of
    them together) and then rank them, as generate and rank do with --engine ray.
    """
    from llmblend.blend.best_of_n import sampled_backend
    from llmblend.cli.generate import generate_locally, generate_on_ray
    from llmblend.data.generate import read_instructions
    from llmblend.engines.recipe import SlotsRecipe

    samples = out.with_name(f"{out.name.removesuffix('.jsonl')}.samples.jsonl")
    with user_errors():
        if instructions.resolve() in (out.resolve(), samples.resolve()):
            raise ValueError(f"--out {out} would overwrite the instructions file; choose another path")
        ray_options = engine_settings(
            engine,
            address=address,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            shard_size=shard_size,
        )
        items = read_instructions(instructions)[:limit]
        # fails now, before any sample, when the backend decodes greedily
        name = sampled_backend(config, backend, n)[0].display_name
        slots = SlotsRecipe(config, backend, n)
        ranker = RankerRecipe(ranker_spec, model, runtime)
        what = f"sampling {name} x{n}"
        if ray_options is None:
            generated = generate_locally(slots, items, samples, None, what)
            report = _rank_locally(ranker, samples, out, strategy)
        else:
            from llmblend.engines.ray_session import RayOptions, ray_session, require_ray

            require_ray("llmblend best-of-n --engine ray")
            workers = RayOptions(**_without_shard_size(ray_options))
            with ray_session(workers.address):  # one Ray for both steps
                generated = generate_on_ray(slots, items, samples, None, what, ray_options)
                report = _rank_on_ray(ranker, samples, out, strategy, ray_options)
    console.print(
        f"best of {n} from {name}: {generated.candidates} samples generated in {generated.wall_s:.1f} s "
        f"({generated.failed_slots} failed, recorded); {report.ranked_now} instructions ranked in "
        f"{report.seconds:.1f} s ({report.n_forward} forwards); {report.already_done} were already done; "
        f"samples: {samples}; output: {out}",
        highlight=False,
        markup=False,
    )


def _rank_locally(recipe: RankerRecipe, samples: Path, out: Path, strategy: str) -> RankFileReport:
    from llmblend.blend.best_of_n import best_record
    from llmblend.rank.rank_file import pending_examples, rank_pending

    todo, done = pending_examples(samples, out)
    if done:
        err_console.print(f"{out}: {done} instructions already ranked; ranking the {len(todo)} left")
    ranker, label = recipe.build()
    with progress_bars() as start:
        on_chunk = chunk_progress(start(f"ranking ({strategy})", len(todo)))
        return rank_pending(
            ranker,
            todo,
            out,
            already_done=done,
            strategy=strategy,
            ranker_label=label,
            on_chunk=on_chunk,
            annotate=best_record,
        )


def _rank_on_ray(
    recipe: RankerRecipe, samples: Path, out: Path, strategy: str, options: dict
) -> RayRankReport:
    from llmblend.blend.best_of_n import best_record
    from llmblend.engines.ray_rank import rank_file_on_ray

    # --shard-size was the sampling's; ranking keeps rank's own default
    return rank_file_on_ray(
        recipe, samples, out, strategy=strategy, annotate=best_record, **_without_shard_size(options)
    )


def _without_shard_size(options: dict) -> dict:
    """The Ray options of the command (``RayOptions`` fields), without --shard-size."""
    return {k: v for k, v in options.items() if k != "shard_size"}
