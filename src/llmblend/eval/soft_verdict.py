"""Soft judge verdicts: a margin from the probabilities of the verdict token, not the parsed verdict.

A judge that writes "[[A]]" with probability 0.51 and one that writes it with 0.99 say different
things; the parsed verdict says the same. Where the backend returns token logprobs (OpenAI's
``logprobs``/``top_logprobs``, llama.cpp's server), :func:`soft_margin` finds the token that decides
the verdict — the letter after MT-bench's last ``[[``, or GPT-Rank's leading choice — and turns the
alternatives the server listed there into ``(P(A) − P(B)) / (P(A) + P(B) + P(tie))`` in [−1, 1],
so a ranking strategy gets a margin, not just win, lose or tie. None when the reply has no such
token or the listed alternatives name no verdict: the caller falls back to the parsed verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final, Literal

from llmblend.backends.base import TokenLogprob

Side = Literal["a", "b", "tie"]

_MT_BENCH_SIDES: Final[dict[str, Side]] = {"a": "a", "b": "b", "c": "tie"}
_GPT_RANK_SIDES: Final[dict[str, Side]] = {"1": "a", "2": "b", "3": "tie", "4": "tie", "a": "a", "b": "b"}
#: A verdict alternative: its key character, then nothing or a closing bracket / punctuation.
_ALTERNATIVE: Final = re.compile(r"^\s*(\w)(?:\s*$|\s*[\].):])", re.IGNORECASE)


def soft_margin(template: str, logprobs: Sequence[TokenLogprob] | None) -> float | None:
    """The soft margin (> 0 favours the answer shown as A) of a reply given as its tokens, or None.

    The verdict is looked for in the text the tokens spell (a server may strip the reply's text).
    """
    if not logprobs:
        return None
    text = "".join(t.token for t in logprobs)
    if template == "mt-bench":
        start = text.rfind("[[")
        if start < 0:
            return None
        position, sides = start + 2, _MT_BENCH_SIDES
    elif template == "gpt-rank":
        position, sides = len(text) - len(text.lstrip()), _GPT_RANK_SIDES
    else:
        raise ValueError(f"no soft verdicts for judge prompt {template!r}; known: mt-bench, gpt-rank")
    while position < len(text) and text[position].isspace():
        position += 1
    return _margin_at(logprobs, position, sides)


def _margin_at(logprobs: Sequence[TokenLogprob], position: int, sides: dict[str, Side]) -> float | None:
    """The margin from the alternatives of the token that holds character ``position``."""
    start = 0
    for token in logprobs:
        end = start + len(token.token)
        if start <= position < end:
            head = token.token[: position - start]  # what precedes the verdict inside this token
            alternatives = token.top or ((token.token, token.logprob),)
            return _margin(alternatives, head, sides)
        start = end
    return None


def _margin(alternatives: Sequence[tuple[str, float]], head: str, sides: dict[str, Side]) -> float | None:
    mass: dict[Side, float] = {"a": 0.0, "b": 0.0, "tie": 0.0}
    for text, logprob in dict(alternatives).items():  # one entry per distinct alternative
        if not text.startswith(head):
            continue
        found = _ALTERNATIVE.match(text[len(head) :])
        side = sides.get(found.group(1).lower()) if found else None
        if side is not None:
            mass[side] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return (mass["a"] - mass["b"]) / total
