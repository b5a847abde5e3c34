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


# ---------------------------------------------------------------- eval: rankers (LLM-Blender §5)

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmblend.rank.base import Ranker

eval_app = typer.Typer(help="Evaluate rankers, judges and ensembles (LLM-Blender §5).", no_args_is_help=True)
DEFAULT_REPORT_METRICS = ("bertscore", "bleu", "rougeL")
app.add_typer(eval_app, name="eval")


def _ranker_list() -> str:
    from llmblend.rank.registry import describe_rankers

    return "\n\n".join(describe_rankers().splitlines())


def _load_rankers(specs: list[str]) -> dict[str, Ranker]:
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


def _rich_table(cells: tuple[list[str], list[list[str]]], title: str) -> Table:
    headers, rows = cells
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


@contextmanager
def _progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A factory of progress bars on stderr: ``start(description, total)`` → ``advance(n)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bars:

        def start(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(escape(description), total=total)
            return lambda n: bars.advance(task, n)

        yield start


@eval_app.command("ranker", epilog=f"Rankers (--ranker SPEC):\n\n{_ranker_list()}")
def eval_ranker(
    file: Annotated[Path, typer.Argument(help="A MixInstruct JSONL file with oracle scores.")],
    ranker: Annotated[
        list[str], typer.Option("--ranker", "-r", help="A ranker spec (listed below); repeat to compare.")
    ],
    oracle: Annotated[
        str | None, typer.Option(help="The score that says which answer is best (default: gpt4_win).")
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="Ranking strategy, passed to every ranker.")] = None,
    best_model: Annotated[
        str | None, typer.Option(help="The single model to beat (default: highest mean oracle score).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N instructions (and first N pairs).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the tables to this Markdown file.")] = None,
    pairs: Annotated[
        Path | None, typer.Option(help="A preference-pair JSONL file: also report pairwise accuracy on it.")
    ] = None,
) -> None:
    """Rank FILE's candidates with each ranker and compare them with the oracle (LLM-Blender §5).

    Table 2: mean oracle score of each top-1 pick, % as good as the best single model, % in the oracle top 3.

    Table 3: Pearson, Spearman, footrule and pairwise accuracy against the oracle per instruction.

    With --pairs, also the accuracy on those preference pairs. --out writes every table as Markdown.
    """
    from itertools import islice

    from llmblend.data.mixinstruct import read_mixinstruct
    from llmblend.data.preferences import read_preferences
    from llmblend.eval.ranking import correlation_cells, evaluate_rankers, pairwise_cells, selection_cells

    with user_errors():
        examples = list(islice(read_mixinstruct(file), limit))
        pair_list = list(islice(read_preferences(pairs), limit)) if pairs else None
        rankers = _load_rankers(ranker)
        with _progress_bars() as start:
            result = evaluate_rankers(
                examples,
                rankers,
                oracle=oracle,
                best_model=best_model,
                strategy=strategy,
                pairs=pair_list,
                progress=start,
            )
    sel = result.selection
    how = "given" if sel.best_model_given else f"highest mean {sel.oracle}"
    console.print(
        f"{file}: {result.instructions} instructions evaluated, {result.left_out} left out (fewer than 2 "
        f"candidates with {result.oracle}); best single model: {sel.best_model} ({how}, "
        f"mean {sel.best_model_mean:.4f})",
        highlight=False,
        markup=False,
    )
    console.print(_rich_table(selection_cells(sel), "Selecting the top-1 candidate (Table 2)"))
    console.print(
        _rich_table(
            correlation_cells(result.correlations, result.candidate_pairs),
            "Agreement with the oracle, mean per instruction (Table 3); footrule 0 = same order, 1 = reverse",
        )
    )
    if result.preferences:
        console.print(_rich_table(pairwise_cells(result.preferences), f"Pairwise accuracy on {pairs}"))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.to_markdown(), encoding="utf-8")
        console.print(f"wrote {out}", highlight=False, markup=False)


def _report_metrics(
    names: list[str], bertscore_model: str | None, bartscore_model: str | None, bleurt: str | None
):
    from llmblend.eval.metrics import get_metric

    names = list(dict.fromkeys(names + ["bartscore"] * bool(bartscore_model) + ["bleurt"] * bool(bleurt)))
    options = {
        "bertscore": {"model": bertscore_model} if bertscore_model else {},
        "bartscore": {"model": bartscore_model} if bartscore_model else {},
        "bleurt": {"checkpoint": bleurt} if bleurt else {},
    }
    return {name: get_metric(name, **options.get(name, {})) for name in names}


@eval_app.command("report", epilog=f"Rankers (--ranker SPEC):\n\n{_ranker_list()}")
def eval_report(
    file: Annotated[
        Path, typer.Argument(help="A MixInstruct JSONL file (ranked and fused outputs optional).")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, methods.csv, correlations.csv and PNGs.")
    ] = Path("report"),
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Reference metric (repeat): bertscore, bleu, chrf, rouge1/2/L, ..."),
    ] = None,
    ranker: Annotated[
        list[str] | None, typer.Option("--ranker", "-r", help="Also rank with this ranker spec (repeat).")
    ] = None,
    pair_ranker: Annotated[
        str | None,
        typer.Option(help="A PairRanker ('default' or a folder): plot quality vs comparisons per strategy."),
    ] = None,
    oracle: Annotated[
        str | None, typer.Option(help="The score that says which answer is best (default: from the file).")
    ] = None,
    best_model: Annotated[
        str | None, typer.Option(help="The single model to beat (default: best mean).")
    ] = None,
    bertscore_model: Annotated[
        str | None, typer.Option(help="BERTScore model folder (default: the packaged MiniLM, layer 6).")
    ] = None,
    bartscore_model: Annotated[
        str | None, typer.Option(help="A seq2seq model folder or hub id: adds BARTScore.")
    ] = None,
    bleurt_checkpoint: Annotated[
        str | None, typer.Option(help="A BLEURT checkpoint folder: adds BLEURT.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N instructions.")] = None,
) -> None:
    """The LLM-Blender results report of FILE (§5): a table per model and per method, correlations, plots.

    Methods: the oracle pick by the file's oracle score and by each reference metric, random, each
    ranker's top-1 (the "ranking" field written by `llmblend rank`, and every --ranker), and fused
    answers (a "fused" field). Columns: reference metrics against each record's "output",
    GPT-Rank (from cmp_results) or oracle rank, % >= the best model, % in the oracle top 3.
    """
    from itertools import islice

    from llmblend.data.mixinstruct import read_mixinstruct
    from llmblend.eval.report import (
        build_report,
        oracle_plots,
        quality_vs_comparisons_plot,
        strategy_points,
        with_gpt_rank_scores,
    )

    with user_errors():
        examples = with_gpt_rank_scores(list(islice(read_mixinstruct(file), limit)))
        metrics = _report_metrics(
            list(metric or DEFAULT_REPORT_METRICS), bertscore_model, bartscore_model, bleurt_checkpoint
        )
        rankers = _load_rankers(list(ranker or []))
        with _progress_bars() as start:
            rankings = {name: r.rank(examples) for name, r in rankers.items()}
            report = build_report(
                examples, metrics, rankings=rankings, oracle=oracle, best_model=best_model, progress=start
            )
            if report.oracle:
                report.plots.update(oracle_plots(examples, report.oracle, out))
            if pair_ranker and report.oracle:
                model = _pair_ranker(None if pair_ranker == "default" else pair_ranker, None, 32)
                points = strategy_points(model.pair_logits, examples, report.oracle)
                wanted = {f"oracle ({report.oracle})": "oracle", f"model: {report.best_model}": "best model"}
                wanted["random (expected)"] = "random"
                references = {wanted[r.method]: r.oracle_score for r in report.rows if r.method in wanted}
                report.plots["quality vs comparisons"] = quality_vs_comparisons_plot(
                    points, references, report.oracle, out / "quality_vs_comparisons.png"
                )
        paths = report.write(out)
    console.print(
        _rich_table(report.results_cells(), f"{file}: {report.instructions} instructions (Table 2 layout)")
    )
    if report.correlations:
        console.print(
            _rich_table(report.correlation_cells(), f"correlation with {report.oracle} (Table 3 layout)")
        )
    written = [*paths.values(), *report.plots.values()]
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False, markup=False)


def _judge(config: Path, prompt: str, cache: Path | None):
    from llmblend.backends.config import build_backend, load_backend_config
    from llmblend.eval.judge import PairwiseJudge

    spec = load_backend_config(config).backends[0]
    return PairwiseJudge(build_backend(spec, default_threads=os.cpu_count() or 1), prompt, cache_path=cache)


def _agreement_epilog() -> str:
    from llmblend.eval.agreement import LABEL_SETS

    return "Label sets (--labels):\n\n" + "\n\n".join(f"{k}: {v}" for k, v in LABEL_SETS.items())


@eval_app.command("agreement", epilog=_agreement_epilog())
def eval_agreement(
    labels: Annotated[
        list[str],
        typer.Option("--labels", "-l", help="A label set (below) or a preference JSONL file; repeat."),
    ],
    ranker: Annotated[
        list[str] | None, typer.Option("--ranker", "-r", help="A ranker spec to measure (repeat).")
    ] = None,
    judge: Annotated[
        Path | None,
        typer.Option(help="models.yaml whose first backend judges the pairs (GPT-Rank style, both orders)."),
    ] = None,
    judge_prompt: Annotated[
        str, typer.Option(help="gpt-rank (LLM-Blender) or mt-bench (pair-v2).")
    ] = "gpt-rank",
    judge_cache: Annotated[
        Path | None, typer.Option(help="JSONL cache of judge verdicts (rerun to resume after a kill).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N pairs of each set.")] = None,
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="Also write the table as Markdown here.")] = None,
) -> None:
    """Agreement of rankers and LLM judges with human or GPT-4 labels on answer pairs (§5).

    accuracy = agreeing / pairs both the label and the method decide. Ties are reported apart:
    "said tie" counts decided labels the method called a tie; "ties matched" counts tie labels it
    also called a tie. Judges ask both orders; a verdict that flips with the order is a tie.
    """
    from llmblend.data.sources import locate_data_dir
    from llmblend.eval.agreement import agreement, judge_predictions, load_labels, ranker_predictions
    from llmblend.eval.ranking import fmt_percent, markdown_table

    with user_errors():
        if not ranker and judge is None:
            raise ValueError("nothing to measure: give --ranker SPEC and/or --judge models.yaml")
        folder = locate_data_dir(data_dir)
        sets = {name: load_labels(name, folder)[:limit] for name in labels}
        methods = _load_rankers(list(ranker or []))
        the_judge = _judge(judge, judge_prompt, judge_cache) if judge else None
        results = []
        for name, pairs in sets.items():
            for spec, model in methods.items():
                results.append(agreement(name, spec, pairs, ranker_predictions(model, pairs)))
            if the_judge is not None:
                label = f"judge: {the_judge.backend.name} ({judge_prompt})"
                results.append(agreement(name, label, pairs, judge_predictions(the_judge, pairs)))
    headers = [
        "labels",
        "method",
        "pairs",
        "accuracy",
        "decided",
        "said tie",
        "errors",
        "tie labels",
        "ties matched",
    ]
    rows = [
        [
            r.labels,
            r.method,
            str(r.pairs),
            fmt_percent(r.accuracy),
            str(r.decided),
            str(r.predicted_ties),
            str(r.errors),
            str(r.tie_labels),
            str(r.ties_matched),
        ]
        for r in results
    ]
    console.print(_rich_table((headers, rows), "agreement with the labels (ties apart)"))
    if the_judge is not None:
        u = the_judge.usage
        console.print(
            f"judge: {u.calls} calls, {u.cached} cached, {u.prompt_tokens} prompt + "
            f"{u.completion_tokens} completion tokens, {u.failures} failures",
            highlight=False,
            markup=False,
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown_table((headers, rows)) + "\n", encoding="utf-8")


# ---- llmblend rank / compare ------------------------------------------------------------------

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


def _pair_ranker(model: str | None, runtime: str | None, batch_size: int = 16):
    """The PairRanker ``--model`` names, or the packaged default one."""
    from llmblend.rank.pairranker import PairRanker

    options = {"batch_size": batch_size, **({"runtime": runtime} if runtime else {})}
    if model is None:
        return PairRanker.default(**options)
    return PairRanker.from_pretrained(model, **options)


@app.command("rank")
def rank_command(
    file: Annotated[Path, typer.Argument(help="A MixInstruct JSONL file (candidates need no scores).")],
    out: Annotated[Path, typer.Option(help="Where the ranked records go (appended; rerun to resume).")],
    model: ModelOption = None,
    strategy: Annotated[
        str, typer.Option(help="full/max-logits, max-wins, bubble, knockout or sparse-refine.")
    ] = "sparse-refine",
    runtime: RuntimeOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per forward pass.")] = 32,
    chunk_size: Annotated[int, typer.Option(min=1, help="Examples ranked (and written) together.")] = 16,
    limit: Annotated[int | None, typer.Option(min=1, help="Rank only the first N examples of FILE.")] = None,
) -> None:
    """Rank every example's candidates with PairRanker (LLM-Blender §3) and write them to OUT.

    Each output record is the input record plus "ranking": the candidate order (best first), one
    score per candidate, the forward passes used and any error. OUT is appended chunk by chunk;
    rerunning the same command after an interruption ranks only what OUT lacks.
    """
    from llmblend.rank.rank_file import pending_examples, rank_pending

    with user_errors():
        if file.resolve() == out.resolve():
            raise ValueError(f"--out {out} is the input file; choose another path")
        todo, done = pending_examples(file, out, limit)
        if done:
            err_console.print(f"{out}: {done} examples already ranked; ranking the {len(todo)} left")
        ranker = _pair_ranker(model, runtime, batch_size)
        label = model or "default"
        with _progress_bars() as start:
            advance = start(f"ranking ({strategy}, {ranker.runtime})", len(todo))
            last = {"done": 0}

            def on_chunk(ranked: int, total: int) -> None:
                advance(ranked - last["done"])
                last["done"] = ranked

            report = rank_pending(
                ranker,
                todo,
                out,
                already_done=done,
                strategy=strategy,
                ranker_label=label,
                chunk_size=chunk_size,
                on_chunk=on_chunk,
            )
    console.print(
        f"ranked {report.ranked} examples in {report.seconds:.1f} s "
        f"({report.examples_per_second:.2f} examples/s, {report.forwards_per_second:.1f} pair forwards/s, "
        f"{report.n_forward} forwards); "
        f"{report.already_done} were already done, {report.failed} failed; output: {out}",
        highlight=False,
        markup=False,
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

    The margin is a logit: > 0 favours A; sigmoid(margin) is the ranker's probability that A is better.
    """
    import math

    with user_errors():
        ranker = _pair_ranker(model, runtime)
        margin = float(ranker.compare([instruction], [answer_a], [answer_b])[0])
    probability = 1 / (1 + math.exp(-margin))
    winner = "A" if margin > 0 else "B" if margin < 0 else "neither (a tie)"
    console.print(
        f"better: {winner}  margin {margin:+.3f}  P(A better) {probability:.3f}",
        highlight=False,
        markup=False,
    )


# ---- llmblend generate ------------------------------------------------------------------------


def _usage_table(report) -> Table:
    headers = ["backend", "calls", "failures", "prompt tok", "completion tok", "latency p50", "p95"]
    rows = [
        [
            str(row["backend"]),
            str(row["calls"]),
            str(row["failures"]),
            str(row["prompt_tokens"]),
            str(row["completion_tokens"]),
            f"{row['latency_p50_s']:.2f} s",
            f"{row['latency_p95_s']:.2f} s",
        ]
        for row in report.usage.rows()
    ]
    return _rich_table((headers, rows), "per backend (this run)")


@app.command("generate")
def generate_command(
    instructions: Annotated[
        Path,
        typer.Option(
            "--instructions",
            "-i",
            help="JSONL records with 'instruction' (MixInstruct files work) or .txt lines.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="The MixInstruct JSONL to write (rerun to resume).")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="models.yaml (see README); default: the packaged local models, 2 samples each.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Answer only the first N instructions.")] = None,
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
                with _progress_bars() as start:
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
    console.print(_usage_table(report))
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


# ---- llmblend fuse / blend ------------------------------------------------------------------------

FuserOption = Annotated[
    str | None,
    typer.Option(
        help="default (the shipped fuser), none, a trained fuser folder or hub id (e.g. "
        "llm-blender/gen_fuser_3b), or prompted:MODELS.yaml (an LLM endpoint as fuser)."
    ),
]


@app.command("fuse")
def fuse_command(
    file: Annotated[
        Path, typer.Argument(help="A MixInstruct JSONL file with candidates (rankings optional).")
    ],
    out: Annotated[Path, typer.Option(help="Where the fused records go (appended; rerun to resume).")],
    fuser: FuserOption = None,
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option(min=1, help="Candidates the fuser reads (the paper: 3).")] = 3,
    guard: Annotated[
        bool, typer.Option(help="Return the top candidate when the fused answer loses to it.")
    ] = True,
    chunk_size: Annotated[int, typer.Option(min=1, help="Examples fused (and written) together.")] = 8,
    limit: Annotated[int | None, typer.Option(min=1, help="Fuse only the first N examples of FILE.")] = None,
) -> None:
    """Rank each example's candidates (or reuse its "ranking") and fuse the top-K (LLM-Blender §4).

    Each output record is the input record plus "fused": the returned text, the fuser, whether the
    fused answer or the top candidate was returned (the guard), the margin and the top-K. Rerun the
    same command after an interruption to fuse only what OUT lacks.
    """
    from llmblend.blender import Blender, load_fuser
    from llmblend.fuse.fuse_file import fuse_file

    with user_errors():
        if file.resolve() == out.resolve():
            raise ValueError(f"--out {out} is the input file; choose another path")
        the_fuser = load_fuser(fuser)
        if the_fuser is None:
            raise ValueError("no fuser to run: give --fuser FOLDER or --fuser prompted:models.yaml")
        ranker = _pair_ranker(model, None)
        with Blender([], ranker, the_fuser, top_k=top_k, guard=guard) as blender, _progress_bars() as start:
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


def _blend_table(result) -> Table:
    table = Table(title="candidates (best first)", title_justify="left", show_lines=True)
    for header, justify in (("rank", "right"), ("model", "left"), ("decoding", "left"), ("score", "right")):
        table.add_column(header, justify=justify, no_wrap=header != "decoding")
    table.add_column("answer", ratio=1)
    order = list(result.ranking) + [i for i in range(len(result.candidates)) if i not in result.ranking]
    for i in order:
        c = result.candidates[i]
        text = c.text if c.error is None else f"[failed] {c.error}"
        score = "" if c.score is None else f"{c.score:+.3f}"
        mark = " *" if i in result.top_k else ""
        table.add_row(f"{c.rank or '-'}{mark}", c.model, c.decoding_method, score, escape(text[:600]))
    return table


@app.command("blend")
def blend_command(
    instruction: Annotated[str, typer.Argument(help="The instruction every model answers.")],
    backends: Annotated[
        Path | None, typer.Option(help="models.yaml (default: the packaged local models, 2 samples each).")
    ] = None,
    fuser: FuserOption = None,
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option(min=1, help="Candidates the fuser reads (the paper: 3).")] = 3,
    guard: Annotated[
        bool, typer.Option(help="Return the top candidate when the fused answer loses to it.")
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
) -> None:
    """The whole LLM-Blender pipeline for one instruction: N LLMs answer, PairRanker ranks, GenFuser
    fuses the top-K, and the guard keeps the top candidate if the fusion is worse (§3-4).

    With no options it runs offline on the packaged models, the shipped ranker and the shipped fuser.
    """
    import json

    from llmblend.backends.config import build_slots, load_backend_config
    from llmblend.blender import Blender, load_fuser

    with user_errors():
        slots = build_slots(load_backend_config(backends))
        with (
            Blender(slots, _pair_ranker(model, None), load_fuser(fuser), top_k=top_k, guard=guard) as blender,
            err_console.status("asking the models, ranking, fusing..."),
        ):
            result = blender.blend(instruction)
    if json_output:
        console.print_json(json.dumps(result.to_record()))
        return
    console.print(_blend_table(result))
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


# ---- llmblend train ... -----------------------------------------------------------------------

train_app = typer.Typer(help="Train rankers (PairRanker and baselines).", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _settings_help(settings_class: type | None = None) -> str:
    from dataclasses import MISSING, fields

    from llmblend.train.ranker import RankerTrainConfig

    def default(f) -> str:
        return "required" if f.default is MISSING else f"default {f.default!r}"

    chosen = settings_class or RankerTrainConfig
    return "\n\n".join(f"{f.name} ({default(f)}): {f.metadata['help']}" for f in fields(chosen))


def _fuser_settings_help() -> str:
    from llmblend.train.fuser import FuserTrainSettings

    return _settings_help(FuserTrainSettings)


@contextmanager
def _training_progress(total_hint: str) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
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


@train_app.command("ranker", epilog=f"Settings (YAML keys and --set names):\n\n{_settings_help()}")
def train_ranker_command(
    config_file: Annotated[
        Path | None, typer.Argument(help="A YAML file of settings (e.g. configs/pairranker-minilm-cpu.yaml).")
    ] = None,
    train_file: Annotated[
        str | None, typer.Option(help="MixInstruct file with candidate scores, or a preference-pair file.")
    ] = None,
    dev_file: Annotated[str | None, typer.Option(help="File for pairwise accuracy during training.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Where best/, last/ and the checkpoint go.")] = None,
    backbone: Annotated[str | None, typer.Option(help="HF encoder folder or hub id.")] = None,
    architecture: Annotated[
        str | None, typer.Option(help="pair-ranker (default), pointwise or dual-encoder.")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the training pairs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per micro-batch.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak AdamW learning rate.")] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bf16 autocast.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if present).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any other setting as KEY=VALUE (listed below).")
    ] = None,
) -> None:
    """Train a ranker on pairs (LLM-Blender §3.1): YAML settings first, then these flags on top.

    Rerunning the same command after an interruption resumes from OUTPUT_DIR/checkpoint.pt.
    The best model on the dev file is kept in OUTPUT_DIR/best, the latest in OUTPUT_DIR/last.
    """
    from llmblend.train.config import build_config, parse_assignments
    from llmblend.train.ranker import RankerTrainConfig, train_ranker

    with user_errors():
        flags = dict(
            train_file=train_file,
            dev_file=dev_file,
            output_dir=output_dir,
            backbone=backbone,
            architecture=architecture,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            bf16=bf16,
            device=device,
        )
        extra = parse_assignments(set_ or [])
        if clash := sorted(k for k in extra if flags.get(k.replace("-", "_")) is not None):
            raise LlmblendError(f"{', '.join(clash)} given both as a flag and with --set; give it once")
        config = build_config(RankerTrainConfig, config_file, **extra, **flags)
        with _training_progress(f"training {config.architecture}") as on_step:
            result = train_ranker(config, on_step=on_step)
    best = "n/a" if result.best_dev_accuracy is None else f"{result.best_dev_accuracy:.4f}"
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    console.print(
        f"trained {result.steps} steps{resumed}; best dev accuracy {best}; model: {result.model_dir}",
        highlight=False,
        markup=False,
    )


@train_app.command("fuser", epilog=f"Settings (YAML keys and --set names):\n\n{_fuser_settings_help()}")
def train_fuser_command(
    config_file: Annotated[
        Path | None,
        typer.Argument(help="A YAML file of settings (e.g. configs/fuser-gemma3-270m-lora.yaml)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any setting as KEY=VALUE on top of the YAML (listed below)."),
    ] = None,
) -> None:
    """Train GenFuser (LLM-Blender §4): the ranker's top-K of each training instruction → the reference.

    The training file must be ranked first (`llmblend rank`). Rerunning the same command after an
    interruption resumes from OUTPUT_DIR/last; the best adapter on the dev file is kept in
    OUTPUT_DIR/best (else OUTPUT_DIR/final).
    """
    from llmblend.train.config import build_config, parse_assignments
    from llmblend.train.fuser import FuserTrainSettings, train_fuser

    with user_errors():
        settings = build_config(FuserTrainSettings, config_file, **parse_assignments(set_ or []))
        with _training_progress("training the fuser") as on_step:
            report = train_fuser(settings, progress=on_step)
    resumed = f" (resumed at step {report.resumed_from})" if report.resumed_from else ""
    console.print(
        f"trained {report.steps} steps{resumed} in {report.seconds / 60:.1f} min on {report.train_examples} "
        f"examples (skipped: {report.skipped}); best dev: {report.best_dev}; model: {report.model_dir}",
        highlight=False,
        markup=False,
    )


@train_app.command("package-fuser")
def train_package_fuser_command(
    adapter: Annotated[
        Path, typer.Argument(help="A trained adapter folder (OUTPUT_DIR/best of `train fuser`).")
    ],
    out: Annotated[
        Path, typer.Option(help="The folder to write (e.g. src/llmblend/models/fuser-gemma3-270m).")
    ],
    name: Annotated[
        str | None, typer.Option(help="The fuser's name in results (default: the folder's).")
    ] = None,
) -> None:
    """Make a small fuser folder for llama.cpp and transformers: the adapter as GGUF and as f16 peft
    weights, plus its settings (the tokenizer is read from the base model)."""
    from llmblend.fuse.llama_fuser import package_fuser

    with user_errors():
        folder = package_fuser(adapter, out, name=name)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    console.print(f"wrote {folder} ({size:.1f} MB)", highlight=False, markup=False)


@train_app.command("compact")
def train_compact_command(
    model: Annotated[Path, typer.Argument(help="A trained PairRanker folder (e.g. OUTPUT_DIR/best).")],
    out: Annotated[Path, typer.Option(help="Where the compact folder goes.")],
    base: Annotated[
        str, typer.Option(help="The encoder it was trained from; users need it too (a hub id or folder).")
    ] = "sentence-transformers/all-MiniLM-L6-v2",
) -> None:
    """Write a trained ranker as an fp16 delta over its base encoder (how the default ranker ships).

    Only tensors that differ from BASE are stored; the word embeddings of BASE's vocabulary must be
    unchanged (train with freeze_word_embeddings: true). The folder loads like any ranker folder.
    """
    from llmblend.rank.compact import save_compact
    from llmblend.rank.pairranker import PairRanker

    with user_errors():
        ranker = PairRanker.from_pretrained(model, device="cpu")
        save_compact(ranker, out, base_model=base)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    console.print(f"wrote {out} ({size:.1f} MB, base {base})", highlight=False, markup=False)
