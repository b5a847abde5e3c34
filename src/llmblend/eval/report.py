"""The LLM-Blender results report for any MixInstruct file (§5: Tables 2 and 3, Figure 1).

One row per model and per method — the oracle pick by each reference metric and by the file's
oracle score, random, each ranker's top-1, ranker + fuser — with the reference metrics of the
answer it returns (BERTScore, BARTScore, BLEU, ROUGE-L, ...), its GPT-Rank (from the file's
``cmp_results``, as MixInstruct) or oracle rank, the share of instructions where it is at least as
good as the best single model, and the share where it is in the oracle's top 3. A second table
correlates each ranking with the oracle (Pearson, Spearman, footrule). Plots: per-model win rates,
the best-model distribution (the paper's Figure 1) and, given a PairRanker, quality against the
number of comparisons of each strategy (drawn by :mod:`llmblend.eval.plots`).

Where things come from in a record: ``output`` is the reference; ``candidates[i].scores[oracle]``
the oracle; ``ranking`` (written by ``llmblend rank``) one ranker's output; ``fused`` (a string,
or an object with ``text`` and optionally ``fuser``) a fused answer.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from llmblend.data.stats import choose_oracle
from llmblend.eval.plots import StrategyPoint, oracle_plots, quality_vs_comparisons_plot
from llmblend.eval.ranking import fmt_number, fmt_percent, markdown_table
from llmblend.eval.ranking_measures import Correlation, correlation
from llmblend.types import Example, Ranking

# The plots live in llmblend.eval.plots; oracle_plots and quality_vs_comparisons_plot are re-exported
# because llmblend.cli imports them from here.
__all__ = [
    "DEFAULT_METRICS",
    "GPT_RANK_SCORE",
    "Method",
    "Report",
    "ReportRow",
    "StrategyPoint",
    "build_report",
    "candidate_ranks",
    "fused_in_file",
    "gpt_rank_scores",
    "oracle_plots",
    "oracle_vector",
    "quality_vs_comparisons_plot",
    "rankings_in_file",
    "reference_scores",
    "strategy_points",
    "with_gpt_rank_scores",
]

log = logging.getLogger(__name__)

NAN = math.nan
#: Reference metrics computed when none are named (BARTScore joins them when given a model).
DEFAULT_METRICS = ("bertscore", "bleu", "rougeL")
#: The pseudo-score GPT-Rank gives each candidate (wins − losses) when a file has only cmp_results.
GPT_RANK_SCORE = "gpt_rank_score"
ProgressFactory = Callable[[str, int], Callable[[int], None]]


# ---------------------------------------------------------------- what each method returns


@dataclass(frozen=True, slots=True)
class Method:
    """What one method returns per instruction: a candidate index, or a text of its own (a fuser).

    ``picks[e]`` is None when the method has no answer for instruction ``e`` (a failed ranking).
    ``kind`` is model, oracle, random, ranker or fuser; ``n_forward`` the mean model passes.
    """

    name: str
    kind: str
    picks: list[int | None] = field(default_factory=list)
    texts: list[str | None] | None = None
    n_forward: float | None = None


def _model_picks(examples: Sequence[Example], model: str) -> list[int | None]:
    return [next((i for i, c in enumerate(e.candidates) if c.model == model), None) for e in examples]


def _argmax_picks(values: Sequence[np.ndarray]) -> list[int | None]:
    return [None if v.size == 0 or np.all(np.isnan(v)) else int(np.nanargmax(v)) for v in values]


def rankings_in_file(examples: Sequence[Example]) -> dict[str, list[Ranking]]:
    """The ``ranking`` field ``llmblend rank`` writes, as one method (named by ranker and strategy)."""
    found = [e.extra.get("ranking") for e in examples]
    if not any(found):
        return {}
    first = next(r for r in found if r)
    name = f"{first.get('ranker', 'ranker')} ({first.get('strategy', '?')})"
    rankings = []
    for record in found:
        if not record or record.get("error"):
            rankings.append(Ranking.failed((record or {}).get("error") or "no ranking in the record"))
        else:
            rankings.append(
                Ranking(tuple(record["scores"]), tuple(record["order"]), record.get("n_forward", 0))
            )
    return {name: rankings}


def fused_in_file(examples: Sequence[Example]) -> dict[str, list[str | None]]:
    """The ``fused`` field: one method per fuser name; records written by ``llmblend fuse`` (with
    ``fused_text``) give two, the fusion itself and what the guard returned."""
    methods: dict[str, list[str | None]] = {}

    def put(name: str, k: int, text: str | None) -> None:
        methods.setdefault(name, [None] * len(examples))[k] = text

    for k, example in enumerate(examples):
        value = example.extra.get("fused")
        if value is None:
            continue
        if isinstance(value, str):
            put("fused (fuser)", k, value)
            continue
        fuser = value.get("fuser", "fuser")
        if "fused_text" in value:
            put(f"fused ({fuser}), no guard", k, value["fused_text"] or None)
            put(f"fused ({fuser}) + guard", k, value.get("text"))
        else:
            put(f"fused ({fuser})", k, value.get("text"))
    return methods


# ---------------------------------------------------------------- the oracle side


def gpt_rank_scores(example: Example) -> np.ndarray | None:
    """GPT-Rank's wins − losses per candidate from ``cmp_results`` (ties cancel; §5), or None."""
    if not example.cmp_results:
        return None
    totals = dict.fromkeys(example.models, 0.0)
    for key, verdict in example.cmp_results.items():
        a, b = key.split(",")
        if verdict in ("A is better", "B is better") and a in totals and b in totals:
            winner, loser = (a, b) if verdict == "A is better" else (b, a)
            totals[winner] += 1
            totals[loser] -= 1
    return np.array([totals[c.model] for c in example.candidates])


def with_gpt_rank_scores(examples: Sequence[Example]) -> list[Example]:
    """Examples whose candidates carry :data:`GPT_RANK_SCORE` (when the record has cmp_results)."""
    out = []
    for example in examples:
        scores = gpt_rank_scores(example)
        if scores is None:
            out.append(example)
            continue
        candidates = [
            replace(c, scores={**c.scores, GPT_RANK_SCORE: float(s)})
            for c, s in zip(example.candidates, scores, strict=True)
        ]
        out.append(replace(example, candidates=candidates))
    return out


def oracle_vector(example: Example, oracle: str | None) -> np.ndarray:
    """The oracle score of each candidate (NaN where a candidate has none)."""
    return np.array([c.scores.get(oracle, NAN) if oracle else NAN for c in example.candidates], dtype=float)


def candidate_ranks(oracle: np.ndarray) -> np.ndarray:
    """1 = best by the oracle, ties share the average rank; NaN for unscored candidates."""
    ranks = np.full(len(oracle), NAN)
    scored = ~np.isnan(oracle)
    if scored.any():
        ranks[scored] = rankdata(-oracle[scored], method="average")
    return ranks


# ---------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One method's line of the results table (means over instructions where it has an answer)."""

    method: str
    kind: str
    metrics: dict[str, float]
    oracle_score: float
    rank: float
    at_least_best: float
    top3: float
    n_forward: float | None
    answered: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "kind": self.kind,
            **self.metrics,
            "oracle_score": self.oracle_score,
            "rank": self.rank,
            "at_least_best": self.at_least_best,
            "top3": self.top3,
            "n_forward": self.n_forward,
            "answered": self.answered,
        }


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else NAN


@dataclass(frozen=True, slots=True)
class _Oracle:
    """Per instruction: oracle scores, ranks, the best model's score and the third-best score."""

    scores: list[np.ndarray]
    ranks: list[np.ndarray]
    best_model_score: list[float]
    third: list[float]


def _oracle_view(examples: Sequence[Example], oracle: str | None, best_model: str | None) -> _Oracle:
    scores = [oracle_vector(e, oracle) for e in examples]
    best_picks = _model_picks(examples, best_model) if best_model else [None] * len(examples)
    best = [NAN if p is None else float(s[p]) for s, p in zip(scores, best_picks, strict=True)]
    third = []
    for s in scores:
        kept = np.sort(s[~np.isnan(s)])[::-1]
        third.append(float(kept[min(2, len(kept) - 1)]) if len(kept) else NAN)
    return _Oracle(scores, [candidate_ranks(s) for s in scores], best, third)


def _picked_row(
    method: Method, metric_values: Mapping[str, Sequence[np.ndarray]], view: _Oracle
) -> ReportRow:
    metrics = {
        name: _mean([NAN if p is None else float(v[p]) for p, v in zip(method.picks, values, strict=True)])
        for name, values in metric_values.items()
    }
    triples = [
        (float(s[p]), float(r[p]), b, t)
        for p, s, r, b, t in zip(
            method.picks, view.scores, view.ranks, view.best_model_score, view.third, strict=True
        )
        if p is not None
    ]
    return ReportRow(
        method=method.name,
        kind=method.kind,
        metrics=metrics,
        oracle_score=_mean([s for s, _, _, _ in triples]),
        rank=_mean([r for _, r, _, _ in triples]),
        at_least_best=_mean(
            [float(s >= b) if not (math.isnan(s) or math.isnan(b)) else NAN for s, _, b, _ in triples]
        ),
        top3=_mean(
            [float(s >= t) if not (math.isnan(s) or math.isnan(t)) else NAN for s, _, _, t in triples]
        ),
        n_forward=method.n_forward,
        answered=len(triples),
    )


def _random_row(metric_values: Mapping[str, Sequence[np.ndarray]], view: _Oracle) -> ReportRow:
    """The exact expectation of a uniform pick among each instruction's candidates."""

    def expected(values: Sequence[np.ndarray]) -> float:
        return _mean([float(np.nanmean(v)) if v.size and not np.all(np.isnan(v)) else NAN for v in values])

    def share(s: np.ndarray, bar: float) -> float:
        kept = s[~np.isnan(s)]
        return float((kept >= bar).mean()) if kept.size and not math.isnan(bar) else NAN

    return ReportRow(
        method="random (expected)",
        kind="random",
        metrics={name: expected(values) for name, values in metric_values.items()},
        oracle_score=expected(view.scores),
        rank=expected(view.ranks),
        at_least_best=_mean([share(s, b) for s, b in zip(view.scores, view.best_model_score, strict=True)]),
        top3=_mean([share(s, t) for s, t in zip(view.scores, view.third, strict=True)]),
        n_forward=0.0,
        answered=len(view.scores),
    )


def _fused_row(name: str, metrics: Mapping[str, np.ndarray], answered: int) -> ReportRow:
    return ReportRow(
        name, "fuser", {k: _mean(list(v)) for k, v in metrics.items()}, NAN, NAN, NAN, NAN, None, answered
    )


# ---------------------------------------------------------------- the report


@dataclass(slots=True)
class Report:
    """Everything ``llmblend eval report`` writes; ``rank_source`` says what the rank column is."""

    instructions: int
    oracle: str | None
    rank_source: str | None
    best_model: str | None
    metrics: list[str]
    rows: list[ReportRow]
    correlations: list[Correlation]
    plots: dict[str, Path] = field(default_factory=dict)

    def results_cells(self) -> tuple[list[str], list[list[str]]]:
        rank = self.rank_source or "rank"
        headers = ["method", *self.metrics, f"mean {self.oracle}" if self.oracle else "oracle", rank]
        headers += [
            f"% ≥ {self.best_model}" if self.best_model else "% ≥ best",
            "% oracle top-3",
            "fwd/instr.",
        ]
        rows = [
            [
                row.method,
                *(fmt_number(row.metrics[m], 2 if m in ("bleu", "chrf") else 4) for m in self.metrics),
                fmt_number(row.oracle_score),
                fmt_number(row.rank, 2),
                fmt_percent(row.at_least_best),
                fmt_percent(row.top3),
                "" if row.n_forward is None else f"{row.n_forward:.1f}",
            ]
            for row in self.rows
        ]
        return headers, rows

    def correlation_cells(self) -> tuple[list[str], list[list[str]]]:
        headers = ["ranking", "Pearson", "Spearman", "footrule (↓)", "instructions"]
        rows = [
            [
                c.method,
                fmt_number(c.pearson, 3),
                fmt_number(c.spearman, 3),
                fmt_number(c.footrule, 3),
                str(c.evaluated),
            ]
            for c in self.correlations
        ]
        return headers, rows

    def to_markdown(self) -> str:
        lines = [
            f"## Results on {self.instructions} instructions (LLM-Blender §5, Table 2 layout)\n",
            f"Reference metrics against each record's `output`; {self.rank_source or 'rank'} of the returned "
            f"candidate (1 = best); oracle: `{self.oracle}`; best single model: {self.best_model}.\n",
            markdown_table(self.results_cells()),
        ]
        if self.correlations:
            lines += [
                f"\n## Correlation with the oracle `{self.oracle}` (Table 3 layout; mean per instruction)\n",
                markdown_table(self.correlation_cells()),
            ]
        if self.plots:
            lines.append("\n## Plots\n")
            lines += [f"![{name}]({path.name})" for name, path in self.plots.items()]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> dict[str, Path]:
        """report.md, methods.csv and correlations.csv in ``folder`` (the plots are already there)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": folder / "report.md", "methods": folder / "methods.csv"}
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        _write_csv(paths["methods"], [row.as_dict() for row in self.rows])
        if self.correlations:
            paths["correlations"] = folder / "correlations.csv"
            _write_csv(paths["correlations"], [c.as_dict() for c in self.correlations])
        return paths


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def reference_scores(
    examples: Sequence[Example],
    texts: Sequence[Sequence[str]],
    metrics: Mapping[str, Any],
    progress: ProgressFactory | None = None,
) -> dict[str, list[np.ndarray]]:
    """Each metric of each text against its example's reference: ``{metric: [array per example]}``.

    ``texts[e]`` are the answers of example ``e`` (its candidates, or one fused answer); examples
    without a reference get NaN. Every metric runs once over all (answer, reference) pairs, batched.
    """
    flat = [
        (e, t)
        for e, (example, answers) in enumerate(zip(examples, texts, strict=True))
        for t in answers
        if example.output
    ]
    out = {}
    for name, metric in metrics.items():
        values = np.full(len(flat), NAN)
        if flat:
            advance = progress(f"{name}", len(flat)) if progress else None
            result = metric.score(
                [t for _, t in flat], [examples[e].output for e, _ in flat], progress=advance
            )
            values = result.per_example
        per_example = [np.full(len(answers), NAN) for answers in texts]
        cursor = {e: 0 for e in range(len(examples))}
        for (e, _), value in zip(flat, values, strict=True):
            per_example[e][cursor[e]] = value
            cursor[e] += 1
        out[name] = per_example
    return out


def build_report(
    examples: Sequence[Example],
    metrics: Mapping[str, Any],
    *,
    rankings: Mapping[str, Sequence[Ranking]] | None = None,
    fused: Mapping[str, Sequence[str | None]] | None = None,
    oracle: str | None = None,
    best_model: str | None = None,
    progress: ProgressFactory | None = None,
) -> Report:
    """The results and correlation tables (§5) of ``examples``; ``metrics`` maps names to
    :class:`~llmblend.eval.metrics.Metric` objects; ``rankings`` and ``fused`` add methods."""
    if not examples:
        raise ValueError("no examples to report on")
    examples = with_gpt_rank_scores(examples)
    rankings = {**rankings_in_file(examples), **(rankings or {})}
    fused = {**fused_in_file(examples), **(fused or {})}
    oracle, rank_source = _choose_oracle(examples, oracle)
    models = list(dict.fromkeys(c.model for e in examples for c in e.candidates))
    best_model = best_model or _best_model(examples, oracle, models)
    values = reference_scores(examples, [[c.text for c in e.candidates] for e in examples], metrics, progress)
    view = _oracle_view(examples, oracle, best_model)
    methods = _oracle_methods(examples, values, oracle)
    methods += [Method(f"model: {m}", "model", _model_picks(examples, m)) for m in models]
    methods += [
        Method(
            name,
            "ranker",
            [r.best if r.ok else None for r in ranked],
            n_forward=float(np.mean([r.n_forward for r in ranked])),
        )
        for name, ranked in rankings.items()
    ]
    rows = [_picked_row(m, values, view) for m in methods if m.kind != "model"]
    rows.insert(len([m for m in methods if m.kind == "oracle"]), _random_row(values, view))
    model_rows = [_picked_row(m, values, view) for m in methods if m.kind == "model"]
    rows += sorted(model_rows, key=lambda r: -r.oracle_score if not math.isnan(r.oracle_score) else math.inf)
    for name, texts in fused.items():
        answers = [[t] if t is not None else [] for t in texts]
        fused_values = reference_scores(examples, answers, metrics, progress)
        flat = {k: np.array([a[0] for a in v if a.size]) for k, v in fused_values.items()}
        rows.append(_fused_row(name, flat, sum(t is not None for t in texts)))
    correlations = _correlations(examples, rankings, values, oracle)
    return Report(len(examples), oracle, rank_source, best_model, list(metrics), rows, correlations)


def _choose_oracle(examples: Sequence[Example], oracle: str | None) -> tuple[str | None, str | None]:
    names = {k for e in examples for c in e.candidates for k in c.scores}
    if oracle is not None and oracle not in names:
        raise ValueError(
            f"no candidate has the score {oracle!r}; the file has: {', '.join(sorted(names)) or 'none'}"
        )
    if oracle is None:
        oracle = GPT_RANK_SCORE if GPT_RANK_SCORE in names else choose_oracle(names)
    if oracle is None:
        return None, None
    return oracle, "GPT-Rank" if oracle == GPT_RANK_SCORE else "oracle rank"


def _best_model(examples: Sequence[Example], oracle: str | None, models: list[str]) -> str | None:
    if oracle is None:
        return None
    means = {
        m: _mean([c.scores.get(oracle, NAN) for e in examples for c in e.candidates if c.model == m])
        for m in models
    }
    scored = {m: v for m, v in means.items() if not math.isnan(v)}
    return max(scored, key=scored.__getitem__) if scored else None


def _oracle_methods(
    examples: Sequence[Example], values: Mapping[str, Sequence[np.ndarray]], oracle: str | None
) -> list[Method]:
    methods = []
    if oracle:
        methods.append(
            Method(
                f"oracle ({oracle})", "oracle", _argmax_picks([oracle_vector(e, oracle) for e in examples])
            )
        )
    methods += [Method(f"oracle ({name})", "oracle", _argmax_picks(v)) for name, v in values.items()]
    return methods


def _correlations(
    examples: Sequence[Example],
    rankings: Mapping[str, Sequence[Ranking]],
    values: Mapping[str, Sequence[np.ndarray]],
    oracle: str | None,
) -> list[Correlation]:
    """Each ranker, and each reference metric used as a ranking, against the oracle (Table 3)."""
    if oracle is None:
        return []
    as_rankings = dict(rankings)
    for name, per_example in values.items():
        if all(np.all(np.isnan(v)) for v in per_example):
            continue
        as_rankings[name] = [
            Ranking.from_scores(np.nan_to_num(v, nan=-np.inf))
            if not np.all(np.isnan(v))
            else Ranking.failed("no reference")
            for v in per_example
        ]
    return [correlation(examples, ranked, oracle, name) for name, ranked in as_rankings.items()]


# ---------------------------------------------------------------- strategies


def strategy_points(
    pair_logits: Callable[[Sequence[Any]], np.ndarray],
    examples: Sequence[Example],
    oracle: str,
    strategies: Sequence[str] = ("bubble", "knockout", "sparse-refine", "full"),
) -> list[StrategyPoint]:
    """Cost and quality of each PairRanker strategy (§3.2), replayed on one full matrix of logits."""
    from llmblend.rank.base import rank_items
    from llmblend.rank.strategies import full_matrix_scorer, run_strategy

    items = rank_items(examples)
    scorer = full_matrix_scorer(pair_logits, items)
    view = _oracle_view(examples, oracle, None)
    points = []
    for name in strategies:
        ranked = run_strategy(name, items, scorer)
        top1 = _mean([float(s[r.best]) for r, s in zip(ranked, view.scores, strict=True) if r.ok])
        spearman = correlation(examples, ranked, oracle, name).spearman
        points.append(StrategyPoint(name, float(np.mean([r.n_forward for r in ranked])), top1, spearman))
    return points
