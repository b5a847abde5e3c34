"""``llmblend best-of-n``: n samples per instruction from one model, ranked, the best marked (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmblend.cli.common import (
    InstructionsOption,
    ModelOption,
    RankerOption,
    RuntimeOption,
    app,
    choose_ranker,
    chunk_progress,
    console,
    err_console,
    progress_bars,
    ranker_listing,
    user_errors,
)


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
) -> None:
    """Sample one model n times per instruction (seeds 0..n-1 on its sampling settings), rank the
    samples with PairRanker (or --ranker) and mark the best: PairRanker as a reward model.

    The samples go to OUT.samples.jsonl as they are generated, then each ranked record goes to OUT:
    the MixInstruct record with every sample, its "ranking" (scores, order) and "best" (the chosen
    sample's index, model, decoding and text). Killed and rerun, the command generates and ranks
    only what is missing. `llmblend eval report OUT` reads the result.
    """
    import asyncio

    from llmblend.backends.config import build_backend, load_backend_config
    from llmblend.blend.best_of_n import best_record, check_sampling, sample_slots
    from llmblend.data.generate import close_backends, generate_dataset, read_instructions
    from llmblend.rank.rank_file import pending_examples, rank_pending

    samples = out.with_name(f"{out.name.removesuffix('.jsonl')}.samples.jsonl")
    with user_errors():
        if instructions.resolve() in (out.resolve(), samples.resolve()):
            raise ValueError(f"--out {out} would overwrite the instructions file; choose another path")
        items = read_instructions(instructions)[:limit]
        parsed = load_backend_config(config)
        spec = _backend_spec(parsed, backend)
        params = spec.sampling_variants(parsed.defaults)[0]
        check_sampling(params, n, spec.display_name)
        slots = sample_slots(build_backend(spec, _threads()), params, n)

        async def generate():
            try:
                with progress_bars() as start:
                    advance = start(f"sampling {spec.display_name} x{n}", len(items))
                    return await generate_dataset(
                        items,
                        slots,
                        samples,
                        on_record=lambda _n: advance(1),
                        on_plan=lambda done: advance(done),
                    )
            finally:
                await close_backends(slots)

        generated = asyncio.run(generate())
        todo, done = pending_examples(samples, out)
        if done:
            err_console.print(f"{out}: {done} instructions already ranked; ranking the {len(todo)} left")
        ranker, label = choose_ranker(ranker_spec, model, runtime, 32, None)
        with progress_bars() as start:
            on_chunk = chunk_progress(start(f"ranking ({strategy})", len(todo)))
            report = rank_pending(
                ranker,
                todo,
                out,
                already_done=done,
                strategy=strategy,
                ranker_label=label,
                on_chunk=on_chunk,
                annotate=best_record,
            )
    console.print(
        f"best of {n} from {spec.display_name}: {generated.candidates} samples generated in "
        f"{generated.wall_s:.1f} s ({generated.failed_slots} failed, recorded); {report.ranked} instructions "
        f"ranked in {report.seconds:.1f} s ({report.n_forward} forwards); {report.already_done} were already "
        f"done; samples: {samples}; output: {out}",
        highlight=False,
        markup=False,
    )


def _backend_spec(config, name: str | None):
    if name is None:
        return config.backends[0]
    for spec in config.backends:
        if spec.display_name == name:
            return spec
    known = ", ".join(spec.display_name for spec in config.backends)
    raise ValueError(f"--backend {name!r} is not in the config; it has: {known}")


def _threads() -> int:
    import os

    return os.cpu_count() or 1
