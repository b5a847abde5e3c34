"""Agreement with human / GPT-4 labels: the label sets, ties kept apart, rankers and judges, the CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.cli import app
from llmblend.eval.agreement import (
    LabelledPair,
    agreement,
    from_preferences,
    judge_predictions,
    load_labels,
    ranker_predictions,
    side_of,
)
from llmblend.eval.judge import PairwiseJudge
from llmblend.rank.baselines import LongestRanker
from llmblend.types import PreferencePair, Prompt


def test_label_sets_from_the_shared_data(data_dir: Path) -> None:
    hhh = load_labels("hhh", data_dir)
    assert len(hhh) == 221 and Counter(p.label for p in hhh) == {"a": 111, "b": 110}  # position-balanced
    human = load_labels("vicuna80-human", data_dir)
    assert len(human) == 80 and Counter(p.label for p in human) == {"a": 41, "b": 25, "tie": 14}
    assert (human[0].model_a, human[0].model_b) == ("gpt35", "vicuna-13b")
    assert human[0].instruction == "How can I improve my time management skills?"
    gpt4 = load_labels("vicuna80-gpt4", data_dir)
    assert len(gpt4) == 80 and "tie" in {p.label for p in gpt4}
    with pytest.raises(ValueError, match="vicuna80-human"):
        load_labels("no-such-set", data_dir)


def test_ties_are_counted_apart() -> None:
    pairs = [LabelledPair("q", "x", "y", label, "t") for label in ["a", "a", "b", "b", "tie", "tie"]]
    result = agreement("t", "m", pairs, ["a", "tie", "a", "error", "tie", "b"])
    assert (result.correct, result.decided, result.accuracy) == (1, 2, 0.5)
    assert (result.predicted_ties, result.errors, result.tie_labels, result.ties_matched) == (1, 1, 2, 1)
    with pytest.raises(ValueError, match="2 predictions for 6 pairs"):
        agreement("t", "m", pairs, ["a", "b"])


def test_preference_pairs_alternate_sides() -> None:
    pairs = from_preferences([PreferencePair("q", f"good {i}", f"bad {i}", "s") for i in range(4)])
    assert [p.label for p in pairs] == ["a", "b", "a", "b"]
    assert [p.answer_a.split()[0] for p in pairs] == ["good", "bad", "good", "bad"]
    assert [side_of(m) for m in (1.0, -2.0, 0.0, float("nan"))] == ["a", "b", "tie", "error"]


LONG_WINS = [
    LabelledPair("q1", "a long and detailed answer", "short", "a", "t"),
    LabelledPair("q2", "tiny", "a much longer answer here", "b", "t"),
    LabelledPair("q3", "same", "same", "tie", "t"),
]


def test_a_ranker_gives_its_verdicts() -> None:
    assert ranker_predictions(LongestRanker(), LONG_WINS) == ["a", "b", "tie"]


class LongerAnswer(Backend):
    """A judge that prefers the longer candidate in the GPT-Rank prompt (position-free)."""

    name = "longer"
    concurrency = 2

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        text = prompt if isinstance(prompt, str) else prompt[-1].content
        first = text.split("Candidate A:")[1].split("Candidate B:")[0]
        second = text.split("Candidate B:")[1].split("Given the instruction")[0]
        verdict = "1. A is better" if len(first) > len(second) else "2. B is better"
        return Generation("3. Same good" if first == second else verdict, self.name, 10, 3)


def test_a_judge_gives_its_verdicts() -> None:
    judge = PairwiseJudge(LongerAnswer())
    assert judge_predictions(judge, LONG_WINS) == ["a", "b", "tie"]
    assert judge.usage.calls == 5  # both orders of each pair; "same" vs "same" reads the same both ways


def test_cli_agreement_with_a_ranker(tmp_path: Path) -> None:
    out = tmp_path / "agreement.md"
    args = ["eval", "agreement", "-l", "vicuna80-human", "-l", "hhh", "-r", "longest", "--limit", "30"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| vicuna80-human | longest | 30 |" in text and "| hhh | longest | 30 |" in text
    missing = CliRunner().invoke(app, ["eval", "agreement", "-l", "hhh"])
    assert missing.exit_code == 2 and "nothing to measure" in missing.output
