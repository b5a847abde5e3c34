"""Ranker evaluation (LLM-Blender §5, Tables 2 and 3): hand-computed cases and the CLI."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.mixinstruct import write_mixinstruct
from llmblend.data.preferences import write_preferences
from llmblend.eval.ranking import (
    RankerEvaluation,
    candidate_pair_accuracy,
    correlation,
    evaluate_rankers,
    evaluate_rankings,
    markdown_table,
    pair_examples,
    pairwise_accuracy,
    preference_margins,
    rank_examples,
    resolve_oracle,
    selection_cells,
    selection_quality,
)
from llmblend.eval.ranking_measures import footrule
from llmblend.rank.registry import RANKERS, RankerEntry
from llmblend.types import Candidate, Example, PreferencePair, Ranking

ORACLE = "win"


def example(id_: str, *scores: float | None, texts: Sequence[str] | None = None) -> Example:
    """Candidates m0, m1, ... with the given oracle scores (None: no oracle score)."""
    texts = texts or [f"answer {i}" for i in range(len(scores))]
    return Example(
        id=id_,
        instruction="q",
        candidates=[
            Candidate(f"m{i}", t, {} if s is None else {ORACLE: s, "other": 0.0})
            for i, (s, t) in enumerate(zip(scores, texts, strict=True))
        ],
    )


class LengthRanker:
    """Longest text first; one forward pass per candidate; records its calls."""

    name = "length"

    def __init__(self) -> None:
        self.calls: list[list[Example]] = []

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        self.calls.append(list(examples))
        return [
            Ranking.from_scores([len(c.text) for c in ex.candidates], n_forward=len(ex.candidates))
            for ex in examples
        ]


# ---------------------------------------------------------------- footrule and correlation


def test_footrule_hand_computed() -> None:
    assert footrule([1, 2, 3], [10, 20, 30]) == 0.0
    assert footrule([3, 2, 1], [10, 20, 30]) == 1.0  # Σ|Δrank| = 4 = ⌊9/2⌋
    assert footrule([4, 3, 2, 1], [1, 2, 3, 4]) == 1.0  # 3+1+1+3 = 8 = ⌊16/2⌋
    # pred ranks (1, 3, 2) vs oracle ranks (1, 2, 3): Σ = 2 of 4
    assert footrule([3, 1, 2], [3, 2, 1]) == 0.5
    assert footrule([3, 1, 2], [3, 2, 1], normalise=False) == 2.0
    # ties share the average rank: (1.5, 1.5, 3) vs (1, 2, 3) → 1 of 4
    assert footrule([1, 1, 0], [3, 2, 1]) == 0.25
    with pytest.raises(ValueError, match="same length"):
        footrule([1], [1])


def test_correlation_perfect_reversed_and_skipped() -> None:
    examples = [
        example("perfect", 0.1, 0.5, 0.9),
        example("reversed", 0.1, 0.5, 0.9),
        example("constant oracle", 0.5, 0.5),
        example("failed", 0.1, 0.9),
        example("one scored", 0.3, None),
        example("constant prediction", 0.1, 0.9),
    ]
    rankings = [
        Ranking.from_scores([1, 2, 3]),
        Ranking.from_scores([3, 2, 1]),
        Ranking.from_scores([1, 2]),
        Ranking.failed("boom"),
        Ranking.from_scores([1, 2]),
        Ranking.from_scores([7, 7]),
    ]
    result = correlation(examples, rankings, ORACLE, "m")
    assert (result.pearson, result.spearman, result.footrule) == pytest.approx((0.0, 0.0, 0.5))
    assert result.footrule_raw == pytest.approx(2.0)  # (0 + 4) / 2
    assert result.evaluated == 2 and result.skipped == 4
    assert (result.too_few, result.constant_oracle, result.failed, result.constant_prediction) == (1, 1, 1, 1)
    assert result.as_dict()["skipped"] == 4


def test_correlation_values_and_unscored_candidates() -> None:
    # x = (1, 2, 3), y = (1, 2, 4): cov 3, r = 3 / (√2 · √42/3) = 9/√84; ranks agree: Spearman 1
    one = correlation([example("1", 1, 2, 4)], [Ranking.from_scores([1, 2, 3])], ORACLE)
    assert one.pearson == pytest.approx(9 / math.sqrt(84))
    assert one.spearman == pytest.approx(1.0) and one.footrule == 0.0
    # the unscored middle candidate is ignored: (2, 1) against (0.1, 0.9) is reversed
    two = correlation([example("2", 0.1, None, 0.9)], [Ranking.from_scores([2, 100, 1])], ORACLE)
    assert (two.pearson, two.spearman, two.footrule) == pytest.approx((-1.0, -1.0, 1.0))
    nothing = correlation([example("3", 0.5, 0.5)], [Ranking.from_scores([1, 2])], ORACLE)
    assert nothing.evaluated == 0 and math.isnan(nothing.pearson)


def test_misaligned_rankings_are_errors() -> None:
    with pytest.raises(ValueError, match="1 rankings for 2 examples"):
        correlation([example("a", 1, 2), example("b", 1, 2)], [Ranking.from_scores([1, 2])], ORACLE)
    with pytest.raises(ValueError, match="'a' has 2 candidates but its ranking has 3 scores"):
        correlation([example("a", 1, 2)], [Ranking.from_scores([1, 2, 3])], ORACLE)


def test_unknown_oracle_lists_the_metrics() -> None:
    with pytest.raises(ValueError, match=r"'gpt4_win'; the candidates have: other, win"):
        resolve_oracle([example("a", 1, 2)], "gpt4_win")
    assert resolve_oracle([example("a", 1, 2)]) == "other"  # choose_oracle: first alphabetically
    with pytest.raises(ValueError, match="no candidate has any score"):
        resolve_oracle([Example("x", "q", candidates=[Candidate("m", "t")])])


# ---------------------------------------------------------------- pairwise accuracy


def test_pairwise_accuracy_with_ties_and_failures() -> None:
    result = pairwise_accuracy([1.0, -1.0, 0.0, float("nan"), 2.0], "m")
    assert (result.correct, result.decided, result.predicted_ties, result.failed) == (2, 3, 1, 1)
    assert result.accuracy == pytest.approx(2 / 3) and result.pairs == 5
    assert math.isnan(pairwise_accuracy([0.0]).accuracy)


def test_candidate_pair_accuracy_counts_oracle_ties() -> None:
    examples = [example("a", 0.1, 0.5, 0.5), example("b", 1, 2), example("c", 1, 2)]
    rankings = [Ranking.from_scores([1, 2, 3]), Ranking.failed("x"), Ranking.from_scores([5, 5])]
    result = candidate_pair_accuracy(examples, rankings, ORACLE, "m")
    # a: (0,1) and (0,2) right, (1,2) an oracle tie; b: failed; c: a predicted tie
    assert (result.correct, result.decided, result.oracle_ties) == (2, 2, 1)
    assert (result.failed, result.predicted_ties, result.accuracy) == (1, 1, 1.0)


def test_preference_margins_alternate_positions_in_chunks() -> None:
    pairs = [
        PreferencePair("q0", chosen="long answer", rejected="short", source="t"),
        PreferencePair("q1", chosen="short", rejected="long answer", source="t"),
        PreferencePair("q2", chosen="same1", rejected="same2", source="t"),
    ]
    examples, chosen_at = pair_examples(pairs)
    assert list(chosen_at) == [0, 1, 0]
    assert [c.text for c in examples[1].candidates] == ["long answer", "short"]  # chosen second
    assert examples[0].models == ["candidate-1", "candidate-2"]
    ranker, done = LengthRanker(), []
    margins = preference_margins(ranker, pairs, chunk_size=2, progress=done.append)
    assert list(margins) == [6.0, -6.0, 0.0]
    assert [len(c) for c in ranker.calls] == [2, 1] and done == [2, 1]
    result = pairwise_accuracy(margins)
    assert (result.correct, result.decided, result.predicted_ties) == (1, 2, 1)


def test_rank_examples_checks_the_count() -> None:
    class Short(LengthRanker):
        def rank(self, examples, *, strategy=None, top_k=None):  # type: ignore[no-untyped-def]
            return super().rank(examples)[:-1]

    with pytest.raises(ValueError, match="returned 1 rankings for 2 examples"):
        rank_examples(Short(), [example("a", 1, 2), example("b", 1, 2)])


# ---------------------------------------------------------------- selection (Table 2)

#                  m0   m1   m2   m3       oracle top-3 bar (third best)
SELECTION = [
    example("1", 0.2, 0.6, 0.1, 0.4),  # 0.2
    example("2", 0.9, 0.5, 0.9, 0.3),  # 0.5
    example("3", 0.4, 0.3, 0.8, 0.4),  # 0.4
]
# model means: m0 0.5, m1 0.4667, m2 0.6 (best), m3 0.3667
PICKS = [
    Ranking(scores=(1, 2, 3, 4), order=(3, 2, 1, 0), n_forward=3),  # picks m3: 0.4
    Ranking(scores=(1, 4, 3, 2), order=(1, 2, 3, 0), n_forward=6),  # picks m1: 0.5 (tied with 3rd)
    Ranking.failed("out of memory"),
]


def test_selection_quality_hand_computed() -> None:
    selection = selection_quality(SELECTION, {"ranker": PICKS}, ORACLE)
    assert (selection.best_model, selection.best_model_given) == ("m2", False)
    assert selection.best_model_mean == pytest.approx(0.6) and selection.instructions == 3
    rows = {r.method: r for r in selection.rows}
    assert [r.method for r in selection.rows] == [
        "ranker",
        "random (expected)",
        "oracle",
        "model: m2",
        "model: m0",
        "model: m1",
        "model: m3",
    ]
    ranker = rows["ranker"]
    assert ranker.mean_score == pytest.approx(0.45)
    assert ranker.at_least_best == pytest.approx(0.5)  # 0.4 >= 0.1, 0.5 < 0.9
    assert ranker.top3 == 1.0  # 0.4 >= 0.2, 0.5 ties the third best
    assert (ranker.mean_forward, ranker.evaluated, ranker.failed) == (3.0, 2, 1)
    random = rows["random (expected)"]
    assert random.mean_score == pytest.approx((1.3 / 4 + 2.6 / 4 + 1.9 / 4) / 3)
    assert random.at_least_best == pytest.approx((1 + 2 / 4 + 1 / 4) / 3)
    assert random.top3 == pytest.approx(0.75)
    oracle = rows["oracle"]
    assert oracle.mean_score == pytest.approx((0.6 + 0.9 + 0.8) / 3)
    assert (oracle.at_least_best, oracle.top3, oracle.mean_forward) == (1.0, 1.0, None)
    m0, m3 = rows["model: m0"], rows["model: m3"]
    assert (m0.mean_score, m0.at_least_best, m0.top3) == pytest.approx((0.5, 2 / 3, 1.0))
    assert (m3.mean_score, m3.at_least_best, m3.top3) == pytest.approx((1.1 / 3, 1 / 3, 2 / 3))
    assert rows["model: m2"].at_least_best == 1.0 and m0.mean_forward == 0.0


def test_selection_with_a_given_best_model() -> None:
    selection = selection_quality(SELECTION, {"ranker": PICKS}, ORACLE, best_model="m0")
    assert selection.best_model_given and selection.best_model_mean == pytest.approx(0.5)
    assert selection.rows[0].at_least_best == pytest.approx(0.5)  # 0.4 >= 0.2, 0.5 < 0.9
    with pytest.raises(ValueError, match="'nope' has no candidate; the models are: m0, m1, m2, m3"):
        selection_quality(SELECTION, {}, ORACLE, best_model="nope")


def test_evaluate_rankers_ranks_only_scored_candidates() -> None:
    examples = [
        example("a", 0.9, None, 0.1, texts=["longest answer", "unscored but the very longest", "x"]),
        example("b", 0.4, None, texts=["one", "two"]),  # one scored candidate: left out
    ]
    pairs = [PreferencePair("q", chosen="a longer one", rejected="short", source="t")]
    ranker, started = LengthRanker(), []

    def progress(description: str, total: int):  # type: ignore[no-untyped-def]
        started.append((description, total))
        return lambda n: None

    result = evaluate_rankers(examples, {"len": ranker}, oracle=ORACLE, pairs=pairs, progress=progress)
    assert isinstance(result, RankerEvaluation)
    assert (result.instructions, result.left_out) == (1, 1)
    assert [ex.models for ex in ranker.calls[0]] == [["m0", "m2"]]
    assert started == [("len: ranking", 1), ("len: pairs", 1)]
    assert result.correlations[0].spearman == pytest.approx(1.0) and result.candidate_pairs[0].accuracy == 1.0
    assert result.preferences[0].accuracy == 1.0 and result.selection.rows[0].mean_score == 0.9
    with pytest.raises(ValueError, match="no ranker"):
        evaluate_rankers(examples, {}, oracle=ORACLE)


# ---------------------------------------------------------------- rendering


def test_markdown_rendering() -> None:
    evaluation = evaluate_rankings(SELECTION, {"a|b": PICKS}, ORACLE, preference_margins={"a|b": [1, 0]})
    headers, rows = selection_cells(evaluation.selection)
    assert headers[1:3] == ["mean win", "≥ m2 (%)"]
    assert rows[0] == ["a|b", "0.4500", "50.0", "100.0", "3.0", "2", "1"]
    assert rows[2][4] == "-"  # the oracle does no forward pass
    table = markdown_table((headers, rows[:1])).splitlines()
    assert table[1] == "|:---|---:|---:|---:|---:|---:|---:|"
    assert table[2] == "| a\\|b | 0.4500 | 50.0 | 100.0 | 3.0 | 2 | 1 |"
    text = evaluation.to_markdown()
    assert "Best single model: `m2` (highest mean win, mean 0.6000)" in text
    # Pearson (0.0582 − 0.2582)/2, Spearman (0 − 1/√22.5)/2, footrule (6/8 + 6/8)/2, pairs 5 of 11
    assert "| a\\|b | -0.1000 | -0.1054 | 0.7500 | 45.5 | 2 | 1 (1 failed) |" in text
    assert "| a\\|b | 100.0 | 1 | 1 | 1 | 0 | 0 |" in text  # preference pairs


# ---------------------------------------------------------------- CLI

runner = CliRunner()


@pytest.fixture
def length_ranker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A `length` ranker in the registry, from a module that exists only for the test."""
    module = types.ModuleType("llmblend_test_rankers")
    module.LengthRanker = LengthRanker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(RANKERS, "test-length", RankerEntry(f"{module.__name__}:LengthRanker", "by length"))
    return "test-length"


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    write_preferences(
        [
            PreferencePair("q", chosen="a long and good answer", rejected="bad", source="t"),
            PreferencePair("q", chosen="ok", rejected="a long but bad answer", source="t"),
        ],
        path,
    )
    return path


def test_cli_eval_ranker(sample_file: Path, pairs_file: Path, tmp_path: Path, length_ranker: str) -> None:
    out = tmp_path / "report" / "table.md"
    args = ["eval", "ranker", str(sample_file), "-r", length_ranker, "--oracle", "bleurt"]
    result = runner.invoke(app, [*args, "--out", str(out), "--pairs", str(pairs_file)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "3 instructions evaluated, 0 left out" in result.output
    assert "best single model: vicuna-13b-1.1 (highest mean bleurt" in result.output
    for title in ("Table 2", "Table 3", "Pairwise accuracy on"):
        assert title in result.output
    text = out.read_text()
    assert "| test-length | 50.0 | 1 | 2 | 0 | 0 | 0 |" in text
    assert "random (expected)" in text and "model: koala-7B" in text


def test_cli_eval_ranker_errors(sample_file: Path, length_ranker: str) -> None:
    base = ["eval", "ranker", str(sample_file), "-r", length_ranker]
    missing = runner.invoke(app, [*base, "--oracle", "gpt4_win"], terminal_width=200)
    assert missing.exit_code == 2 and "the candidates have: bartscore, bertscore, bleu" in missing.output
    twice = runner.invoke(app, [*base, "-r", length_ranker])
    assert twice.exit_code == 2 and "given more than once" in twice.output
    unknown = runner.invoke(app, [*base, "-r", "nope"], terminal_width=200)
    assert unknown.exit_code == 2 and "unknown ranker 'nope'" in unknown.output
    assert "longest" in runner.invoke(app, ["eval", "ranker", "--help"], terminal_width=200).output


def test_cli_eval_ranker_with_baselines(tmp_path: Path) -> None:
    """The real `longest` and `random` baselines on a small file with a gpt4_win oracle."""
    path = tmp_path / "small.jsonl"
    texts = ["a", "a much longer answer here", "medium answer"]
    write_mixinstruct(
        [
            Example(
                id=str(i),
                instruction="q",
                candidates=[
                    Candidate(f"model-{k}", t, {"gpt4_win": s})
                    for k, (t, s) in enumerate(zip(texts, np.roll([0.1, 0.7, 0.4], i), strict=True))
                ],
            )
            for i in range(4)
        ],
        path,
    )
    result = runner.invoke(
        app,
        ["eval", "ranker", str(path), "-r", "longest", "-r", "random", "--limit", "3"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "3 instructions evaluated" in result.output and "gpt4_win" in result.output
    for method in ("longest", "random", "random (expected)", "oracle", "model: model-1"):
        assert method in result.output
