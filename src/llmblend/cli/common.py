"""What every command module shares: the root app, consoles, errors, progress bars, shared options.

A command module registers its commands on ``app`` (a group: an :class:`~llmblend.cli.helptext.App`
added to ``app``) when imported. Heavy libraries (torch, transformers, onnxruntime, llama.cpp) are
imported inside command bodies, so that ``llmblend --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import track as rich_track

from llmblend.cli.helptext import App, listing
from llmblend.errors import LlmblendError

if TYPE_CHECKING:
    from llmblend.rank.base import Ranker
    from llmblend.rank.pairranker import PairRanker

T = TypeVar("T")

app = App(
    help="llmblend: rank and fuse the answers of several LLMs (LLM-Blender and beyond).",
    pretty_exceptions_enable=False,
)

# ---------------------------------------------------------------- consoles, logging, errors


def _console(stderr: bool = False) -> Console:
    """A console that, when piped or redirected, is wide enough for our tables (rich assumes 80)."""
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, width=width, soft_wrap=True)


console = _console()
err_console = _console(stderr=True)


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


# ---------------------------------------------------------------- progress on stderr


def track(items: Iterable[T], description: str, total: int) -> Iterable[T]:
    """ITEMS, with a transient progress bar on stderr."""
    return rich_track(items, description=description, total=total, console=err_console, transient=True)


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A factory of progress bars on stderr: ``start(description, total)`` → ``advance(n)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bars:

        def start(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(escape(description), total=total)
            return lambda n: bars.advance(task, n)

        yield start


@contextmanager
def training_progress(total_hint: str) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """A progress bar showing loss, train accuracy and the last dev accuracy."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(f"{escape(total_hint)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as bars:
        task = bars.add_task("train", total=None, status="")
        dev = {"value": float("nan")}

        def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
            dev_keys = [k for k in metrics if k.startswith("dev_") and k != "dev_seconds"]
            if dev_keys:
                dev["value"] = metrics[dev_keys[0]]
            parts = [f"loss {metrics['loss']:.4f}"]
            if "train_accuracy" in metrics:
                parts.append(f"acc {metrics['train_accuracy']:.3f}")
            parts.append(f"dev {dev['value']:.3f}")
            bars.update(task, completed=step, total=total, status=" ".join(parts))

        yield on_step


def chunk_progress(advance: Callable[[int], None]) -> Callable[[int, int], None]:
    """An ``on_chunk(done, total)`` callback (cumulative counts, as ``rank_pending`` reports them)
    that moves a progress bar's ``advance(n)`` by what each chunk added."""
    last = {"done": 0}

    def on_chunk(done: int, total: int) -> None:
        advance(done - last["done"])
        last["done"] = done

    return on_chunk


# ---------------------------------------------------------------- options and loaders shared by groups

DataDir = Annotated[
    Path | None,
    typer.Option(help="The shared data folder (default: $LLMBLEND_DATA_DIR, else ../shared/data)."),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="A PairRanker folder or hub id (default: the ranker that ships with llmblend)."
    ),
]
RuntimeOption = Annotated[
    str | None,
    typer.Option(
        help="fp32, bf16, onnx or onnx-int8 (default: onnx-int8 for the shipped ranker, else fp32)."
    ),
]
FuserOption = Annotated[
    str | None,
    typer.Option(
        help="default (the shipped fuser), none, a trained fuser folder or hub id, or "
        "prompted:MODELS.yaml (an LLM endpoint as fuser)."
    ),
]


def load_pair_ranker(model: str | None, runtime: str | None, batch_size: int = 16) -> PairRanker:
    """:func:`llmblend.rank.registry.load_pair_ranker`, imported when a command needs it."""
    from llmblend.rank.registry import load_pair_ranker as load

    return load(model, runtime, batch_size)


def load_ranker_with_pool(
    model: str | None, runtime: str | None, batch_size: int, pool: Path | None
) -> Ranker:
    """:func:`llmblend.rank.registry.load_ranker_with_pool`, imported when a command needs it."""
    from llmblend.rank.registry import load_ranker_with_pool as load

    return load(model, runtime, batch_size, pool)


PoolOption = Annotated[
    Path | None,
    typer.Option(
        help="A pool file (llmblend train pool): rank with the source models' strengths, length and "
        "consensus in one calibrated model; examples whose models the pool does not know rank as without it."
    ),
]


InstructionsOption = Annotated[
    Path,
    typer.Option(
        "--instructions",
        "-i",
        help="JSONL records with 'instruction' (MixInstruct files work) or .txt lines.",
    ),
]
RankerOption = Annotated[
    str | None,
    typer.Option(
        "--ranker",
        "-r",
        help="Rank with this ranker spec (listed below) instead of PairRanker: judge:MODELS.yaml for an "
        "LLM judge, cascade:MODELS.yaml for PairRanker then the judge on its top-m.",
    ),
]
MaxCalls = Annotated[
    int | None, typer.Option(min=1, help="LLM judge rankers: at most N judge calls per example.")
]
MaxTokens = Annotated[
    int | None,
    typer.Option(min=1, help="LLM judge rankers: at most N prompt + completion tokens per example."),
]
MaxSeconds = Annotated[
    float | None,
    typer.Option(min=0.001, help="LLM judge rankers: no new judge round after N seconds per example."),
]


EngineOption = Annotated[
    str,
    typer.Option(help="Where to run: local (in this process) or ray (a pool of Ray workers)."),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --engine ray: the Ray cluster to join from one of its nodes, auto (the one ray "
        "start began on this machine) or HOST:PORT (default: start a local Ray for this command, or "
        "join the cluster of the Ray job it runs in: ray job submit -- llmblend ...)."
    ),
]
NumWorkersOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="With --engine ray: how many workers run at once, each with its own models (default: 1).",
    ),
]
CpusPerWorker = Annotated[
    float | None,
    typer.Option("--worker-cpus", help="With --engine ray: CPUs Ray reserves for each worker (default: 1)."),
]
GpusPerWorker = Annotated[
    float | None,
    typer.Option(
        "--worker-gpus",
        help="With --engine ray: GPUs for each worker, e.g. 1, or 0.5 for two workers on one GPU "
        "(default: 0). A ranker on a GPU wants --runtime bf16 or fp32.",
    ),
]


def input_files_argument(verb: str) -> Any:
    """FILE...: the MixInstruct files a command ``verb``s, read one after another as one input."""
    return Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help=f"MixInstruct JSONL files (.xz/.gz too; candidates need no scores), {verb} in order as "
            "one input: ids must be unique across them.",
        ),
    ]


def resumable_output(files: Sequence[Path], out: Path | None, suffix: str) -> Path:
    """The OUT a command appends to: ``out``, by default the one input file's name with ``.jsonl``
    replaced by ``.SUFFIX.jsonl`` beside it; ValueError when it is an input file, or when several
    inputs leave it unnamed."""
    if out is None:
        if len(files) > 1:
            raise ValueError(f"{len(files)} input files need --out: name the file they all go to")
        out = files[0].with_name(f"{files[0].name.removesuffix('.jsonl')}.{suffix}.jsonl")
    if any(file.resolve() == out.resolve() for file in files):
        raise ValueError(f"--out {out} is an input file; choose another path")
    return out


def shard_size_option(unit: str, default: int) -> Any:
    """The --shard-size option of a command whose shards hold ``unit`` (default ``default``)."""
    return Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"With --engine ray: {unit} per shard, the unit one worker handles at a time "
            f"(default: {default}).",
        ),
    ]


#: The flag of each Ray option whose name is not its keyword's.
_RAY_FLAGS = {"cpus_per_worker": "--worker-cpus", "gpus_per_worker": "--worker-gpus"}


def engine_settings(engine: str, **ray_options: Any) -> dict[str, Any] | None:
    """The Ray options given (None values left out) when ``engine`` is ray; None for local, and a
    clear error for an unknown engine, a bad worker size or Ray options without --engine ray."""
    given = {name: value for name, value in ray_options.items() if value is not None}
    if engine == "ray":
        if given.get("cpus_per_worker", 1) <= 0 or given.get("gpus_per_worker", 0) < 0:
            raise ValueError(
                f"--worker-cpus {given.get('cpus_per_worker', 1)} / --worker-gpus "
                f"{given.get('gpus_per_worker', 0)}: CPUs must be above 0 and GPUs 0 or more"
            )
        return given
    if engine != "local":
        raise ValueError(f"unknown --engine {engine!r}: choose local or ray")
    if given:
        flags = [_RAY_FLAGS.get(name, f"--{name.replace('_', '-')}") for name in given]
        raise ValueError(f"{', '.join(flags)}: only with --engine ray (the local engine has no workers)")
    return None


def choose_ranker(
    spec: str | None, model: str | None, runtime: str | None, batch_size: int, pool: Path | None
) -> tuple[Ranker, str]:
    """The ranker a command runs and its label: the ``--ranker`` spec, else PairRanker (with the pool)."""
    if spec is None:
        label = model or "default"
        return load_ranker_with_pool(
            model, runtime, batch_size, pool
        ), label if pool is None else f"pool:{pool}+{label}"
    given = [name for name, value in (("--model", model), ("--pool", pool), ("--runtime", runtime)) if value]
    if given:
        raise ValueError(f"--ranker {spec} replaces {', '.join(given)}: give one or the other")
    return load_rankers([spec])[spec], spec


def apply_budget(
    ranker: Ranker, max_calls: int | None, max_tokens: int | None, max_seconds: float | None
) -> None:
    """Give a judge ranker the per-example budget of --max-calls/--max-tokens/--max-seconds."""
    from llmblend.rank.budget import Budget

    budget = Budget(max_calls, max_tokens, max_seconds)
    if not budget.limited:
        return
    set_budget = getattr(ranker, "set_budget", None)
    if set_budget is None:
        raise ValueError(
            f"--max-calls, --max-tokens and --max-seconds cap an LLM judge's calls; ranker {ranker.name!r} "
            "makes none (use --ranker judge:MODELS.yaml or cascade:MODELS.yaml)"
        )
    set_budget(budget)


def load_rankers(specs: list[str]) -> dict[str, Ranker]:
    """Each distinct spec's ranker; an import failure becomes an error naming the spec."""
    from llmblend.errors import MissingExtraError
    from llmblend.rank.registry import load_ranker

    if duplicates := sorted({s for s in specs if specs.count(s) > 1}):
        raise ValueError(f"--ranker {', '.join(duplicates)} given more than once")
    rankers = {}
    for spec in specs:
        try:
            rankers[spec] = load_ranker(spec)
        except MissingExtraError:
            raise
        except ImportError as exc:
            raise LlmblendError(f"ranker {spec!r} could not be loaded: {exc}") from exc
    return rankers


def ranker_listing() -> str:
    """The epilog of commands that take ``--ranker SPEC``: every registered ranker, one per line."""
    from llmblend.rank.registry import describe_rankers

    return listing("Rankers (--ranker SPEC):", describe_rankers().splitlines())
