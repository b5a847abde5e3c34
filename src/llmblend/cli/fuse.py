"""``llmblend fuse`` (a whole file, resumable) and ``llmblend blend`` (the whole pipeline on one input)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llmblend.cli.common import (
    FuserOption,
    ModelOption,
    PoolOption,
    RankerOption,
    app,
    choose_ranker,
    console,
    err_console,
    progress_bars,
    ranker_listing,
    resumable_output,
    user_errors,
)
from llmblend.cli.tables import blend_table

TopK = Annotated[int, typer.Option(min=1, help="Candidates the fuser reads (the paper: 3).")]


def ranking_strategy(ranker, pool: Path | None) -> str | None:
    """The strategy the pipeline asks the ranker for, as ``llmblend rank`` chooses it; None with a
    pool, whose ranker applies its own (pool-seeded)."""
    from llmblend.engines.recipe import default_strategy

    return None if pool is not None else default_strategy(ranker, None)


Guard = Annotated[bool, typer.Option(help="Return the top candidate when the fused answer loses to it.")]


@app.command("fuse", epilog=ranker_listing())
def fuse_command(
    file: Annotated[
        Path, typer.Argument(help="A MixInstruct JSONL file with candidates (rankings optional).")
    ],
    out: Annotated[Path, typer.Option(help="Where the fused records go (appended; rerun to resume).")],
    fuser: FuserOption = None,
    ranker_spec: RankerOption = None,
    model: ModelOption = None,
    pool: PoolOption = None,
    top_k: TopK = 3,
    guard: Guard = True,
    chunk_size: Annotated[int, typer.Option(min=1, help="Examples fused (and written to OUT) together.")] = 8,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Fuse only the first N examples of FILE (default: all).")
    ] = None,
) -> None:
    """Rank each example's candidates (or reuse its "ranking") and fuse the top-K (LLM-Blender §4).

    Each output record is the input record plus "fused": the returned text, the fuser, whether the
    fused answer or the top candidate was returned (the guard), the margin and the top-K. Rerun the
    same command after an interruption to fuse only what OUT lacks.

    --fuser also takes a fuser on the hub, such as llm-blender/gen_fuser_3b. --ranker judge:MODELS.yaml
    ranks (and guards) with an LLM judge.
    """
    from llmblend.blender import Blender, load_fuser
    from llmblend.fuse.fuse_file import fuse_file

    with user_errors():
        out = resumable_output([file], out, "fused")
        the_fuser = load_fuser(fuser)
        if the_fuser is None:
            raise ValueError("no fuser to run: give --fuser FOLDER or --fuser prompted:models.yaml")
        ranker, _ = choose_ranker(ranker_spec, model, None, 16, pool)
        strategy = ranking_strategy(ranker, pool)
        with (
            Blender([], ranker, the_fuser, top_k=top_k, guard=guard, strategy=strategy) as blender,
            progress_bars() as start,
        ):
            state: dict = {"advance": None, "done": 0}

            def on_chunk(done: int, total: int) -> None:
                if state["advance"] is None:
                    state["advance"] = start(f"fusing ({the_fuser.name})", total)
                state["advance"](done - state["done"])
                state["done"] = done

            report = fuse_file(blender, file, out, limit=limit, chunk_size=chunk_size, on_chunk=on_chunk)
    console.print(
        f"fused {report.fused} examples in {report.seconds:.1f} s ({report.examples_per_second:.2f}/s): "
        f"{report.returned_fused} fused answers returned, {report.returned_top} top candidates (guard), "
        f"{report.failed} failed; {report.already_done} were already done; output: {out}",
        highlight=False,
        markup=False,
    )


@app.command("blend", epilog=ranker_listing())
def blend_command(
    instruction: Annotated[str, typer.Argument(help="The instruction every model answers.")],
    backends: Annotated[
        Path | None, typer.Option(help="models.yaml (default: the packaged local models, 2 samples each).")
    ] = None,
    fuser: FuserOption = None,
    ranker_spec: RankerOption = None,
    model: ModelOption = None,
    pool: PoolOption = None,
    top_k: TopK = 3,
    guard: Guard = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
) -> None:
    """The whole LLM-Blender pipeline for one instruction: N LLMs answer, PairRanker ranks, GenFuser
    fuses the top-K, and the guard keeps the top candidate if the fusion is worse (§3-4).

    With no options it runs offline on the packaged models, the shipped ranker and the shipped fuser.
    --fuser also takes a fuser on the hub, such as llm-blender/gen_fuser_3b.
    """
    import json

    from llmblend.backends.config import build_slots, load_backend_config
    from llmblend.blender import Blender, load_fuser

    with user_errors():
        slots = build_slots(load_backend_config(backends))
        ranker, _ = choose_ranker(ranker_spec, model, None, 16, pool)
        strategy = ranking_strategy(ranker, pool)
        with (
            Blender(slots, ranker, load_fuser(fuser), top_k=top_k, guard=guard, strategy=strategy) as blender,
            err_console.status("asking the models, ranking, fusing..."),
        ):
            result = blender.blend(instruction)
    if json_output:
        console.print_json(json.dumps(result.to_record()))
        return
    console.print(blend_table(result))
    if result.fused is not None:
        fused = result.fused.text if result.fused.ok else f"[fusion failed] {result.fused.error}"
        console.print(f"[bold]fused ({result.fused.fuser}):[/] {escape(fused)}", highlight=False)
    margin = "" if result.guard_margin is None else f" (guard margin fused vs top {result.guard_margin:+.3f})"
    console.print(f"[bold]returned: {result.returned}{margin}[/]\n{escape(result.answer)}", highlight=False)
    t = result.timings
    console.print(
        f"time: generate {t.generate_s:.1f} s, rank {t.rank_s:.1f} s, fuse {t.fuse_s:.1f} s, "
        f"guard {t.guard_s:.1f} s, total {t.total_s:.1f} s",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    if result.error:
        err_console.print(f"[bold red]error:[/] {escape(result.error)}")
        raise typer.Exit(1)
