"""Soft verdicts: the margin from the verdict token's probabilities (MT-bench and GPT-Rank replies)."""

from __future__ import annotations

import math

import pytest

from llmblend.backends.base import TokenLogprob
from llmblend.eval.soft_verdict import soft_margin


def _tokens(*pieces) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(text, logprob, tuple(top)) for text, logprob, top in pieces)


def _margin(pa: float, pb: float, pt: float) -> float:
    return (pa - pb) / (pa + pb + pt)


def test_mt_bench_reads_the_letter_after_the_last_double_bracket() -> None:
    reply = _tokens(
        ("Both are fine, but A is clearer. ", -0.5, []),
        ("[[", -0.01, []),
        ("A", math.log(0.6), [("A", math.log(0.6)), ("B", math.log(0.3)), ("C", math.log(0.1))]),
        ("]]", -0.01, []),
    )
    assert soft_margin("mt-bench", reply) == pytest.approx(_margin(0.6, 0.3, 0.1))


def test_a_verdict_merged_into_one_token_with_the_brackets_is_read() -> None:
    top = [("[[B", math.log(0.7)), ("[[A", math.log(0.2)), ("[[C", math.log(0.05)), ("The", math.log(0.05))]
    reply = _tokens(("Verdict: ", -0.1, []), ("[[B", math.log(0.7), top), ("]]", -0.01, []))
    assert soft_margin("mt-bench", reply) == pytest.approx(_margin(0.2, 0.7, 0.05))


def test_gpt_rank_reads_the_leading_choice_number() -> None:
    top = [("1", math.log(0.5)), ("2", math.log(0.2)), ("3", math.log(0.2)), ("4", math.log(0.1))]
    reply = _tokens(("1", math.log(0.5), top), (". A is better", -0.2, []))
    assert soft_margin("gpt-rank", reply) == pytest.approx(_margin(0.5, 0.2, 0.3))


def test_no_soft_margin_without_logprobs_or_a_verdict_token() -> None:
    assert soft_margin("mt-bench", None) is None
    assert soft_margin("mt-bench", _tokens(("I cannot decide.", -1.0, []))) is None
    odd = _tokens(("[[", -0.1, []), ("maybe", -0.1, [("maybe", -0.1), ("perhaps", -2.0)]))
    assert soft_margin("mt-bench", odd) is None  # no alternative names a verdict
    with pytest.raises(ValueError, match="no soft verdicts for judge prompt"):
        soft_margin("listwise", odd)


def test_without_listed_alternatives_the_chosen_token_decides() -> None:
    reply = _tokens(("[[", -0.1, []), ("B", -0.2, []), ("]]", -0.1, []))
    assert soft_margin("mt-bench", reply) == pytest.approx(-1.0)
