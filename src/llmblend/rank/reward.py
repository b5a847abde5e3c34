"""Rewards from PairRanker's calibrated win probabilities, for RL fine-tuning.

Two shapes, both built on P(a beats b) = ``ranker.probability`` (LLM-Blender §3.2, position-debiased
and calibrated, so a pair's probability never depends on which other texts share the batch):

* :func:`reference_rewards`, LLM-Blender's ``rank_with_ref``: each response scores its win
  probability against one reference answer for its prompt, given or picked from a group by length;
* :func:`group_rewards`, a round robin within each prompt's group (GRPO's group of generations):
  each completion scores its mean win probability against the others (:func:`win_rates`).

Every pair of a call goes to the ranker in one batched ``probability`` call, each unordered pair
once in one canonical order (the other order is ``1 − p``), so results are deterministic and do not
depend on the order of the batch. Lengths are counted in characters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Protocol

import numpy as np

from llmblend.types import Prompt, prompt_text

#: How :func:`reference_rewards` picks a prompt's reference from its group: the longest, shortest
#: or median-length text (ties: the alphabetically first text), or the group's first text.
REFERENCE_MODES: Final = ("longest", "shortest", "median-length", "first")


class WinProbability(Protocol):
    """Anything that gives P(``a[i]`` better than ``b[i]``) for ``instructions[i]``, like PairRanker."""

    def probability(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """float64 [N] in [0, 1]."""
        ...


def check_reference_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`REFERENCE_MODES`; else a ValueError listing them."""
    if mode not in REFERENCE_MODES:
        raise ValueError(
            f"unknown reference mode {mode!r}; known modes: {', '.join(REFERENCE_MODES)} "
            "(or pass a list of reference texts, one per prompt)"
        )
    return mode


def pick_reference(mode: str, group: Sequence[str]) -> str:
    """The reference of a non-empty ``group`` of texts under ``mode`` (one of :data:`REFERENCE_MODES`)."""
    check_reference_mode(mode)
    if not group:
        raise ValueError(f"cannot pick a {mode!r} reference from an empty group of texts")
    if mode == "first":
        return group[0]
    by_length = sorted(group, key=lambda text: (len(text), text))
    if mode == "shortest":
        return by_length[0]
    if mode == "longest":
        return min(group, key=lambda text: (-len(text), text))
    return by_length[(len(by_length) - 1) // 2]  # median-length: the lower median


def reference_rewards(
    ranker: WinProbability,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    *,
    reference: str | Sequence[str] = "longest",
    candidates: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """reward[i] = P(``responses[i]`` beats the reference of ``prompts[i]``): float64 [N] in [0, 1].

    ``reference`` is a mode of :data:`REFERENCE_MODES`, which picks the reference among
    ``candidates[i]`` when given, else among the responses that share the prompt; or a list of
    reference texts, one per prompt. A response equal to its reference scores exactly 0.5.
    A conversation prompt is flattened with :func:`~llmblend.types.prompt_text`, as ``compare`` reads it.
    """
    sources = _sources(prompts)
    _check_texts("responses", responses, len(sources))
    references = _references(sources, responses, reference, candidates)
    return pair_probabilities(ranker, sources, responses, references)


def group_rewards(
    ranker: WinProbability, prompts: Sequence[Prompt], completions: Sequence[str]
) -> np.ndarray:
    """reward[i]: mean P(``completions[i]`` beats another completion of the same prompt): float64 [N].

    The group of a completion is every completion whose prompt flattens to the same text (GRPO's
    group of generations for one prompt); a group of one scores 0.5.
    """
    sources = _sources(prompts)
    _check_texts("completions", completions, len(sources))
    groups = _group_by_source(sources)
    rates = win_rates(ranker, list(groups), [[completions[i] for i in rows] for rows in groups.values()])
    rewards = np.full(len(sources), 0.5)
    for rows, rate in zip(groups.values(), rates, strict=True):
        rewards[rows] = rate
    return rewards


def win_rates(
    ranker: WinProbability, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]]
) -> list[np.ndarray]:
    """For each prompt, each candidate's mean P(beats another candidate of the list): float64 [n_i].

    A round robin over all pairs (the full comparison matrix of §3.2, averaged); a list of one
    scores 0.5. Equal texts tie at 0.5 without a ranker call.
    """
    sources = _sources(prompts)
    if len(candidates) != len(sources):
        raise ValueError(
            f"{len(sources)} prompts but {len(candidates)} candidate lists; give one list per prompt"
        )
    for index, group in enumerate(candidates):
        _check_texts(f"candidates[{index}]", group)
    pairs = [
        (i, j, k)
        for i, group in enumerate(candidates)
        for j in range(len(group))
        for k in range(j + 1, len(group))
    ]
    # both orders of each pair, so that each is derived from the one canonical query the same way
    # whichever order the list holds them in (no 1 − (1 − p) rounding)
    triples = [
        (sources[i], candidates[i][x], candidates[i][y]) for i, j, k in pairs for x, y in ((j, k), (k, j))
    ]
    wins = _probabilities(ranker, triples)
    beaten: list[list[list[float]]] = [[[] for _ in group] for group in candidates]
    for n, (i, j, k) in enumerate(pairs):
        beaten[i][j].append(wins[2 * n])
        beaten[i][k].append(wins[2 * n + 1])
    return [
        np.array([math.fsum(row) / len(row) if row else 0.5 for row in group], dtype=np.float64)
        for group in beaten
    ]


def pair_probabilities(
    ranker: WinProbability, sources: Sequence[str], a: Sequence[str], b: Sequence[str]
) -> np.ndarray:
    """P(``a[i]`` beats ``b[i]``) for ``sources[i]``, float64 [N]: one ranker call, each pair once."""
    if not len(sources) == len(a) == len(b):
        raise ValueError(f"pair_probabilities needs equal lengths, got {len(sources)}, {len(a)}, {len(b)}")
    return np.array(_probabilities(ranker, list(zip(sources, a, b, strict=True))), dtype=np.float64)


def _probabilities(ranker: WinProbability, triples: Sequence[tuple[str, str, str]]) -> list[float]:
    """P(first beats second) per (source, first, second); identical texts 0.5, the rest in one call."""
    canonical = sorted({(s, min(x, y), max(x, y)) for s, x, y in triples if x != y})
    wins: dict[tuple[str, str, str], float] = {}
    if canonical:
        sources, firsts, seconds = (list(column) for column in zip(*canonical, strict=True))
        values = np.asarray(ranker.probability(sources, firsts, seconds), dtype=np.float64).reshape(-1)
        if values.shape != (len(canonical),):
            raise ValueError(
                f"{type(ranker).__name__}.probability returned {values.shape[0]} values "
                f"for {len(canonical)} pairs"
            )
        wins = dict(zip(canonical, values.tolist(), strict=True))
    out = []
    for s, x, y in triples:
        if x == y:
            out.append(0.5)
        else:
            p = wins[(s, min(x, y), max(x, y))]
            out.append(p if x < y else 1.0 - p)
    return out


def _references(
    sources: list[str],
    responses: Sequence[str],
    reference: str | Sequence[str],
    candidates: Sequence[Sequence[str]] | None,
) -> list[str]:
    """One reference text per prompt, as :func:`reference_rewards` describes."""
    if not isinstance(reference, str):
        if candidates is not None:
            raise ValueError(
                "candidates only choose among texts for a reference mode; got both a list of references "
                "and candidates: drop one"
            )
        _check_texts("reference", reference, len(sources), what="reference texts (one per prompt)")
        return list(reference)
    check_reference_mode(reference)
    if candidates is not None:
        if len(candidates) != len(sources):
            raise ValueError(
                f"{len(sources)} prompts but {len(candidates)} candidate lists; give one list per prompt"
            )
        for index, group in enumerate(candidates):
            _check_texts(f"candidates[{index}]", group)
        return [pick_reference(reference, group) for group in candidates]
    picked = {
        source: pick_reference(reference, [responses[i] for i in rows])
        for source, rows in _group_by_source(sources).items()
    }
    return [picked[source] for source in sources]


def _group_by_source(sources: Sequence[str]) -> dict[str, list[int]]:
    """Row indices per distinct source, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, source in enumerate(sources):
        groups.setdefault(source, []).append(index)
    return groups


def _sources(prompts: Sequence[Prompt]) -> list[str]:
    """Each prompt as the ranker reads it: text as is, a conversation flattened by ``prompt_text``."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of prompts, got one string; wrap it in a list")
    sources = []
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str | list):
            raise ValueError(
                f"prompts[{index}] is a {type(prompt).__name__}; a prompt is a string or a list of Message"
            )
        sources.append(prompt_text(prompt))
    return sources


def _check_texts(
    name: str, texts: Sequence[str], expected: int | None = None, *, what: str = "texts"
) -> None:
    """ValueError unless ``texts`` is a list of strings (``expected`` of them, one per prompt, when given)."""
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a list of {what}, got one string; wrap it in a list")
    if expected is not None and len(texts) != expected:
        raise ValueError(f"{name} has {len(texts)} items but there are {expected} prompts; give one each")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{index}] is a {type(text).__name__}, not a string: {text!r:.80}")
