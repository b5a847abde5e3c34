"""Rewards from win probabilities: against a reference (rank_with_ref) and within a prompt's group."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from llmblend.rank.reward import (
    REFERENCE_MODES,
    group_rewards,
    pair_probabilities,
    pick_reference,
    reference_rewards,
    win_rates,
)
from llmblend.types import Message, prompt_text


class LengthRanker:
    """P(a beats b) = sigmoid((len(a) − len(b)) / 4 + [a mentions the source's last word]); records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    @staticmethod
    def score(source: str, text: str) -> float:
        return len(text) / 4 + (1.0 if source.split()[-1].strip("?.") in text else 0.0)

    def probability(self, instructions, a, b) -> np.ndarray:
        self.calls.append((list(instructions), list(a), list(b)))
        margins = [self.score(s, x) - self.score(s, y) for s, x, y in zip(instructions, a, b, strict=True)]
        return 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=np.float64)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


Q1, Q2 = "Name the capital of France.", "Name a prime number."
GROUP = ["Paris.", "It is Paris, of course.", "Lyon", "France has a capital"]


# ---- picking the reference -----------------------------------------------------------------


def test_pick_reference_by_mode_breaks_length_ties_alphabetically() -> None:
    group = ["bb", "a", "ccc", "aa", "zzz"]
    assert pick_reference("first", group) == "bb"
    assert pick_reference("shortest", group) == "a"
    assert pick_reference("longest", group) == "ccc"  # ties with "zzz": alphabetically first
    assert pick_reference("median-length", group) == "bb"  # a, aa, bb, ccc, zzz
    assert pick_reference("median-length", ["a", "bb", "ccc", "dddd"]) == "bb"  # the lower median


def test_unknown_mode_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'best'.*longest, shortest, median-length, first"):
        reference_rewards(LengthRanker(), [Q1], ["x"], reference="best")
    assert set(REFERENCE_MODES) == {"longest", "shortest", "median-length", "first"}


# ---- reference_rewards -----------------------------------------------------------------------


def test_reference_from_candidates_scores_the_win_probability_against_it() -> None:
    ranker = LengthRanker()
    responses = ["Paris.", "It is Paris, of course."]
    rewards = reference_rewards(ranker, [Q1, Q1], responses, reference="longest", candidates=[GROUP, GROUP])
    reference = "It is Paris, of course."
    expected = sigmoid(LengthRanker.score(Q1, "Paris.") - LengthRanker.score(Q1, reference))
    assert rewards[0] == pytest.approx(expected, abs=1e-12)
    assert rewards[1] == 0.5  # the reference itself
    assert rewards.dtype == np.float64 and rewards.shape == (2,)


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("longest", "It is Paris, of course."),
        ("shortest", "Lyon"),
        ("median-length", "Paris."),
        ("first", "Paris."),
    ],
)
def test_without_candidates_the_group_is_the_responses_of_the_same_prompt(mode: str, reference: str) -> None:
    prompts = [Q1, Q2, Q1, Q1, Q2, Q1]
    responses = [GROUP[0], "7", GROUP[1], GROUP[2], "Eleven is prime", GROUP[3]]
    rewards = reference_rewards(LengthRanker(), prompts, responses, reference=mode)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        if prompt == Q1:
            if response == reference:
                assert rewards[i] == 0.5
            else:
                p = sigmoid(LengthRanker.score(Q1, response) - LengthRanker.score(Q1, reference))
                assert rewards[i] == pytest.approx(p, abs=1e-12)


def test_given_reference_texts_one_per_prompt() -> None:
    rewards = reference_rewards(
        LengthRanker(), [Q1, Q2], ["Paris.", "7"], reference=["Paris.", "Seven is prime"]
    )
    assert rewards[0] == 0.5
    assert rewards[1] == pytest.approx(sigmoid(-len("Seven is prime") / 4 + len("7") / 4), abs=1e-12)


def test_all_pairs_go_to_the_ranker_in_one_call_each_pair_once() -> None:
    ranker = LengthRanker()
    reference_rewards(ranker, [Q1] * 4 + [Q2], [*GROUP, "7"], reference=["Lyon"] * 4 + ["Two"])
    assert len(ranker.calls) == 1
    _, firsts, seconds = ranker.calls[0]
    assert len(firsts) == 4  # "Lyon" vs itself needs no call
    assert all(a < b for a, b in zip(firsts, seconds, strict=True))  # one canonical order


def test_a_conversation_prompt_is_read_as_prompt_text() -> None:
    conversation = [Message("system", "Be brief."), Message("user", Q1)]
    ranker = LengthRanker()
    reference_rewards(ranker, [conversation, conversation], ["Paris.", "Lyon"], reference="longest")
    assert ranker.calls[0][0] == [prompt_text(conversation)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"responses": ["a"]}, "responses has 1 items but there are 2 prompts"),
        ({"reference": ["r"]}, "reference has 1 items but there are 2 prompts"),
        ({"candidates": [["a"]]}, "2 prompts but 1 candidate lists"),
        ({"candidates": [["a"], []]}, "empty group"),
        ({"reference": ["r", "s"], "candidates": [["a"], ["b"]]}, "not both|drop one"),
        ({"responses": ["a", 3]}, r"responses\[1\] is a int"),
        ({"responses": "ab"}, "got one string"),
    ],
)
def test_reference_rewards_errors(kwargs: dict, match: str) -> None:
    call = {"responses": ["a", "b"], "reference": "longest", **kwargs}
    responses = call.pop("responses")
    with pytest.raises(ValueError, match=match):
        reference_rewards(LengthRanker(), [Q1, Q2], responses, **call)


# ---- group_rewards / win_rates ---------------------------------------------------------------


def test_group_rewards_are_mean_win_probabilities_within_the_group() -> None:
    prompts = [Q1, Q1, Q1, Q2]
    completions = ["Paris.", "Lyon", "It is Paris, of course.", "7"]
    rewards = group_rewards(LengthRanker(), prompts, completions)
    group = completions[:3]
    for j, text in enumerate(group):
        others = [
            sigmoid(LengthRanker.score(Q1, text) - LengthRanker.score(Q1, o)) for o in group if o != text
        ]
        assert rewards[j] == pytest.approx(sum(others) / 2, abs=1e-12)
    assert rewards[3] == 0.5  # a group of one
    assert rewards[:3].sum() == pytest.approx(1.5, abs=1e-12)  # a round robin's rewards average 0.5


def test_group_rewards_do_not_depend_on_batch_order() -> None:
    prompts = [Q1] * 4 + [Q2] * 3
    completions = [*GROUP, "7", "Eleven is prime", "9"]
    ranker = LengthRanker()
    rewards = group_rewards(ranker, prompts, completions)
    assert len(ranker.calls) == 1 and len(ranker.calls[0][0]) == 6 + 3  # C(4,2) + C(3,2) pairs
    order = list(range(len(prompts)))
    random.Random(0).shuffle(order)
    shuffled = group_rewards(LengthRanker(), [prompts[i] for i in order], [completions[i] for i in order])
    assert np.array_equal(shuffled, rewards[order])


def test_identical_completions_tie() -> None:
    rewards = group_rewards(LengthRanker(), [Q1, Q1], ["Paris.", "Paris."])
    assert rewards.tolist() == [0.5, 0.5]


def test_win_rates_per_list_and_errors() -> None:
    rates = win_rates(LengthRanker(), [Q1, Q2, Q1], [["Paris.", "Lyon"], ["7"], []])
    assert rates[0][0] == pytest.approx(
        sigmoid(LengthRanker.score(Q1, "Paris.") - LengthRanker.score(Q1, "Lyon"))
    )
    assert rates[0].sum() == pytest.approx(1.0) and rates[1].tolist() == [0.5] and rates[2].shape == (0,)
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        win_rates(LengthRanker(), [Q1, Q2], [["a"]])
    with pytest.raises(ValueError, match="completions has 1 items but there are 2 prompts"):
        group_rewards(LengthRanker(), [Q1, Q2], ["a"])


def test_nothing_to_compare_makes_no_ranker_call() -> None:
    ranker = LengthRanker()
    assert group_rewards(ranker, [], []).shape == (0,)
    assert pair_probabilities(ranker, [Q1], ["a"], ["a"]).tolist() == [0.5]
    assert ranker.calls == []


# ---- the shipped PairRanker --------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("torch")
    from llmblend.rank.pairranker import PairRanker

    return PairRanker.default(runtime="onnx-int8")


TIPS = "Give three tips for staying healthy."
GOOD_TIPS = (
    "1. Eat a balanced diet with plenty of fruits and vegetables.\n2. Exercise regularly, at least 30 "
    "minutes a day.\n3. Get enough sleep, seven to nine hours each night."
)
OFF_TOPIC = "The moon orbits the earth."


def test_shipped_ranker_probabilities_are_antisymmetric_and_order_free(shipped) -> None:
    a = [GOOD_TIPS, "Drink water.", OFF_TOPIC]
    b = [OFF_TOPIC, GOOD_TIPS, "Drink water."]
    forward = shipped.probability([TIPS] * 3, a, b)
    backward = shipped.probability([TIPS] * 3, b, a)
    np.testing.assert_allclose(forward + backward, 1.0, atol=1e-12)
    assert ((forward >= 0) & (forward <= 1)).all()

    rewards = reference_rewards(shipped, [TIPS] * 3, a, reference="longest")
    assert rewards[0] == 0.5  # GOOD_TIPS is the longest: the reference itself
    assert rewards[2] == pytest.approx(1.0 - forward[0], abs=1e-12)

    prompts = [TIPS] * 3 + [Q1] * 2
    completions = [
        *a,
        "The capital of France is Paris, which is also its largest city.",
        "Bananas are yellow.",
    ]
    group = group_rewards(shipped, prompts, completions)
    order = [4, 2, 0, 3, 1]
    again = group_rewards(shipped, [prompts[i] for i in order], [completions[i] for i in order])
    assert np.array_equal(again, group[order])
    assert group[0] > group[2] and group[3] > group[4]
