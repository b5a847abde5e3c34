"""``llmblend``: the command line (typer + rich). One entry point, subcommands by topic."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import track as rich_track
from rich.table import Table

from llmblend.data.convert import CONVERTERS
from llmblend.errors import LlmblendError

if TYPE_CHECKING:
    from llmblend.data.stats import DatasetStats

T = TypeVar("T")

app = typer.Typer(
    help="llmblend: rank and fuse the answers of several LLMs (LLM-Blender and beyond).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build, convert, validate and describe data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _console(stderr: bool = False) -> Console:
    """A console that, when piped or redirected, is wide enough for our tables (rich assumes 80)."""
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, width=width, soft_wrap=True)


console = _console()
err_console = _console(stderr=True)


class FileFormat(StrEnum):
    mixinstruct = "mixinstruct"
    preferences = "preferences"


class Benchmark(StrEnum):
    alpaca_blend = "alpaca-blend"


DataDir = Annotated[
    Path | None,
    typer.Option(help="The shared data folder (default: $LLMBLEND_DATA_DIR, else ../shared/data)."),
]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn llmblend's own errors (and bad values) into a red message and exit code 2."""
    try:
        yield
    except (LlmblendError, ValueError, FileNotFoundError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _progress(items: Iterable[T], description: str, total: int) -> Iterable[T]:
    return rich_track(items, description=description, total=total, console=err_console, transient=True)


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
    dev_fraction: Annotated[float, typer.Option(help="Share of each sub-source that goes to dev.")] = 0.2,
    pairs_per_instruction: Annotated[
        int, typer.Option(help="Training pairs sampled per train instruction.")
    ] = 16,
    min_margin: Annotated[
        float, typer.Option(help="Drop pairs whose oracle scores differ by less (near-ties).")
    ] = 0.1,
) -> None:
    """Build a benchmark from the shared data. Building twice gives byte-identical files."""
    from llmblend.data.alpaca_blend import AlpacaBlendConfig, build_alpaca_blend
    from llmblend.data.sources import locate_data_dir

    with user_errors():
        config = AlpacaBlendConfig(seed, dev_fraction, pairs_per_instruction, min_margin)
        summary = build_alpaca_blend(locate_data_dir(data_dir), out, config, track=_progress)
    p = summary.pairs
    console.print(
        f"alpaca-blend → {out}: train {summary.train}, dev {summary.dev} instructions "
        f"(dev by sub-source {summary.dev_by_subsource})\n"
        f"pairs_train: {p.sampled} pairs from {len(p.models)} models on {p.instructions} train "
        f"instructions; of {p.possible} candidate pairs, {p.identical_text} had identical text and "
        f"{p.near_ties} ({p.near_ties / max(p.possible, 1):.1%}) were near-ties (|Δ oracle| < {min_margin})",
        highlight=False,
    )


_SOURCES = "\n\n".join(f"{c.name} ({c.kind}): {c.description}" for c in CONVERTERS.values())


@data_app.command("convert", epilog=f"Sources:\n\n{_SOURCES}")
def convert(
    source: Annotated[str, typer.Argument(help="Which benchmark (listed below).")],
    out: Annotated[
        Path, typer.Option(help="Output JSONL (MixInstruct, or TRL-style pairs for hh-rlhf/hhh).")
    ],
    data_dir: DataDir = None,
    models: Annotated[
        str | None, typer.Option(help="alpaca-eval only: comma-separated candidate models.")
    ] = None,
) -> None:
    """Convert a benchmark in the shared data folder to llmblend's formats."""
    from llmblend.data.convert import convert as run_convert
    from llmblend.data.sources import locate_data_dir

    with user_errors():
        chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
        count = run_convert(source, locate_data_dir(data_dir), out, chosen)
    console.print(f"{source} → {out}: {count} {CONVERTERS[source].kind}")


def _bar(share: float, width: int = 10) -> str:
    return "█" * round(share * width)


def _per_model_table(stats: DatasetStats) -> Table:
    oracle = stats.oracle
    models = sorted(stats.models, key=lambda m: -m.mean_scores.get(oracle, float("-inf")) if oracle else 0)
    table = Table(
        title=f"Per model: mean scores, best-model share (Fig. 1) by {oracle}", title_justify="left"
    )
    table.add_column("model", no_wrap=True)
    table.add_column("n", justify="right")
    for name in stats.score_names:
        table.add_column(name, justify="right")
    table.add_column("best", justify="right")
    table.add_column("", no_wrap=True)
    for header in ("words", "median", "empty"):
        table.add_column(header, justify="right")
    for m in models:
        scores = [f"{m.mean_scores[n]:.4g}" if n in m.mean_scores else "-" for n in stats.score_names]
        best = [f"{m.best_share:.1%}", _bar(m.best_share)] if oracle else ["-", ""]
        words = [f"{m.mean_words:.0f}", f"{m.median_words:.0f}", str(m.empty)]
        table.add_row(m.model, str(m.candidates), *scores, *best, *words)
    return table


def _selection_table(stats: DatasetStats) -> Table:
    table = Table(title=f"Selecting one answer per instruction: mean {stats.oracle}", title_justify="left")
    table.add_column("rule", no_wrap=True)
    table.add_column(f"mean {stats.oracle}", justify="right")
    for rule, value in sorted((stats.selection or {}).items(), key=lambda kv: -kv[1]):
        table.add_row(rule, f"{value:.4f}", style=None if rule.startswith("model: ") else "bold")
    return table


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
    console.print(_per_model_table(result))
    if result.selection:
        console.print(_selection_table(result))
