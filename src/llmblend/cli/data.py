"""``llmblend data ...``: build, convert, validate and describe data sets."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from llmblend.cli.common import DataDir, app, console, track, user_errors
from llmblend.cli.helptext import App, listing
from llmblend.cli.tables import per_model_table, selection_table
from llmblend.data.convert import CONVERTERS

data_app = App(help="Build, convert, validate and describe data sets.")
app.add_typer(data_app, name="data")


class FileFormat(StrEnum):
    mixinstruct = "mixinstruct"
    preferences = "preferences"


class Benchmark(StrEnum):
    alpaca_blend = "alpaca-blend"


@data_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="A MixInstruct or preference JSONL file (.xz/.gz too).")],
    fmt: Annotated[
        FileFormat | None, typer.Option("--format", help="The file's format (default: detected).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Print at most this many problems.")] = 200,
) -> None:
    """Check every line of FILE and list every problem (file:line: field: what is wrong).

    Exit code 0 when the file is good, 1 when it has problems.
    """
    from llmblend.data.validate import validate_file

    with user_errors():
        checked, count, problems = validate_file(file, fmt.value if fmt else None)
    for problem in problems[:limit]:
        console.print(str(problem), markup=False, highlight=False)
    if len(problems) > limit:
        console.print(f"... and {len(problems) - limit} more")
    if problems:
        lines = len({p.line for p in problems})
        console.print(f"[red]{len(problems)} problem(s) on {lines} of {count} line(s)[/] ({checked})")
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {count} {checked} record(s) in {file}")


@data_app.command("build")
def build(
    name: Annotated[Benchmark, typer.Argument(help="The benchmark to build.")],
    out: Annotated[Path, typer.Option(help="Folder to write train.jsonl, dev.jsonl, pairs_train.jsonl.")],
    data_dir: DataDir = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of pair sampling.")] = 0,
    dev_fraction: Annotated[
        float, typer.Option(help="Share of each sub-source that goes to dev (0 to 1).")
    ] = 0.2,
    pairs_per_instruction: Annotated[
        int, typer.Option(help="Training pairs sampled per train instruction.")
    ] = 16,
    min_margin: Annotated[
        float,
        typer.Option(help="Drop pairs whose oracle scores differ by less (near-ties; oracle-score units)."),
    ] = 0.1,
) -> None:
    """Build a benchmark from the shared data. Building twice gives byte-identical files."""
    from llmblend.data.alpaca_blend import AlpacaBlendConfig, build_alpaca_blend
    from llmblend.data.sources import locate_data_dir

    with user_errors():
        config = AlpacaBlendConfig(seed, dev_fraction, pairs_per_instruction, min_margin)
        summary = build_alpaca_blend(locate_data_dir(data_dir), out, config, track=track)
    p = summary.pairs
    console.print(
        f"alpaca-blend → {out}: train {summary.train}, dev {summary.dev} instructions "
        f"(dev by sub-source {summary.dev_by_subsource})\n"
        f"pairs_train: {p.sampled} pairs from {len(p.models)} models on {p.instructions} train "
        f"instructions; of {p.possible} candidate pairs, {p.identical_text} had identical text and "
        f"{p.near_ties} ({p.near_ties / max(p.possible, 1):.1%}) were near-ties (|Δ oracle| < {min_margin})",
        highlight=False,
    )


_SOURCES = listing("Sources:", (f"{c.name} ({c.kind}): {c.description}" for c in CONVERTERS.values()))


@data_app.command("convert", epilog=_SOURCES)
def convert(
    source: Annotated[str, typer.Argument(help="Which benchmark (listed below).")],
    out: Annotated[
        Path, typer.Option(help="Output JSONL (MixInstruct, or TRL-style pairs for hh-rlhf/hhh).")
    ],
    data_dir: DataDir = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="alpaca-eval only: comma-separated candidate models (default: the alpaca-blend pool)."
        ),
    ] = None,
) -> None:
    """Convert a benchmark in the shared data folder to llmblend's formats."""
    from llmblend.data.convert import convert as run_convert
    from llmblend.data.sources import locate_data_dir

    with user_errors():
        chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
        count = run_convert(source, locate_data_dir(data_dir), out, chosen)
    console.print(f"{source} → {out}: {count} {CONVERTERS[source].kind}")


@data_app.command("stats")
def stats(
    file: Annotated[Path, typer.Argument(help="A MixInstruct JSONL file.")],
    oracle: Annotated[
        str | None, typer.Option(help="Score that says which answer is best (default: gpt4_win if present).")
    ] = None,
) -> None:
    """Per-model scores, the best-model distribution, lengths, and simple selection rules."""
    from llmblend.data.mixinstruct import read_mixinstruct
    from llmblend.data.stats import dataset_stats

    with user_errors():
        result = dataset_stats(read_mixinstruct(file), oracle)
    console.print(
        f"{file}: {result.examples} examples, {result.candidates} candidates, "
        f"scores: {', '.join(result.score_names) or 'none'}",
        highlight=False,
    )
    console.print(per_model_table(result))
    if result.selection:
        console.print(selection_table(result))


@data_app.command("held-out")
def held_out(
    config: Annotated[
        Path, typer.Argument(help="The YAML settings a ranker was trained with (llmblend train ranker).")
    ],
    file: Annotated[
        Path, typer.Argument(help="A MixInstruct file with the same instructions (e.g. train.jsonl).")
    ],
    out: Annotated[Path, typer.Option(help="Where the held-out examples go (MixInstruct JSONL).")],
) -> None:
    """Write the examples of FILE whose instructions that ranker's training held out (val_fraction).

    The ranker never trained on them, so they are the data to calibrate it on (llmblend train pool
    --calibrate) without judging it on what it learned.
    """
    from llmblend.data.mixinstruct import read_mixinstruct, write_mixinstruct
    from llmblend.train.config import build_config
    from llmblend.train.ranker import RankerTrainConfig, held_out_sources

    with user_errors():
        sources = held_out_sources(build_config(RankerTrainConfig, config))
        examples = [ex for ex in read_mixinstruct(file) if ex.source in sources]
        if not examples:
            raise ValueError(f"{file} holds none of the {len(sources)} instructions {config} held out")
        count = write_mixinstruct(examples, out)
    console.print(
        f"{count} of the {len(sources)} held-out instructions are in {file}; wrote {out}",
        highlight=False,
        markup=False,
    )


class PairMode(StrEnum):
    best_worst = "best-worst"
    top_vs_rest = "top-vs-rest"
    all = "all"


@data_app.command("pairs")
def pairs(
    file: Annotated[
        Path,
        typer.Argument(
            help="A MixInstruct JSONL file ranked by llmblend rank, or with oracle scores (with --by)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where the preference pairs go (TRL JSONL).")],
    mode: Annotated[
        PairMode,
        typer.Option(
            metavar="<mode>",
            help="best-worst: one pair per example; top-vs-rest: the best against each other "
            "candidate; all: every two candidates.",
        ),
    ] = PairMode.best_worst,
    min_margin: Annotated[
        float,
        typer.Option(min=0.0, help="Drop pairs whose scores differ by less (in the score's units)."),
    ] = 0.0,
    by: Annotated[
        str | None,
        typer.Option(
            help="Order candidates by this oracle score (e.g. gpt4_win) instead of the ranking field."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Read only the first N records.")] = None,
) -> None:
    """Write preference pairs for DPO (TRL's format) from a ranked or oracle-scored file.

    Each example's candidates are ordered by score, best first; equal scores keep candidate
    order. A text instruction gives TRL's standard form, a conversation its conversational form.
    Each pair records the example, both models, decoding methods and scores, the margin and the
    ranker (or oracle:NAME).

    Records without a ranking, or whose ranking failed, are skipped; pairs with identical texts
    or a margin below --min-margin are dropped. Both are counted in the summary. The same input
    gives the same output, byte for byte.
    """
    from llmblend.data.dpo_pairs import PairsConfig, write_dpo_pairs

    with user_errors():
        config = PairsConfig(mode.value, min_margin, by, limit)
        summary = write_dpo_pairs(file, out, config)
    console.print(f"{file} → {out}: {summary.line()}", highlight=False, markup=False)
