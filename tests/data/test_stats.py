from __future__ import annotations

import pytest

from llmblend.data.stats import choose_oracle, dataset_stats
from llmblend.types import Candidate, Example


def example(id_: str, *candidates: tuple[str, str, float | None]) -> Example:
    return Example(
        id=id_,
        instruction="q",
        candidates=[Candidate(m, t, {} if s is None else {"win": s}) for m, t, s in candidates],
    )


EXAMPLES = [
    example("1", ("a", "short", 0.2), ("b", "a much longer answer", 0.6), ("c", "", 0.1)),
    example("2", ("a", "one two three four", 0.9), ("b", "one", 0.5), ("c", "x", 0.9)),
    example("3", ("a", "only a has a score", 0.4), ("b", "unscored", None)),
]


def test_hand_computed_statistics() -> None:
    stats = dataset_stats(EXAMPLES)
    assert stats.oracle == "win" and (stats.examples, stats.candidates) == (3, 8)
    by_model = {m.model: m for m in stats.models}
    assert by_model["a"].mean_scores["win"] == pytest.approx((0.2 + 0.9 + 0.4) / 3)
    assert by_model["c"].empty == 1 and by_model["b"].candidates == 3
    # best: ex1 b, ex2 a/c tie (half each), ex3 a
    assert by_model["a"].best_share == pytest.approx(1.5 / 3)
    assert by_model["b"].best_share == pytest.approx(1 / 3)
    assert by_model["c"].best_share == pytest.approx(0.5 / 3)
    assert by_model["a"].mean_words == pytest.approx((1 + 4 + 5) / 3)
    selection = stats.selection
    assert selection["oracle pick"] == pytest.approx((0.6 + 0.9 + 0.4) / 3)
    assert selection["random pick"] == pytest.approx((0.3 + (0.9 + 0.5 + 0.9) / 3 + 0.4) / 3)
    assert selection["longest answer"] == pytest.approx((0.6 + 0.9 + 0.4) / 3)
    assert selection["model: b"] == pytest.approx((0.6 + 0.5) / 2)


def test_unknown_oracle_is_named() -> None:
    with pytest.raises(ValueError, match=r"'gpt4_win'.*'win'"):
        dataset_stats(EXAMPLES, oracle="gpt4_win")


def test_oracle_choice_prefers_judges() -> None:
    assert choose_oracle(["bleu", "gpt4_score", "rouge1"]) == "gpt4_score"
    assert choose_oracle(["zeta", "alpha"]) == "alpha"
    assert choose_oracle([]) is None
