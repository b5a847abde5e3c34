"""The §5 report: rows per model and method checked by hand, GPT-Rank from cmp_results, plots, CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.eval.metrics import get_metric
from llmblend.eval.plots import oracle_plots, quality_vs_comparisons_plot, win_rates
from llmblend.eval.report import GPT_RANK_SCORE, build_report, gpt_rank_scores, strategy_points
from llmblend.types import Candidate, Example, Ranking

REFERENCE = "the cat sat on the mat"


def example(k: int, texts: list[str], oracle: list[float], **extra) -> Example:
    candidates = [
        Candidate(model, text, {"gpt4_win": score})
        for model, text, score in zip(("a", "b", "c"), texts, oracle, strict=True)
    ]
    return Example(f"e{k}", f"instruction {k}", output=REFERENCE, candidates=candidates, extra=extra)


EXAMPLES = [
    example(0, ["the cat sat on the mat", "a dog", "the cat"], [0.9, 0.1, 0.5]),
    example(1, ["a dog ran", "the cat sat", "the mat"], [0.2, 0.8, 0.4]),
    example(2, ["the cat lay on the mat", "mat", "dog"], [0.6, 0.3, 0.7]),
]
ROUGE = {"rougeL": get_metric("rougeL")}


def rouge(text: str) -> float:
    return float(get_metric("rougeL").score([text], [REFERENCE]).per_example[0])


def row(report, method):
    return next(r for r in report.rows if r.method == method)


def test_rows_match_hand_computation() -> None:
    ranking = [Ranking.from_scores([3, 2, 1], n_forward=6)] * 3  # always candidate "a"
    report = build_report(EXAMPLES, ROUGE, rankings={"first": ranking})
    assert report.best_model == "a"  # means: a 0.567, b 0.4, c 0.533
    model_a = row(report, "model: a")
    assert model_a.metrics["rougeL"] == pytest.approx(
        np.mean([rouge(e.candidates[0].text) for e in EXAMPLES])
    )
    assert model_a.oracle_score == pytest.approx((0.9 + 0.2 + 0.6) / 3)
    assert model_a.rank == pytest.approx((1 + 3 + 2) / 3)
    oracle = row(report, "oracle (gpt4_win)")
    assert (oracle.oracle_score, oracle.rank, oracle.top3) == (pytest.approx((0.9 + 0.8 + 0.7) / 3), 1.0, 1.0)
    assert oracle.metrics["rougeL"] == pytest.approx(
        np.mean([rouge(t) for t in ["the cat sat on the mat", "the cat sat", "dog"]])
    )
    by_metric = row(report, "oracle (rougeL)")
    assert by_metric.metrics["rougeL"] >= max(r.metrics["rougeL"] for r in report.rows if r.kind == "model")
    random = row(report, "random (expected)")
    assert random.oracle_score == pytest.approx(
        np.mean([np.mean([e.candidates[i].scores["gpt4_win"] for i in range(3)]) for e in EXAMPLES])
    )
    assert random.rank == pytest.approx(2.0)
    ranker = row(report, "first")
    assert ranker.oracle_score == pytest.approx(model_a.oracle_score) and ranker.n_forward == 6.0


def test_at_least_best_and_top3_against_the_best_model() -> None:
    report = build_report(EXAMPLES, ROUGE, best_model="c")
    model_a = row(report, "model: a")
    assert model_a.at_least_best == pytest.approx(1 / 3)  # 0.9 ≥ 0.5; 0.2 < 0.4; 0.6 < 0.7
    assert row(report, "model: c").at_least_best == 1.0


def test_ranking_and_fused_fields_of_the_file_become_methods(tmp_path: Path) -> None:
    ranked = [
        example(
            k,
            [c.text for c in e.candidates],
            [c.scores["gpt4_win"] for c in e.candidates],
            ranking={
                "ranker": "default",
                "strategy": "sparse-refine",
                "order": [1, 0, 2],
                "scores": [0.0, 1.0, -1.0],
                "n_forward": 4,
                "error": None,
            },
            fused={"text": REFERENCE, "fuser": "tiny"},
        )
        for k, e in enumerate(EXAMPLES)
    ]
    report = build_report(ranked, ROUGE)
    assert row(report, "default (sparse-refine)").oracle_score == pytest.approx((0.1 + 0.8 + 0.3) / 3)
    fused = row(report, "fused (tiny)")
    assert fused.metrics["rougeL"] == pytest.approx(1.0) and math.isnan(fused.oracle_score)
    names = [c.method for c in report.correlations]
    assert names == ["default (sparse-refine)", "rougeL"]
    paths = report.write(tmp_path)
    with paths["methods"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"method", "rougeL", "oracle_score", "rank", "top3"} <= set(rows[0])
    assert "| fused (tiny) |" in paths["markdown"].read_text()


def test_a_ranking_equal_to_the_oracle_correlates_perfectly() -> None:
    perfect = [Ranking.from_scores([c.scores["gpt4_win"] for c in e.candidates]) for e in EXAMPLES]
    report = build_report(EXAMPLES, ROUGE, rankings={"perfect": perfect})
    (corr,) = [c for c in report.correlations if c.method == "perfect"]
    assert corr.spearman == pytest.approx(1.0) and corr.footrule == pytest.approx(0.0)


def test_gpt_rank_from_cmp_results_when_there_is_no_score(sample_file: Path) -> None:
    from llmblend.data.mixinstruct import load_mixinstruct

    examples = load_mixinstruct(sample_file)
    scores = gpt_rank_scores(examples[0])
    wins = dict.fromkeys(examples[0].models, 0)
    for key, verdict in examples[0].cmp_results.items():
        a, b = key.split(",")
        if verdict == "A is better":
            wins[a] += 1
            wins[b] -= 1
        elif verdict == "B is better":
            wins[b] += 1
            wins[a] -= 1
    assert list(scores) == [wins[m] for m in examples[0].models]
    report = build_report(examples, ROUGE)
    assert report.oracle == GPT_RANK_SCORE and report.rank_source == "GPT-Rank"
    best = row(report, f"oracle ({GPT_RANK_SCORE})")  # ties at the top share an average rank
    assert best.rank < 1.5 and best.answered == 2  # the third record has no cmp_results
    assert best.oracle_score == max(r.oracle_score for r in report.rows if r.answered == 2)


def test_win_rates_and_plots(tmp_path: Path) -> None:
    rates = win_rates(EXAMPLES, "gpt4_win")
    # a beats b (0.9>0.1), a beats c (0.9>0.5); a loses to b, c (0.2); a beats b, loses to c (0.6)
    assert rates["a"] == pytest.approx(3 / 6)
    assert sum(rates.values()) == pytest.approx(1.5)  # each of 9 games gives one win over 6 slots
    plots = oracle_plots(EXAMPLES, "gpt4_win", tmp_path)
    for path in plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_quality_vs_comparisons_replays_strategies_on_one_matrix(tmp_path: Path) -> None:
    calls = []

    def by_length(queries):  # a deterministic "model": the longer answer wins
        calls.append(len(queries))
        return np.array([len(q.first) - len(q.second) for q in queries], dtype=float)

    points = strategy_points(by_length, EXAMPLES, "gpt4_win")
    assert calls == [3 * 3 * 2]  # one full matrix, nothing more
    forwards = {p.name: p.n_forward for p in points}
    assert forwards["full"] == 6 and forwards["bubble"] == 4 and forwards["knockout"] == 4
    full = next(p for p in points if p.name == "full")
    longest = np.mean([max(e.candidates, key=lambda c: len(c.text)).scores["gpt4_win"] for e in EXAMPLES])
    assert full.top1 == pytest.approx(longest)
    path = quality_vs_comparisons_plot(points, {"oracle": 0.8}, "gpt4_win", tmp_path / "q.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_cli_report_writes_tables_and_plots(sample_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "report",
            str(sample_file),
            "--out",
            str(out),
            "--metric",
            "bleu",
            "--metric",
            "rougeL",
            "-r",
            "longest",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {
        "report.md",
        "methods.csv",
        "correlations.csv",
        "win_rates.png",
        "best_model_distribution.png",
    }
    text = (out / "report.md").read_text()
    assert "| longest |" in text and "GPT-Rank" in text
