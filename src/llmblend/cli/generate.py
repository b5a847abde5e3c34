"""``llmblend generate``: every model answers every instruction; MixInstruct records out (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmblend.cli.common import InstructionsOption, app, console, progress_bars, user_errors
from llmblend.cli.tables import usage_table


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
        int | None, typer.Option(min=1, help="Instructions answered at once (default: from the backends).")
    ] = None,
) -> None:
    """Ask every model in the config to answer every instruction and write MixInstruct records (§2).

    All backends and instructions run concurrently (each backend within its own limit). Each record
    is appended as soon as it is complete; killed and rerun, the command asks only what is missing,
    including generations that failed (each record's "generation" list says which model failed and
    why). Instructions that no model answered go to OUT.failed.jsonl until a rerun succeeds.
    """
    import asyncio

    from llmblend.backends.config import build_slots, load_backend_config
    from llmblend.data.generate import close_backends, failed_path_for, generate_dataset, read_instructions

    with user_errors():
        if instructions.resolve() == out.resolve():
            raise ValueError(f"--out {out} is the instructions file; choose another path")
        items = read_instructions(instructions)[:limit]
        slots = build_slots(load_backend_config(config))

        async def run():
            try:
                with progress_bars() as start:
                    advance = start(f"generating ({len(slots)} candidates each)", len(items))
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

        report = asyncio.run(run())
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
