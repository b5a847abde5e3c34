"""Pairwise LLM judging: GPT-Rank (LLM-Blender §5) and MT-bench's pairwise judge.

LLM-Blender §5 evaluates a ranker against **GPT-Rank**: ChatGPT compares every pair of an example's
candidates with the prompt :data:`GPT_RANK_TEMPLATE` (four verdicts, :data:`~llmblend.types.CMP_VERDICTS`,
stored in MixInstruct as ``cmp_results``), each candidate gets +1 for a win and −1 for a loss (ties
cancel), and the totals rank the candidates (:func:`gpt_rank`). MT-bench (Zheng et al., 2023) judges
a pair with its ``pair-v2`` prompt (:data:`MT_BENCH_PAIR_SYSTEM`, :data:`MT_BENCH_PAIR_TEMPLATE`) and
asks twice, swapping the answers, to cancel the judge's position bias.

:class:`PairwiseJudge` does the latter with either prompt: every pair is judged in both orders and
the two verdicts are combined by :func:`combine_orderings` (same winner → that winner; anything else
→ a tie; an unreadable or failed ordering → ``"error"``, never a silent tie). Each judged ordering is
appended to an optional JSONL cache as soon as it finishes, so a killed run resumes asking only what
is missing. :func:`to_battles` turns verdicts into :class:`~llmblend.eval.ratings.Battle` s for Elo /
Bradley–Terry ratings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from string import Template
from typing import Any, Final, Literal

from scipy.stats import rankdata

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.data.jsonl import append_jsonl, read_journal
from llmblend.errors import BackendResponseError
from llmblend.eval.ratings import Battle
from llmblend.eval.soft_verdict import soft_margin
from llmblend.types import CMP_VERDICTS, Example, Message, Prompt, as_prompt, prompt_text

log = logging.getLogger(__name__)

# LLM-Blender's GPT-Rank prompt, verbatim (trailing spaces included) from ``TEMPLATE`` in
# src/gpt_eval/gpt_eval.py of https://github.com/yuchenlin/LLM-Blender (Jiang, Ren, Lin, ACL 2023;
# the prompt of the paper's appendix). ``string.Template`` syntax: ``$`` or braces in the answers are safe.
GPT_RANK_TEMPLATE: Final = (
    "Instruction: \n${instruction}\n\n"
    "Input: \n${input}\n\n"
    "Candidate A: \n${candidate1}\n\n"
    "Candidate B: \n${candidate2}\n\n"
    "Given the instruction and input above, please compare the two candidates.\n"
    "You only have 4 choices to output:\n"
    "If you think A is better, please output: 1. A is better\n"
    "If you think B is better, please output: 2. B is better\n"
    "If you think both are good enough correctly give the answer, please output: 3. Same good\n"
    "If you think both are bad and do not follow the instruction, please output: 4. Same bad\n"
    "Do not output anything else except the 4 choices above.\n"
    "Output your choice below:\n"
)

# MT-bench's "pair-v2" judge prompt (system prompt and user template), copied from
# fastchat/llm_judge/data/judge_prompts.jsonl of https://github.com/lm-sys/FastChat (Apache-2.0),
# as stored in shared/data/mt_bench/judge_prompts.jsonl; tests check the copy against that file.
MT_BENCH_PAIR_SYSTEM: Final = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows the "
    "user's instructions and answers the user's question better. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their "
    "responses. Begin your evaluation by comparing the two responses and provide a short explanation. "
    "Avoid any position biases and ensure that the order in which the responses were presented does not "
    "influence your decision. Do not allow the length of the responses to influence your evaluation. Do "
    "not favor certain names of the assistants. Be as objective as possible. After providing your "
    'explanation, output your final verdict by strictly following this format: "[[A]]" if assistant A '
    'is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
MT_BENCH_PAIR_TEMPLATE: Final = (
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)

#: MT-bench's tie (``[[C]]``): a tie that says nothing of whether both answers are good or bad.
TIE: Final = "Tie"
#: What one judged ordering can say, about the answers in the positions A and B it was shown.
POSITION_VERDICTS: Final = (*CMP_VERDICTS, TIE)
#: The outcome of a pair judged both ways, about ``model_a`` and ``model_b``.
Winner = Literal["a", "b", "tie", "error"]
_TIES: Final = frozenset({"Same good", "Same bad", TIE})
#: Alternatives per token asked for soft verdicts: enough to hold every verdict token.
SOFT_TOP_LOGPROBS: Final = 5
_CACHE_KEY: Final = "key"


# ---------------------------------------------------------------- parsing


_GPT_RANK_PHRASES: Final = {
    re.compile(r"\ba\s+is\s+better\b"): "A is better",
    re.compile(r"\bb\s+is\s+better\b"): "B is better",
    re.compile(r"\bsame\s+good\b"): "Same good",
    re.compile(r"\bsame\s+bad\b"): "Same bad",
}
#: A leading choice number: "1", "2.", "(3)", "choice 4:" — followed by nothing or a separator.
_GPT_RANK_NUMBER: Final = re.compile(r"^\W*(?:choice|option|output)?\W*([1-4])(?:\s*[.):]|\s*$)")
_MT_BENCH_VERDICT: Final = re.compile(r"\[\[\s*([abc])\s*\]\]")
_MT_BENCH_MEANING: Final = {"a": "A is better", "b": "B is better", "c": TIE}


def parse_gpt_rank(text: str) -> str | None:
    """The GPT-Rank verdict (one of :data:`~llmblend.types.CMP_VERDICTS`) in a judge's reply, or None.

    Reads "1. A is better", "A is better.", "3", "  same GOOD " alike (case and whitespace do not
    matter); None when the reply names no verdict or two different ones (an echo of the four choices,
    "1. B is better").
    """
    normal = " ".join(text.lower().split())
    found = {verdict for pattern, verdict in _GPT_RANK_PHRASES.items() if pattern.search(normal)}
    number = _GPT_RANK_NUMBER.match(normal)
    if number:
        found.add(CMP_VERDICTS[int(number.group(1)) - 1])
    return found.pop() if len(found) == 1 else None


def parse_mt_bench(text: str) -> str | None:
    """MT-bench's verdict in a judge's reply: ``[[A]]`` → "A is better", ``[[B]]`` → "B is better",
    ``[[C]]`` → :data:`TIE`; None when there is none or two different ones. Case and inner spaces do
    not matter (``[[ a ]]``).
    """
    found = {_MT_BENCH_MEANING[m] for m in _MT_BENCH_VERDICT.findall(text.lower())}
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class JudgeItem:
    """One pair to judge: the instruction and input, two answers and the models that wrote them."""

    instruction: str
    input: str
    answer_a: str
    answer_b: str
    model_a: str
    model_b: str
    example_id: str = ""

    def __post_init__(self) -> None:
        if self.model_a == self.model_b:
            raise ValueError(f"a judged pair needs two different models, got {self.model_a!r} twice")


@dataclass(frozen=True, slots=True)
class JudgeTemplate:
    """A judge prompt: how to ask about (first, second) answers, and how to read the reply."""

    name: str
    build: Callable[[JudgeItem, str, str], Prompt]
    parse: Callable[[str], str | None]
    default_params: GenerationParams


def _gpt_rank_prompt(item: JudgeItem, first: str, second: str) -> Prompt:
    return Template(GPT_RANK_TEMPLATE).substitute(
        instruction=item.instruction, input=item.input, candidate1=first, candidate2=second
    )


def _mt_bench_prompt(item: JudgeItem, first: str, second: str) -> Prompt:
    question = "\n\n".join(part for part in (item.instruction, item.input) if part)
    user = MT_BENCH_PAIR_TEMPLATE.format(question=question, answer_a=first, answer_b=second)
    return [Message("system", MT_BENCH_PAIR_SYSTEM), Message("user", user)]


TEMPLATES: Final[dict[str, JudgeTemplate]] = {
    "gpt-rank": JudgeTemplate(
        "gpt-rank", _gpt_rank_prompt, parse_gpt_rank, GenerationParams(max_tokens=16, temperature=0.0)
    ),
    "mt-bench": JudgeTemplate(
        "mt-bench", _mt_bench_prompt, parse_mt_bench, GenerationParams(max_tokens=1024, temperature=0.0)
    ),
}


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Judgement:
    """One judged ordering: the raw reply, its verdict about positions A/B, or why there is none.

    ``verdict`` is one of :data:`POSITION_VERDICTS`, None when the reply is unreadable (``text`` kept)
    or the call failed (``error`` set, ``text`` empty). ``cached``: read from the cache, not asked.
    ``margin``: the soft verdict in [−1, 1] (> 0 favours A) from the verdict token's probabilities
    (:func:`~llmblend.eval.soft_verdict.soft_margin`), None without logprobs.
    """

    verdict: str | None
    text: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    margin: float | None = None


@dataclass(frozen=True, slots=True)
class PairVerdict:
    """A pair judged in both orders (``forward``: answer_a shown as A; ``backward``: answer_b as A).

    ``winner`` is ``"a"``/``"b"`` (``model_a``/``model_b`` won in both orders), ``"tie"`` or
    ``"error"`` (an ordering failed or was unreadable: ``error`` says which). ``verdict`` is the
    MixInstruct ``cmp_results`` value about (``model_a``, ``model_b``): "A is better"/"B is better" for
    a win, "Same good"/"Same bad" when both orders said so, None for any other tie (MT-bench's
    ``[[C]]``, one "Same good" and one "Same bad", or a verdict that flips with the order) and for
    errors. ``consistent``: both orders gave the same winner, or both a tie.
    """

    item: JudgeItem
    winner: Winner
    verdict: str | None
    consistent: bool
    forward: Judgement
    backward: Judgement
    error: str | None = None

    @property
    def model_a(self) -> str:
        return self.item.model_a

    @property
    def model_b(self) -> str:
        return self.item.model_b

    @property
    def example_id(self) -> str:
        return self.item.example_id


@dataclass(slots=True)
class JudgeUsage:
    """What judging cost: backend ``calls`` made, orderings read from the cache, tokens, and problems.

    ``failures`` are calls that returned an error (not cached, asked again next run); ``unparsed``
    are replies no verdict could be read from (kept, and counted as errors, never as ties).
    """

    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0
    unparsed: int = 0

    def __add__(self, other: JudgeUsage) -> JudgeUsage:
        return JudgeUsage(**{name: getattr(self, name) + getattr(other, name) for name in _USAGE_FIELDS})

    def __sub__(self, other: JudgeUsage) -> JudgeUsage:
        """What was spent since ``other``, an earlier reading of the same usage."""
        return JudgeUsage(**{name: getattr(self, name) - getattr(other, name) for name in _USAGE_FIELDS})


_USAGE_FIELDS = tuple(JudgeUsage.__dataclass_fields__)


def _side(verdict: str, backward: bool) -> Literal["a", "b", "tie"]:
    """Which model a positional verdict favours; in the backward order position A holds ``model_b``."""
    if verdict in _TIES:
        return "tie"
    a_first = verdict == "A is better"
    return "a" if a_first != backward else "b"


def _tie_verdict(forward: str, backward: str) -> str | None:
    return forward if forward == backward and forward in CMP_VERDICTS else None


def combine_orderings(forward: str, backward: str) -> tuple[Literal["a", "b", "tie"], str | None, bool]:
    """``(winner, verdict, consistent)`` of a pair from its two positional verdicts (MT-bench's rule).

    ``forward`` saw (answer_a, answer_b) as (A, B), ``backward`` saw them swapped. The same model
    winning both → that model; both ties → a tie ("Same good"/"Same bad" kept when both agree);
    anything else (a flip with the order, or a win one way and a tie the other) → an inconsistent tie.
    """
    first, second = _side(forward, backward=False), _side(backward, backward=True)
    if first == second == "tie":
        return "tie", _tie_verdict(forward, backward), True
    if first == second:
        return first, "A is better" if first == "a" else "B is better", True
    return "tie", None, False


def _ordering_problem(name: str, judgement: Judgement) -> str | None:
    if judgement.error is not None:
        return f"{name} ordering failed: {judgement.error}"
    if judgement.verdict is None:
        return f"{name} ordering has no readable verdict: {judgement.text[:200]!r}"
    return None


def pair_verdict(item: JudgeItem, forward: Judgement, backward: Judgement) -> PairVerdict:
    """The :class:`PairVerdict` of an item from its two judged orderings (see :func:`combine_orderings`)."""
    problems = [_ordering_problem("forward", forward), _ordering_problem("backward", backward)]
    if forward.verdict is None or backward.verdict is None or any(problems):
        error = "; ".join(p for p in problems if p)
        return PairVerdict(item, "error", None, False, forward, backward, error)
    winner, verdict, consistent = combine_orderings(forward.verdict, backward.verdict)
    return PairVerdict(item, winner, verdict, consistent, forward, backward)


# ---------------------------------------------------------------- the judge


@dataclass(frozen=True, slots=True)
class _Ordering:
    """One question to the judge: an item with its answers in (first, second) order."""

    key: str
    item: JudgeItem
    swapped: bool  # answer_b is shown first

    @property
    def first(self) -> str:
        return self.item.answer_b if self.swapped else self.item.answer_a

    @property
    def second(self) -> str:
        return self.item.answer_a if self.swapped else self.item.answer_b


class PairwiseJudge:
    """An LLM judge of answer pairs, both orders each, with an optional resumable cache.

    ``prompt`` is ``"gpt-rank"`` (LLM-Blender §5, :data:`GPT_RANK_TEMPLATE`) or ``"mt-bench"``
    (:data:`MT_BENCH_PAIR_SYSTEM`); ``params`` default to greedy decoding with 16 (GPT-Rank) or 1024
    (MT-bench, which explains before its verdict) new tokens. ``cache_path`` is a JSONL file of judged
    orderings, one line each, keyed by a hash of (backend name, prompt, params, instruction, input,
    first answer, second answer): a rerun asks only what it lacks. ``usage`` adds up over calls.
    ``soft``: also ask for the top :data:`SOFT_TOP_LOGPROBS` logprobs of each token, for soft
    margins; a backend that refuses the option (HTTP 400) is asked again without it, from then on.
    """

    def __init__(
        self,
        backend: Backend,
        prompt: Literal["gpt-rank", "mt-bench"] = "gpt-rank",
        params: GenerationParams | None = None,
        cache_path: str | Path | None = None,
        *,
        soft: bool = False,
    ) -> None:
        if prompt not in TEMPLATES:
            raise ValueError(f"unknown judge prompt {prompt!r}; choose one of {sorted(TEMPLATES)}")
        self.backend = backend
        self.template = TEMPLATES[prompt]
        self.params = params or self.template.default_params
        if soft and not self.params.top_logprobs:
            self.params = replace(self.params, top_logprobs=SOFT_TOP_LOGPROBS)
        self.cache_path = None if cache_path is None else Path(cache_path)
        self.usage = JudgeUsage()

    def __repr__(self) -> str:
        return (
            f"PairwiseJudge(backend={self.backend.name!r}, prompt={self.template.name!r}, "
            f"cache_path={self.cache_path!r})"
        )

    def cache_key(self, item: JudgeItem, first: str, second: str) -> str:
        """The cache key of asking about ``item`` with answers (``first``, ``second``) as (A, B)."""
        fields = [self.backend.name, self.template.name, asdict(self.params)]
        fields += [item.instruction, item.input, first, second]
        return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()

    async def judge_pairs(self, items: Sequence[JudgeItem]) -> list[PairVerdict]:
        """Judge each item in both orders; one :class:`PairVerdict` per item, in order.

        Cached orderings are not asked again; the others run concurrently, at most
        ``backend.concurrency`` at a time, each appended to the cache as it finishes (failures are
        not cached). Never raises for a failed or unreadable judgement: that pair's winner is "error".
        """
        orderings = [self._orderings(item) for item in items]
        judged = self._read_cache()
        todo = {o.key: o for pair in orderings for o in pair if o.key not in judged}
        self.usage.cached += sum(1 for pair in orderings for o in pair if o.key in judged)
        slots = asyncio.Semaphore(max(1, self.backend.concurrency))
        answers = await asyncio.gather(*(self._ask(o, slots) for o in todo.values()))
        judged.update(zip(todo, answers, strict=True))
        verdicts = [pair_verdict(o.item, judged[o.key], judged[b.key]) for o, b in orderings]
        errors = sum(v.winner == "error" for v in verdicts)
        log.info("judged %d pairs (%d asked, %d errors)", len(verdicts), len(todo), errors)
        return verdicts

    async def judge_ordered(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        """Judge each item once, ``answer_a`` shown as A (a ranking strategy asks the other order
        itself when it debiases); cached orderings are not asked again. Never raises."""
        orderings = [
            _Ordering(self.cache_key(item, item.answer_a, item.answer_b), item, False) for item in items
        ]
        judged = self._read_cache()
        todo = {o.key: o for o in orderings if o.key not in judged}
        self.usage.cached += len(orderings) - len(todo)
        slots = asyncio.Semaphore(max(1, self.backend.concurrency))
        answers = await asyncio.gather(*(self._ask(o, slots) for o in todo.values()))
        judged.update(zip(todo, answers, strict=True))
        return [judged[o.key] for o in orderings]

    def cached_ordered(self, items: Sequence[JudgeItem]) -> list[Judgement | None]:
        """Each item's cached judgement with ``answer_a`` shown as A, or None where the cache has
        none; never calls the backend (what a pool fitted from the judge's verdicts reads)."""
        judged = self._read_cache()
        return [judged.get(self.cache_key(item, item.answer_a, item.answer_b)) for item in items]

    def _orderings(self, item: JudgeItem) -> tuple[_Ordering, _Ordering]:
        forward = _Ordering(self.cache_key(item, item.answer_a, item.answer_b), item, swapped=False)
        backward = _Ordering(self.cache_key(item, item.answer_b, item.answer_a), item, swapped=True)
        return forward, backward

    def _read_cache(self) -> dict[str, Judgement]:
        """Every cached ordering as a :class:`Judgement`, re-parsed from its stored reply."""
        if self.cache_path is None:
            return {}
        records = read_journal(self.cache_path, _CACHE_KEY)
        return {key: self._cached_judgement(record) for key, record in records.items()}

    def _cached_judgement(self, record: Mapping[str, Any]) -> Judgement:
        text = str(record.get("text", ""))
        margin = record.get("margin")
        return Judgement(
            self.template.parse(text),
            text,
            prompt_tokens=int(record.get("prompt_tokens", 0)),
            completion_tokens=int(record.get("completion_tokens", 0)),
            cached=True,
            margin=None if margin is None else float(margin),
        )

    async def _ask(self, ordering: _Ordering, slots: asyncio.Semaphore) -> Judgement:
        prompt = self.template.build(ordering.item, ordering.first, ordering.second)
        async with slots:
            generation = await self.backend.generate(prompt, self.params)
            if self._refused_logprobs(generation):
                generation = await self.backend.generate(prompt, self.params)
        self._count(generation)
        if not generation.ok:
            return Judgement(None, "", error=generation.error)
        judgement = Judgement(
            self.template.parse(generation.text),
            generation.text,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            margin=soft_margin(self.template.name, generation.logprobs),
        )
        if judgement.verdict is None:
            self.usage.unparsed += 1
            log.info("no verdict in %s's reply: %r", self.backend.name, generation.text[:200])
        self._store(ordering, generation, judgement.margin)
        return judgement

    def _refused_logprobs(self, generation: Generation) -> bool:
        """Whether a failed call was a 400 that names logprobs, to a request with them; if so, stop
        asking for them (a 400 about anything else is that call's failure only)."""
        failure = generation.failure
        refused = isinstance(failure, BackendResponseError) and failure.status == 400
        if not (refused and "logprob" in str(failure).lower() and self.params.top_logprobs):
            return False
        log.warning("%s refused a request with logprobs; judging without soft margins", self.backend.name)
        self.params = replace(self.params, top_logprobs=0)
        return True

    def _count(self, generation: Generation) -> None:
        self.usage.calls += 1
        self.usage.prompt_tokens += generation.prompt_tokens
        self.usage.completion_tokens += generation.completion_tokens
        self.usage.failures += not generation.ok

    def _store(self, ordering: _Ordering, generation: Generation, margin: float | None) -> None:
        if self.cache_path is None:
            return
        record = {
            _CACHE_KEY: ordering.key,
            "backend": self.backend.name,
            "prompt": self.template.name,
            "example_id": ordering.item.example_id,
            "model_first": ordering.item.model_b if ordering.swapped else ordering.item.model_a,
            "text": generation.text,
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
        }
        if margin is not None:
            record["margin"] = margin
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.cache_path, [record])


# ---------------------------------------------------------------- GPT-Rank (LLM-Blender §5)


def all_pairs(example: Example) -> list[JudgeItem]:
    """A :class:`JudgeItem` for every unordered pair of ``example``'s candidates, (i, j) with i < j."""
    instruction = example.instruction
    if not isinstance(instruction, str):  # a single user turn is its text; a conversation is flattened
        instruction = prompt_text(as_prompt(instruction))
    cands = example.candidates
    return [
        JudgeItem(instruction, example.input, a.text, b.text, a.model, b.model, example.id)
        for i, a in enumerate(cands)
        for b in cands[i + 1 :]
    ]


@dataclass(frozen=True, slots=True)
class GptRank:
    """GPT-Rank of one example's models: ``ranks`` (1 = best; ties share the average rank) by
    ``scores`` = wins − losses; ``errors`` counts pairs with no verdict, which score nothing.
    """

    ranks: dict[str, float]
    scores: dict[str, int]
    wins: dict[str, int]
    losses: dict[str, int]
    errors: int = 0


def gpt_rank(example_models: Sequence[str], verdicts: Iterable[PairVerdict]) -> GptRank:
    """GPT-Rank (LLM-Blender §5): +1 for a win, −1 for a loss, ties cancel; rank models by the total.

    ``verdicts`` are one example's; a verdict naming a model outside ``example_models`` is a
    ValueError. Models that won and lost nothing score 0.
    """
    models = list(dict.fromkeys(example_models))
    if not models:
        raise ValueError("gpt_rank needs the example's models; got none")
    wins, losses, errors = dict.fromkeys(models, 0), dict.fromkeys(models, 0), 0
    for v in verdicts:
        unknown = [m for m in (v.model_a, v.model_b) if m not in wins]
        if unknown:
            raise ValueError(f"verdict on {v.model_a!r} vs {v.model_b!r} names {unknown}, not in {models}")
        if v.winner in ("a", "b"):
            winner, loser = (v.model_a, v.model_b) if v.winner == "a" else (v.model_b, v.model_a)
            wins[winner] += 1
            losses[loser] += 1
        errors += v.winner == "error"
    scores = {m: wins[m] - losses[m] for m in models}
    ranks = rankdata([-scores[m] for m in models], method="average")
    return GptRank({m: float(r) for m, r in zip(models, ranks, strict=True)}, scores, wins, losses, errors)


def cmp_results(verdicts: Iterable[PairVerdict]) -> dict[str, str]:
    """Verdicts as MixInstruct ``cmp_results``: ``"model_a,model_b"`` → one of ``CMP_VERDICTS``.

    Errors and ties of no stated quality (``verdict`` None) are left out; as ties score nothing in
    GPT-Rank, the ranking read back from the mapping is the same.
    """
    results: dict[str, str] = {}
    for v in verdicts:
        if v.verdict is None:
            continue
        if "," in v.model_a or "," in v.model_b:
            raise ValueError(
                f"model names {v.model_a!r}, {v.model_b!r} cannot be a cmp_results key (a comma)"
            )
        results[f"{v.model_a},{v.model_b}"] = v.verdict
    return results


def to_battles(verdicts: Iterable[PairVerdict]) -> list[Battle]:
    """The non-error verdicts as :class:`~llmblend.eval.ratings.Battle` s, for Elo / Bradley–Terry."""
    return [Battle(v.model_a, v.model_b, v.winner) for v in verdicts if v.winner != "error"]
