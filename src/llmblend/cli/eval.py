"""``llmblend eval ...``: rankers, judges and ensembles against oracles and labels (LLM-Blender §5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmblend.cli.common import (
    DataDir,
    app,
    console,
    load_pair_ranker,
    load_rankers,
    progress_bars,
    ranker_listing,
    user_errors,
)
from llmblend.cli.helptext import App, listing
from llmblend.cli.tables import agreement_cells, rich_table

if TYPE_CHECKING:
    from llmblend.eval.judge import PairwiseJudge
    from llmblend.eval.metric_base import Metric

eval_app = App(help="Evaluate rankers, judges and ensembles (LLM-Blender §5).")
app.add_typer(eval_app, name="eval")

DEFAULT_REPORT_METRICS = ("bertscore", "bleu", "rougeL")

Oracle = Annotated[
    str | None, typer.Option(help="The score that says which answer is best (default: gpt4_win).")
]
Limit = Annotated[int | None, typer.Option(min=1, help="Use only the first N instructions (default: all).")]


@eval_app.command("ranker", epilog=ranker_listing())
def eval_ranker(
    file: Annotated[Path, typer.Argument(help="A MixInstruct JSONL file with oracle scores.")],
    ranker: Annotated[
        list[str], typer.Option("--ranker", "-r", help="A ranker spec (listed below); repeat to compare.")
    ],
    oracle: Oracle = None,
    strategy: Annotated[
        str | None, typer.Option(help="Ranking strategy, passed to every ranker (default: each ranker's).")
    ] = None,
    best_model: Annotated[
        str | None, typer.Option(help="The single model to beat (default: highest mean oracle score).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Use only the first N instructions (and first N pairs; default: all)."),
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
        rankers = load_rankers(ranker)
        with progress_bars() as start:
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
    console.print(rich_table(selection_cells(sel), "Selecting the top-1 candidate (Table 2)"))
    console.print(
        rich_table(
            correlation_cells(result.correlations, result.candidate_pairs),
            "Agreement with the oracle, mean per instruction (Table 3); footrule 0 = same order, 1 = reverse",
        )
    )
    if result.preferences:
        console.print(rich_table(pairwise_cells(result.preferences), f"Pairwise accuracy on {pairs}"))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.to_markdown(), encoding="utf-8")
        console.print(f"wrote {out}", highlight=False, markup=False)


def _report_metrics(
    names: list[str], bertscore_model: str | None, bartscore_model: str | None, bleurt: str | None
) -> dict[str, Metric]:
    from llmblend.eval.metrics import get_metric

    names = list(dict.fromkeys(names + ["bartscore"] * bool(bartscore_model) + ["bleurt"] * bool(bleurt)))
    options = {
        "bertscore": {"model": bertscore_model} if bertscore_model else {},
        "bartscore": {"model": bartscore_model} if bartscore_model else {},
        "bleurt": {"checkpoint": bleurt} if bleurt else {},
    }
    return {name: get_metric(name, **options.get(name, {})) for name in names}


@eval_app.command("report", epilog=ranker_listing())
def eval_report(
    file: Annotated[
        Path, typer.Argument(help="A MixInstruct JSONL file (ranked and fused outputs optional).")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, methods.csv, correlations.csv and PNGs.")
    ] = Path("report"),
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="Reference metric (repeat): bertscore, bleu, chrf, rouge1/2/L, ... "
            f"(default: {', '.join(DEFAULT_REPORT_METRICS)}).",
        ),
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
    limit: Limit = None,
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
        rankers = load_rankers(list(ranker or []))
        with progress_bars() as start:
            rankings = {name: r.rank(examples) for name, r in rankers.items()}
            report = build_report(
                examples, metrics, rankings=rankings, oracle=oracle, best_model=best_model, progress=start
            )
            if report.oracle:
                report.plots.update(oracle_plots(examples, report.oracle, out))
            if pair_ranker and report.oracle:
                model = load_pair_ranker(None if pair_ranker == "default" else pair_ranker, None, 32)
                points = strategy_points(model.pair_logits, examples, report.oracle)
                wanted = {f"oracle ({report.oracle})": "oracle", f"model: {report.best_model}": "best model"}
                wanted["random (expected)"] = "random"
                references = {wanted[r.method]: r.oracle_score for r in report.rows if r.method in wanted}
                report.plots["quality vs comparisons"] = quality_vs_comparisons_plot(
                    points, references, report.oracle, out / "quality_vs_comparisons.png"
                )
        paths = report.write(out)
    console.print(
        rich_table(report.results_cells(), f"{file}: {report.instructions} instructions (Table 2 layout)")
    )
    if report.correlations:
        console.print(
            rich_table(report.correlation_cells(), f"correlation with {report.oracle} (Table 3 layout)")
        )
    written = [*paths.values(), *report.plots.values()]
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False, markup=False)


def _judge(config: Path, prompt: str, cache: Path | None) -> PairwiseJudge:
    from llmblend.backends.config import build_backend, load_backend_config
    from llmblend.eval.judge import PairwiseJudge

    spec = load_backend_config(config).backends[0]
    return PairwiseJudge(build_backend(spec, default_threads=os.cpu_count() or 1), prompt, cache_path=cache)


def _label_sets() -> str:
    from llmblend.eval.agreement import LABEL_SETS

    return listing("Label sets (--labels):", (f"{k}: {v}" for k, v in LABEL_SETS.items()))


@eval_app.command("agreement", epilog=_label_sets())
def eval_agreement(
    labels: Annotated[
        list[str],
        typer.Option(
            "--labels",
            "-l",
            help="A label set (below), rewardbench:FILE, or a preference JSONL file; repeat.",
        ),
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
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N pairs of each set (default: all).")
    ] = None,
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="Also write the table as Markdown here.")] = None,
) -> None:
    """Agreement of rankers and LLM judges with human or GPT-4 labels on answer pairs (§5).

    accuracy = agreeing / pairs both the label and the method decide. Ties are reported apart:
    "said tie" counts decided labels the method called a tie; "ties matched" counts tie labels it
    also called a tie. Judges ask both orders; a verdict that flips with the order is a tie.
    """
    from llmblend.data.sources import locate_data_dir
    from llmblend.eval.agreement import grouped_agreement, judge_predictions, load_labels, ranker_predictions
    from llmblend.eval.ranking import markdown_table

    with user_errors():
        if not ranker and judge is None:
            raise ValueError("nothing to measure: give --ranker SPEC and/or --judge models.yaml")
        folder = locate_data_dir(data_dir)
        sets = {name: load_labels(name, folder)[:limit] for name in labels}
        methods = load_rankers(list(ranker or []))
        the_judge = _judge(judge, judge_prompt, judge_cache) if judge else None
        results = []
        for name, pairs in sets.items():
            for spec, model in methods.items():
                results += grouped_agreement(name, spec, pairs, ranker_predictions(model, pairs))
            if the_judge is not None:
                label = f"judge: {the_judge.backend.name} ({judge_prompt})"
                results += grouped_agreement(name, label, pairs, judge_predictions(the_judge, pairs))
    cells = agreement_cells(results)
    console.print(rich_table(cells, "agreement with the labels (ties apart)"))
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
        out.write_text(markdown_table(cells) + "\n", encoding="utf-8")
