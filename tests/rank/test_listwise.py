"""Listwise judging (RankGPT): permutation parsing, sliding windows, and ranking over real HTTP."""

from __future__ import annotations

import re

import pytest
import yaml

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.rank.budget import Budget
from llmblend.rank.judge_ranker import JudgeRanker
from llmblend.rank.listwise import Listwise, parse_permutation, windows
from llmblend.rank.registry import load_ranker
from llmblend.types import Candidate, Example, Prompt, prompt_text


@pytest.mark.parametrize(
    ("text", "order", "missing", "repeated", "out_of_range"),
    [
        ("[2] > [3] > [1]", (1, 2, 0), 0, 0, 0),
        ("[2] > [1]", (1, 0, 2), 1, 0, 0),  # [3] missing: appended in shown order
        ("[2] > [2] > [3] > [1]", (1, 2, 0), 0, 1, 0),  # a repeat keeps its first place
        ("[4] > [2] > [0] > [1] > [3]", (1, 0, 2), 0, 0, 2),  # out of range dropped
        ("2 > 3 > 1", (1, 2, 0), 0, 0, 0),  # bare numbers when nothing is bracketed
        ("I cannot rank these.", (0, 1, 2), 3, 0, 0),
        ("[ 3 ]>[1]>[ 2]", (2, 0, 1), 0, 0, 0),
    ],
)
def test_permutations_are_read_robustly(text, order, missing, repeated, out_of_range) -> None:
    parsed = parse_permutation(text, 3)
    assert parsed.order == order
    assert (parsed.missing, parsed.repeated, parsed.out_of_range) == (missing, repeated, out_of_range)
    assert parsed.clean == (missing == repeated == out_of_range == 0)


def test_windows_slide_from_the_back_to_the_front() -> None:
    assert windows(5, 20, 10) == [(0, 5)]
    assert windows(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]
    with pytest.raises(ValueError, match="step < window"):
        Listwise(window=4, step=4)


class SortingJudge(Backend):
    """Ranks the shown answers by the number in their text, highest first (a perfect listwise judge)."""

    name = "sorting-judge"

    def __init__(self) -> None:
        self.shown: list[int] = []

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        answers = re.findall(r"\[(\d+)\]\nanswer (\d+)", prompt_text(prompt))
        self.shown.append(len(answers))
        best_first = sorted(answers, key=lambda a: -int(a[1]))
        return Generation(" > ".join(f"[{k}]" for k, _ in best_first), self.name, 10, 5)


def _numbered(n: int) -> Example:
    return Example(
        "nums", "Which answer is best?", candidates=[Candidate(f"m{i}", f"answer {i}") for i in range(n)]
    )


def test_one_call_ranks_candidates_that_fit_and_windows_bring_the_best_to_the_top() -> None:
    judge = SortingJudge()
    (ranking,) = JudgeRanker(judge, strategy="listwise").rank([_numbered(6)])
    assert list(ranking.order) == [5, 4, 3, 2, 1, 0] and judge.shown == [6]
    assert ranking.usage["calls"] == 1 and ranking.usage["prompt_tokens"] == 10
    judge = SortingJudge()
    (windowed,) = JudgeRanker(judge, strategy="listwise", listwise=Listwise(window=4, step=2)).rank(
        [_numbered(10)]
    )
    assert windowed.order[:2] == (9, 8) and judge.shown == [4, 4, 4, 4]  # back to front: the best bubble up
    assert windowed.n_forward == 4


def test_a_small_context_shrinks_the_window_and_the_budget_stops_windows() -> None:
    judge = SortingJudge()
    small = Listwise(window=10, step=5, context_tokens=256)
    long = Example("long", "q", candidates=[Candidate(f"m{i}", f"answer {i} " + "x" * 300) for i in range(6)])
    JudgeRanker(judge, strategy="listwise", listwise=small).rank([long])
    assert max(judge.shown) < 6  # did not fit in one prompt
    judge = SortingJudge()
    ranker = JudgeRanker(
        judge, strategy="listwise", listwise=Listwise(window=4, step=2), budget=Budget(max_calls=2)
    )
    (ranking,) = ranker.rank([_numbered(10)])
    assert judge.shown == [4, 4] and sorted(ranking.order) == list(range(10))


def test_listwise_over_http_with_a_sloppy_reply(scripted_server, tmp_path) -> None:
    path = tmp_path / "judge.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": scripted_server.base_url, "max_retries": 0}
    path.write_text(yaml.safe_dump({"backends": [backend], "judge": {"strategy": "listwise", "seed": 1}}))
    scripted_server.script_for("judge", [("say", "[3] > [3] > [7] > [1]")])
    ranker = load_ranker(f"judge:{path}")
    (ranking,) = ranker.rank([_numbered(3)])
    assert sorted(ranking.order) == [0, 1, 2] and ranking.usage["unclean_replies"] == 1
    (request,) = scripted_server.requests_for("judge")
    user = request.body["messages"][-1]["content"]
    assert "m0" not in user and "[3]" in user  # model names never reach the judge
    shown = [int(n) for n in re.findall(r"answer (\d)", user)]
    assert ranking.order[0] == shown[2]  # the judge's [3] is the third answer shown, whatever the shuffle
