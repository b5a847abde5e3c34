"""The rich tables the commands print: data set statistics, evaluation cells, usage, a blend's candidates.

Each function turns a library result into a :class:`rich.table.Table`; none of them prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmblend.data.generate import GenerateReport
    from llmblend.data.stats import DatasetStats
    from llmblend.engines.ray_session import WorkerStats
    from llmblend.eval.agreement import Agreement
    from llmblend.types import BlendResult

Cells = tuple[list[str], list[list[str]]]


def rich_table(cells: Cells, title: str) -> Table:
    """A table of ``(headers, rows)``: the first column left-aligned and unwrapped, the rest right-aligned."""
    headers, rows = cells
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


# ---------------------------------------------------------------- `llmblend data stats`


def _bar(share: float, width: int = 10) -> str:
    return "█" * round(share * width)


def per_model_table(stats: DatasetStats) -> Table:
    """Per model: candidates, mean scores, best-model share by the oracle (LLM-Blender Fig. 1), lengths."""
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


def selection_table(stats: DatasetStats) -> Table:
    """The mean oracle score of simple rules that select one answer per instruction, best first."""
    table = Table(title=f"Selecting one answer per instruction: mean {stats.oracle}", title_justify="left")
    table.add_column("rule", no_wrap=True)
    table.add_column(f"mean {stats.oracle}", justify="right")
    for rule, value in sorted((stats.selection or {}).items(), key=lambda kv: -kv[1]):
        table.add_row(rule, f"{value:.4f}", style=None if rule.startswith("model: ") else "bold")
    return table


# ---------------------------------------------------------------- `llmblend eval agreement`


def agreement_cells(results: Sequence[Agreement]) -> Cells:
    """One row per (label set, method): accuracy over the decided pairs, and the ties apart."""
    from llmblend.eval.ranking import fmt_percent

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
    return headers, rows


# ---------------------------------------------------------------- `llmblend generate`, `llmblend blend`


def usage_table(report: GenerateReport) -> Table:
    """Calls, failures, tokens and latency per backend of one generation run."""
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
    return rich_table((headers, rows), "per backend (this run)")


def blend_table(result: BlendResult) -> Table:
    """A blend's candidates, best first (the top-K the fuser read marked *), failed ones last."""
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


def ray_workers_table(workers: dict[str, WorkerStats], records: int, seconds: float, title: str) -> Table:
    """Per Ray worker: shards, records, failures, busy seconds, records/s; then the job (``records``
    in ``seconds`` of wall time)."""
    rows = [
        [name, str(w.shards), str(w.records), str(w.failed), f"{w.seconds:.1f}", _rate(w.records, w.seconds)]
        for name, w in workers.items()
    ]
    rows.append(
        [
            "job (wall time)",
            str(sum(w.shards for w in workers.values())),
            str(records),
            str(sum(w.failed for w in workers.values())),
            f"{seconds:.1f}",
            _rate(records, seconds),
        ]
    )
    return rich_table((["worker", "shards", "records", "failed", "seconds", "records/s"], rows), title)


def _rate(records: int, seconds: float) -> str:
    return f"{records / seconds:.2f}" if seconds > 0 else "-"
