"""Listwise ranking by an LLM judge: all candidates in one prompt, a permutation back (RankGPT,
Sun et al., 2023), with sliding windows when they do not fit the judge's context.

One call ranks a whole window of answers, so N candidates cost one call when they fit, instead of
the N(N−1) ordered pairs of the full pairwise matrix (LLM-Blender §3.2). The answers are shown in an
order shuffled under a seed (position bias then falls on no particular model), numbered ``[1]`` ..
``[n]``; the judge replies with a permutation such as ``[2] > [3] > [1]``. :func:`parse_permutation`
reads it robustly: identifiers out of range are dropped, repeats keep their first place, and those
missing are appended in their shown order, so a sloppy reply still ranks every candidate (and the
problems are counted). When the prompt would not fit ``context_tokens``, windows of ``window``
answers slide from the back of the list to the front by ``step``, so the best answers bubble up
to the top window, as RankGPT does.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from llmblend.backends.base import Backend, GenerationParams
from llmblend.rank.base import RankItem
from llmblend.rank.budget import Budget, Spend
from llmblend.types import Message, Prompt, Ranking

LISTWISE_SYSTEM = (
    "You are an impartial judge who ranks AI assistants' answers to a user's question by quality: "
    "helpfulness, relevance, accuracy and level of detail. The order in which the answers appear "
    "and their length must not influence you."
)
LISTWISE_INSTRUCTION = (
    "Rank the {n} answers above from best to worst. Reply with the identifiers only, best first, "
    "in the form [2] > [1] > [3], listing each of the {n} identifiers exactly once and nothing else."
)
#: Characters per token when the prompt's length is estimated without a tokenizer.
CHARS_PER_TOKEN = 4
_IDENTIFIER = re.compile(r"\[\s*(\d+)\s*\]")
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Permutation:
    """A parsed reply: ``order`` (0-based positions, best first, each exactly once) and what was
    wrong with it: identifiers ``missing`` (appended), ``repeated`` (dropped) or out of range."""

    order: tuple[int, ...]
    missing: int = 0
    repeated: int = 0
    out_of_range: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.repeated or self.out_of_range)


def parse_permutation(text: str, n: int) -> Permutation:
    """The permutation of ``n`` shown answers (1-based identifiers) that a reply states.

    Bracketed identifiers are read when there are any, else bare numbers. Out-of-range ones are
    dropped, a repeat keeps its first place, missing ones follow in their shown order.
    """
    found = _IDENTIFIER.findall(text) or _NUMBER.findall(text)
    order: list[int] = []
    repeated = out_of_range = 0
    for raw in found:
        position = int(raw) - 1
        if not 0 <= position < n:
            out_of_range += 1
        elif position in order:
            repeated += 1
        else:
            order.append(position)
    missing = [p for p in range(n) if p not in order]
    return Permutation(tuple(order + missing), len(missing), repeated, out_of_range)


def listwise_prompt(source: str, answers: Sequence[str]) -> Prompt:
    """The judge prompt that shows ``answers`` numbered [1] .. [n] after the question."""
    shown = "\n\n".join(f"[{k}]\n{answer}" for k, answer in enumerate(answers, start=1))
    user = f"[User Question]\n{source}\n\n{shown}\n\n" + LISTWISE_INSTRUCTION.format(n=len(answers))
    return [Message("system", LISTWISE_SYSTEM), Message("user", user)]


def estimated_tokens(prompt: Prompt) -> int:
    text = prompt if isinstance(prompt, str) else "".join(m.content for m in prompt)
    return len(text) // CHARS_PER_TOKEN + 1


def windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """``(start, end)`` slices of a list of ``n``, from the back to the front (RankGPT's order)."""
    if n <= window:
        return [(0, n)]
    spans, end = [], n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


@dataclass(frozen=True, slots=True)
class Listwise:
    """Listwise judging settings: ``window`` answers per prompt at most, shifted by ``step``; the
    window shrinks until the prompt fits ``context_tokens`` (estimated at 4 characters a token,
    leaving ``params.max_tokens`` for the reply)."""

    window: int = 20
    step: int = 10
    context_tokens: int = 8192

    def __post_init__(self) -> None:
        if self.window < 2 or not 1 <= self.step < self.window:
            raise ValueError(
                f"listwise windows need window >= 2 and 1 <= step < window; got {self.window}, {self.step}"
            )

    def fitting_window(self, item: RankItem, params: GenerationParams) -> int:
        """The largest window (≤ ``window``, ≥ 2) whose longest prompt fits the context."""
        longest = sorted(item.candidates, key=len, reverse=True)
        size = min(self.window, len(item.candidates))
        room = self.context_tokens - params.max_tokens
        while size > 2 and estimated_tokens(listwise_prompt(item.source, longest[:size])) > room:
            size -= 1
        return size


@dataclass(slots=True)
class ListwiseResult:
    """One example's listwise ranking with its spend and the parse problems met."""

    ranking: Ranking
    spend: Spend
    unclean_replies: int = 0


async def rank_listwise(
    backend: Backend,
    item: RankItem,
    *,
    settings: Listwise,
    params: GenerationParams,
    budget: Budget,
    seed: int,
    slots: asyncio.Semaphore,
) -> ListwiseResult:
    """Rank one example's candidates by sliding windows of listwise judge calls.

    A failed call leaves its window as it was (counted); when the budget runs out the windows left
    are skipped. Scores are ``n − position`` of the final order.
    """
    n = len(item.candidates)
    order = _shown_order(item, seed)
    size = settings.fitting_window(item, params)
    step = min(settings.step, size - 1)
    spend, unclean, failures = Spend(), 0, 0
    for start, end in windows(n, size, step):
        if budget.allowance(spend) == 0:
            break
        shown = order[start:end]
        prompt = listwise_prompt(item.source, [item.candidates[c] for c in shown])
        started = time.perf_counter()
        async with slots:
            generation = await backend.generate(prompt, params)
        spend.add(Spend(1, 0, generation.prompt_tokens, generation.completion_tokens))
        spend.seconds += time.perf_counter() - started
        if not generation.ok:
            failures += 1
            continue
        permutation = parse_permutation(generation.text, len(shown))
        unclean += not permutation.clean
        order[start:end] = [shown[p] for p in permutation.order]
    scores = [0.0] * n
    for position, candidate in enumerate(order):
        scores[candidate] = float(n - position)
    ranking = Ranking.from_scores(scores, n_forward=spend.calls)
    if failures and failures == spend.calls:
        ranking = Ranking.failed(f"every listwise judge call failed ({failures})", n_forward=spend.calls)
    return ListwiseResult(ranking, spend, unclean)


def _shown_order(item: RankItem, seed: int) -> list[int]:
    """The candidates in an order drawn from the seed and the source (the same in any batch)."""
    digest = hashlib.sha256(f"{seed}\x1f{item.source}".encode()).digest()
    order = list(range(len(item.candidates)))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order
