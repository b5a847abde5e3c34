"""PairRanker inside TRL: pairwise and rank judges, and a reward function for ``GRPOTrainer``.

* :class:`LlmblendPairwiseJudge` and :class:`LlmblendRankJudge` follow TRL's judge interfaces
  (``BasePairwiseJudge`` / ``BaseRankJudge``: one ``judge(prompts, completions, shuffle_order)``
  method). TRL kept those base classes in ``trl.experimental.judges`` up to 1.0 and removed them,
  with the trainers' ``judge=`` arguments, in 1.1; so these classes subclass nothing and TRL ≤ 1.0
  trainers, which only call ``judge.judge(...)``, take them as they are.
* :func:`llmblend_reward_func` gives the ``reward_funcs`` callable that ``GRPOTrainer`` (and
  ``experimental.online_dpo.OnlineDPOTrainer``) call as ``f(prompts, completions, **columns)``:
  by default each completion's mean win probability within its prompt's group of generations
  (:func:`~llmblend.rank.reward.group_rewards`), or, with ``reference=``, its win probability
  against a reference (LLM-Blender's ``rank_with_ref``, :func:`~llmblend.rank.reward.reference_rewards`).

TRL passes prompts and completions as strings (standard format) or as lists of ``{"role",
"content"}`` messages (conversational format); both are read here. A conversation prompt is
flattened as PairRanker reads one (:func:`~llmblend.types.prompt_text`); a conversational
completion is the text of its assistant messages. Nothing here imports TRL or torch: the default
ranker (``PairRanker.default(runtime="onnx-int8")``) is built on the first call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from llmblend.rank.reward import (
    REFERENCE_MODES,
    WinProbability,
    check_reference_mode,
    group_rewards,
    pair_probabilities,
    reference_rewards,
    win_rates,
)
from llmblend.types import Message, as_prompt, prompt_text

#: The runtime of the default ranker built when none is given (the fast CPU one).
DEFAULT_RUNTIME = "onnx-int8"


def default_ranker() -> WinProbability:
    """The packaged PairRanker with the ONNX int8 runtime (needs the ``ml`` extra)."""
    from llmblend.rank.pairranker import PairRanker

    return PairRanker.default(runtime=DEFAULT_RUNTIME)


class _UsesRanker:
    """Holds a ranker, or builds :func:`default_ranker` on first use (and drops it when pickled)."""

    def __init__(self, ranker: WinProbability | None) -> None:
        self._ranker = ranker
        self._builds_ranker = ranker is None

    @property
    def ranker(self) -> WinProbability:
        if self._ranker is None:
            self._ranker = default_ranker()
        return self._ranker

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._builds_ranker:
            state["_ranker"] = None  # ONNX sessions do not pickle; the copy builds its own
        return state


class LlmblendPairwiseJudge(_UsesRanker):
    """TRL pairwise judge (``BasePairwiseJudge`` interface) backed by PairRanker's win probability.

    ``judge(prompts, completions)`` returns, per prompt, the index (0 or 1) of the better of its two
    completions (0 on an exact tie), or with ``return_scores=True`` P(completion 0 is better).
    PairRanker's comparisons are position-debiased, so ``shuffle_order`` only swaps the order the
    pairs are sent in (seeded by ``seed``) and maps the answers back: it never changes their meaning.
    """

    def __init__(self, ranker: WinProbability | None = None, *, seed: int = 0) -> None:
        super().__init__(ranker)
        self._rng = np.random.default_rng(seed)

    def judge(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Sequence[Any]],
        shuffle_order: bool = True,
        return_scores: bool = False,
    ) -> list[int] | list[float]:
        """Per prompt: the better completion's index, or P(the first is better) with ``return_scores``."""
        sources = _prompt_texts(prompts)
        pairs = [_completion_pair(index, pair) for index, pair in enumerate(completions)]
        if len(pairs) != len(sources):
            raise ValueError(
                f"{len(sources)} prompts but {len(pairs)} completion pairs; give one pair per prompt"
            )
        if not pairs:
            return []
        flips = self._rng.random(len(pairs)) < 0.5 if shuffle_order else np.zeros(len(pairs), dtype=bool)
        first = [b if flip else a for (a, b), flip in zip(pairs, flips, strict=True)]
        second = [a if flip else b for (a, b), flip in zip(pairs, flips, strict=True)]
        sent = pair_probabilities(self.ranker, sources, first, second)
        p_first = np.where(flips, 1.0 - sent, sent)
        if return_scores:
            return [float(p) for p in p_first]
        return [0 if p >= 0.5 else 1 for p in p_first]


class LlmblendRankJudge(_UsesRanker):
    """TRL rank judge (``BaseRankJudge`` interface): each prompt's completions, best first.

    A completion's score is its mean win probability against the others of its list
    (:func:`~llmblend.rank.reward.win_rates`); equal scores keep list order. ``shuffle_order``
    permutes the order sent (seeded) and maps back; the comparisons are debiased, so the
    ranking is the same either way.
    """

    def __init__(self, ranker: WinProbability | None = None, *, seed: int = 0) -> None:
        super().__init__(ranker)
        self._rng = np.random.default_rng(seed)

    def judge(
        self, prompts: Sequence[Any], completions: Sequence[Sequence[Any]], shuffle_order: bool = True
    ) -> list[list[int]]:
        """Per prompt, completion indices best first, e.g. ``[1, 2, 0]``: the second is best."""
        sources = _prompt_texts(prompts)
        lists = [
            [_completion_text(c) for c in _as_list(f"completions[{i}]", group)]
            for i, group in enumerate(completions)
        ]
        if len(lists) != len(sources):
            raise ValueError(
                f"{len(sources)} prompts but {len(lists)} completion lists; give one list per prompt"
            )
        orders = [
            self._rng.permutation(len(texts)) if shuffle_order else np.arange(len(texts)) for texts in lists
        ]
        rates = win_rates(
            self.ranker,
            sources,
            [[texts[j] for j in order] for texts, order in zip(lists, orders, strict=True)],
        )
        rankings = []
        for order, rate in zip(orders, rates, strict=True):
            scores = np.empty(len(order))
            scores[order] = rate
            rankings.append(sorted(range(len(scores)), key=lambda j: (-scores[j], j)))
        return rankings


class LlmblendReward(_UsesRanker):
    """A ``reward_funcs`` entry for TRL's GRPOTrainer: ``f(prompts, completions, **kwargs) -> list[float]``.

    Without a reference: :func:`~llmblend.rank.reward.group_rewards` over the completions that
    share a prompt (the trainer's ``num_generations`` per prompt; on several processes, the part of
    a group each process holds). ``reference``: a mode of
    :data:`~llmblend.rank.reward.REFERENCE_MODES`, picked among the same group;
    ``reference_column``: the dataset column that holds each prompt's reference answer (TRL passes
    dataset columns as keyword arguments). Rewards are win probabilities in [0, 1].
    """

    def __init__(
        self,
        ranker: WinProbability | None = None,
        *,
        reference: str | None = None,
        reference_column: str | None = None,
        name: str = "llmblend_reward",
    ) -> None:
        super().__init__(ranker)
        if reference is not None and reference_column is not None:
            raise ValueError(
                f"give reference ({reference!r}) or reference_column ({reference_column!r}), not both"
            )
        if reference is not None and not isinstance(reference, str):
            raise ValueError(
                "reference must be a mode name for a reward function (the batches change every step); "
                "to score against given reference answers, put them in a dataset column and name it "
                "with reference_column="
            )
        self.reference = None if reference is None else check_reference_mode(reference)
        self.reference_column = reference_column
        self.__name__ = name  # TRL logs a reward function under its __name__

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        sources = _prompt_texts(prompts)
        texts = [_completion_text(c) for c in completions]
        if self.reference_column is not None:
            rewards = reference_rewards(self.ranker, sources, texts, reference=self._column(kwargs))
        elif self.reference is not None:
            rewards = reference_rewards(self.ranker, sources, texts, reference=self.reference)
        else:
            rewards = group_rewards(self.ranker, sources, texts)
        return [float(r) for r in rewards]

    def _column(self, kwargs: dict[str, Any]) -> list[str]:
        if self.reference_column not in kwargs:
            columns = sorted(
                k for k in kwargs if k not in {"completion_ids", "trainer_state", "log_extra", "log_metric"}
            )
            raise ValueError(
                f"reference_column {self.reference_column!r} is not among the dataset columns the trainer "
                f"passed: {columns}"
            )
        return [_completion_text(value) for value in kwargs[self.reference_column]]


def llmblend_reward_func(
    ranker: WinProbability | None = None,
    *,
    reference: str | None = None,
    reference_column: str | None = None,
) -> Callable[..., list[float]]:
    """The reward function for ``GRPOTrainer(reward_funcs=...)``: see :class:`LlmblendReward`.

    ``ranker=None`` builds ``PairRanker.default(runtime="onnx-int8")`` on the first call.
    ``reference``: None (group rewards) or one of ``REFERENCE_MODES``.
    """
    return LlmblendReward(ranker, reference=reference, reference_column=reference_column)


# ---- TRL's two formats ------------------------------------------------------------------------


def _prompt_texts(prompts: Sequence[Any]) -> list[str]:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of prompts, got one string; wrap it in a list")
    return [_prompt_text(index, prompt) for index, prompt in enumerate(prompts)]


def _prompt_text(index: int, prompt: Any) -> str:
    """A prompt as PairRanker reads it: text as is; messages via ``as_prompt`` then ``prompt_text``."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence) and all(isinstance(m, dict | Message) for m in prompt):
        return prompt_text(as_prompt([_message(index, m) for m in prompt]))
    raise ValueError(
        f"prompts[{index}] is a {type(prompt).__name__}: {prompt!r:.80}; TRL prompts are strings or "
        'lists of {"role", "content"} messages'
    )


def _message(index: int, message: dict[str, Any] | Message) -> Message:
    if isinstance(message, Message):
        return message
    if "role" not in message:
        raise ValueError(f"prompts[{index}] has a message without a role: {message!r:.80}")
    return Message(message["role"], _content_text(message.get("content")))


def _completion_text(completion: Any) -> str:
    """A completion's text: a string as is; for messages, the assistant messages' text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, Sequence) and all(isinstance(m, dict) for m in completion):
        said = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
        return "\n\n".join(text for text in (_content_text(m.get("content")) for m in said) if text)
    raise ValueError(
        f"a completion is a {type(completion).__name__}: {completion!r:.80}; TRL completions are strings "
        'or lists of {"role", "content"} messages'
    )


def _content_text(content: Any) -> str:
    """Message content as text: a string, None (a tool call), or a list of parts (the text ones)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    raise ValueError(f"message content is a {type(content).__name__}, not text: {content!r:.80}")


def _completion_pair(index: int, pair: Sequence[Any]) -> tuple[str, str]:
    texts = _as_list(f"completions[{index}]", pair)
    if len(texts) != 2:
        raise ValueError(
            f"a pairwise judge needs exactly 2 completions per prompt; completions[{index}] has {len(texts)}"
        )
    return _completion_text(texts[0]), _completion_text(texts[1])


def _as_list(name: str, group: Any) -> list[Any]:
    if isinstance(group, str) or not isinstance(group, Sequence):
        raise ValueError(f"{name} must be a list of completions, got {type(group).__name__}: {group!r:.80}")
    return list(group)


__all__ = [
    "DEFAULT_RUNTIME",
    "REFERENCE_MODES",
    "LlmblendPairwiseJudge",
    "LlmblendRankJudge",
    "LlmblendReward",
    "default_ranker",
    "llmblend_reward_func",
]
