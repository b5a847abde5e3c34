"""The whole LLM-Blender pipeline behind one object (Jiang, Ren, Lin, ACL 2023, §3–4).

:class:`Blender` asks N LLMs for candidates concurrently (§2), ranks them with a ranker (PairRanker,
§3), fuses the top-K with a fuser (GenFuser, §4, or a prompted LLM), and, optionally, checks the fused
answer against the top candidate with the ranker (:class:`~llmblend.fuse.guard.FusionGuard`). It
returns a :class:`~llmblend.types.BlendResult` that keeps every candidate (failed ones with their
errors), the ranking, the fused answer, which answer was returned and why, and the time and tokens
each stage took::

    with Blender.default() as blender:
        result = blender.blend("Name three uses of copper.")
        print(result.answer, result.returned)

:meth:`Blender.ablend` is the same from asyncio. :meth:`Blender.rank_and_fuse` skips generation, for
MixInstruct examples that already have candidates (``llmblend fuse``).

The ranker and a trained fuser are synchronous (torch, ONNX Runtime): from asyncio they run in a
worker thread, one call at a time each, so concurrent blends share them safely. A fuser with an
``afuse`` coroutine (:class:`~llmblend.fuse.prompted.PromptedFuser`) is awaited instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.errors import LlmblendError
from llmblend.fuse.base import Fused, FuseItem, Fuser
from llmblend.fuse.guard import FusionGuard, GuardDecision
from llmblend.rank.base import Ranker
from llmblend.types import (
    BackendCalls,
    BlendCandidate,
    BlendResult,
    Candidate,
    Example,
    Message,
    Prompt,
    Ranking,
    StageTimings,
    TokenUsage,
)

if TYPE_CHECKING:
    from llmblend.backends.config import GenerateConfig, Slot
    from llmblend.backends.fanout import UsageLog

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The id of an example made from one :meth:`Blender.ablend` call when the caller gives none.
DEFAULT_ID = "blend"
NO_FUSER_NOTE = "no fuser: returned the top-ranked candidate"


def default_fuser() -> Fuser | None:
    """The fuser that ships with llmblend (GenFuser: a LoRA adapter on the packaged Gemma-3-270M,
    served by llama.cpp), or None when it cannot be loaded here — then a :class:`Blender` returns
    the top-ranked candidate and says so in the result."""
    try:
        from llmblend.fuse.llama_fuser import LlamaCppFuser

        return LlamaCppFuser.default()
    except (LlmblendError, OSError, ImportError) as exc:
        log.warning(
            "the shipped fuser could not be loaded (%s); blending returns the top-ranked candidate", exc
        )
        return None


def load_fuser(spec: str | None) -> Fuser | None:
    """A fuser by spec: None or ``default`` → the shipped one (if any); ``none`` → no fuser;
    ``prompted:MODELS.yaml`` → a :class:`~llmblend.fuse.prompted.PromptedFuser` over that config's
    first backend; anything else → a trained fuser folder or hub id (adapter folders find their base).
    """
    if spec is None or spec == "default":
        return default_fuser()
    if spec == "none":
        return None
    if Path(spec, "adapter.gguf").is_file():
        from llmblend.fuse.llama_fuser import LlamaCppFuser

        return LlamaCppFuser.from_folder(spec)
    if spec.startswith("prompted:"):
        from llmblend.backends.config import build_backend, load_backend_config
        from llmblend.fuse.prompted import PromptedFuser

        backend_spec = load_backend_config(spec.removeprefix("prompted:")).backends[0]
        return PromptedFuser(build_backend(backend_spec))
    from llmblend.fuse.trained import TrainedFuser

    return TrainedFuser.from_pretrained(spec)


def _as_slots(slots_or_backends: Sequence[Slot | Backend]) -> list[Slot]:
    """Slots as given; a bare backend becomes one slot with the default (greedy) settings."""
    from llmblend.backends.config import Slot

    slots = []
    for entry in slots_or_backends:
        if isinstance(entry, Backend):
            slots.append(Slot(entry, GenerationParams()))
        elif isinstance(entry, Slot):
            slots.append(entry)
        else:
            raise TypeError(f"expected a Slot or a Backend, got {type(entry).__name__}: {entry!r}")
    return slots


def _with_input(instruction: Prompt, input_text: str) -> Prompt:
    """What the models are asked: the instruction, with the input after it when there is one."""
    if not input_text:
        return instruction
    if isinstance(instruction, str):
        return f"{instruction}\n\n{input_text}"
    *head, last = instruction
    return [*head, Message(last.role, f"{last.content}\n\n{input_text}")]


def _usage(generations: Sequence[Generation]) -> dict[str, BackendCalls]:
    usage: dict[str, BackendCalls] = {}
    for g in generations:
        calls = usage.setdefault(g.model, BackendCalls())
        calls.calls += 1
        calls.failures += not g.ok
        calls.prompt_tokens += g.prompt_tokens
        calls.completion_tokens += g.completion_tokens
        calls.max_latency_s = max(calls.max_latency_s, g.latency_s)
    return usage


def _ranking_problem(ranking: Ranking | None, n_candidates: int) -> str | None:
    """Why a given ranking cannot be used for ``n_candidates`` candidates, or None if it can."""
    if ranking is None:
        return "none given"
    if not ranking.ok:
        return f"it failed ({ranking.error})"
    if not ranking.order:
        return "its order is empty"
    if len(set(ranking.order)) != len(ranking.order) or not all(0 <= i < n_candidates for i in ranking.order):
        return f"its order {list(ranking.order)} is not a list of distinct indices below {n_candidates}"
    if ranking.scores and len(ranking.scores) != n_candidates:
        return f"it has {len(ranking.scores)} scores for {n_candidates} candidates"
    return None


class Blender:
    """Generate, rank, fuse, guard (LLM-Blender §3–4); see the module docstring.

    * ``slots_or_backends``: the models to ask, as :class:`~llmblend.backends.config.Slot` s (a
      backend with its sampling variant, from :func:`~llmblend.backends.config.build_slots`) or bare
      :class:`~llmblend.backends.base.Backend` s (asked greedily). May be empty for a Blender used
      only through :meth:`rank_and_fuse`.
    * ``ranker``: any :class:`~llmblend.rank.base.Ranker`; ranked with ``strategy`` (the pairwise
      aggregation of §3.2; rankers that score candidates one by one ignore it) and ``top_k``.
    * ``fuser``: any :class:`~llmblend.fuse.base.Fuser`, or None to return the top candidate.
    * ``top_k``: how many of the best candidates the fuser reads (K = 3 in the paper).
    * ``guard``: True checks each fused answer against the top candidate with the ranker (which must
      then have ``compare``, as PairRanker does; a TypeError says so otherwise; without a fuser there
      is nothing to check), False does not, or a :class:`~llmblend.fuse.guard.FusionGuard` of your
      own (another ranker, a threshold).
    """

    def __init__(
        self,
        slots_or_backends: Sequence[Slot | Backend],
        ranker: Ranker,
        fuser: Fuser | None = None,
        *,
        top_k: int = 3,
        strategy: str | None = "sparse-refine",
        guard: bool | FusionGuard = True,
    ) -> None:
        from llmblend.rank.strategies import STRATEGIES

        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"unknown ranking strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        self.slots = _as_slots(slots_or_backends)
        self.ranker = ranker
        self.fuser = fuser
        self.top_k = top_k
        self.strategy = strategy
        if guard is True:
            self.guard: FusionGuard | None = FusionGuard(ranker) if fuser is not None else None
        else:
            self.guard = guard or None
        #: Calls, tokens and latencies per backend over every :meth:`ablend` so far (None before the first).
        self.usage: UsageLog | None = None
        self._rank_lock = threading.Lock()
        self._fuse_lock = threading.Lock()
        self._runner: asyncio.Runner | None = None

    @classmethod
    def default(cls, config: str | Path | GenerateConfig | None = None, **options: Any) -> Blender:
        """The packaged pipeline: the models of ``config`` (a ``models.yaml`` path or a parsed config;
        default :data:`~llmblend.backends.config.DEFAULT_CONFIG`, the two small local models),
        :meth:`PairRanker.default() <llmblend.rank.pairranker.PairRanker.default>` and
        :func:`default_fuser` (None for now: the top candidate is returned). ``options`` go to
        :class:`Blender` (``top_k``, ``strategy``, ``guard``).
        """
        from llmblend.backends.config import GenerateConfig, build_slots, load_backend_config
        from llmblend.rank.pairranker import PairRanker

        parsed = config if isinstance(config, GenerateConfig) else load_backend_config(config)
        return cls(build_slots(parsed), PairRanker.default(), default_fuser(), **options)

    @property
    def ranker_name(self) -> str:
        return getattr(self.ranker, "name", type(self.ranker).__name__)

    def __repr__(self) -> str:
        models = [f"{s.backend.name}/{s.params.decoding_method}" for s in self.slots]
        fuser = getattr(self.fuser, "name", None)
        return (
            f"Blender(models={models}, ranker={self.ranker_name!r}, fuser={fuser!r}, top_k={self.top_k}, "
            f"strategy={self.strategy!r}, guard={self.guard is not None})"
        )

    # ---- one instruction ------------------------------------------------------------------------

    def blend(self, instruction: Prompt, input: str = "", *, id: str | None = None) -> BlendResult:
        """:meth:`ablend` from synchronous code (an event loop of this Blender's own, kept between
        calls so that backends keep their connections; :meth:`close` ends it)."""
        return self._run(self.ablend(instruction, input, id=id))

    async def ablend(self, instruction: Prompt, input: str = "", *, id: str | None = None) -> BlendResult:
        """Blend the answers of every slot to one instruction; never raises for a failing model.

        Failed generations stay in ``result.candidates`` with their errors and are not ranked; when
        every model fails, the result has ``error`` set and an empty answer. One answer that came
        back is returned as is (``returned == "only candidate"``).
        """
        from llmblend.backends.fanout import UsageLog, ask_all

        if not self.slots:
            raise ValueError(
                "this Blender has no models to ask; give it slots or backends, or use rank_and_fuse"
            )
        started = time.perf_counter()
        generations = await ask_all(_with_input(instruction, input), self.slots)
        generate_s = time.perf_counter() - started
        if self.usage is None:
            self.usage = UsageLog()
        self.usage.add(generations)

        candidates = [
            BlendCandidate(
                model=g.model,
                decoding_method=slot.params.decoding_method,
                text=g.text,
                error=g.error,
                prompt_tokens=g.prompt_tokens,
                completion_tokens=g.completion_tokens,
                latency_s=g.latency_s,
            )
            for slot, g in zip(self.slots, generations, strict=True)
        ]
        ok = [i for i, g in enumerate(generations) if g.ok]
        example = Example(
            id=id or DEFAULT_ID,
            instruction=instruction,
            input=input,
            candidates=[
                Candidate(
                    candidates[i].model, candidates[i].text, decoding_method=candidates[i].decoding_method
                )
                for i in ok
            ],
        )
        tokens = TokenUsage(
            sum(g.prompt_tokens for g in generations), sum(g.completion_tokens for g in generations)
        )
        if ok:
            (result,) = await self.arank_and_fuse([example])
        else:
            failures = "; ".join(f"{c.model} ({c.decoding_method}): {c.error}" for c in candidates)
            result = BlendResult(
                instruction, input, id, ranker=self.ranker_name, error=f"every model failed: {failures}"
            )
        # the result speaks of the ok candidates; put them back among all the slots' candidates
        for j, candidate in enumerate(result.candidates):
            candidates[ok[j]].score, candidates[ok[j]].rank = candidate.score, candidate.rank
        result.candidates = candidates
        result.ranking = tuple(ok[j] for j in result.ranking)
        result.top_k = tuple(ok[j] for j in result.top_k)
        result.id = id
        result.tokens = {"generate": tokens, **result.tokens}
        result.usage = _usage(generations)
        result.timings.generate_s = generate_s
        result.timings.total_s = time.perf_counter() - started
        return result

    # ---- examples that have candidates ------------------------------------------------------------

    def rank_and_fuse(
        self, examples: Sequence[Example], *, rankings: Sequence[Ranking | None] | None = None
    ) -> list[BlendResult]:
        """:meth:`arank_and_fuse` from synchronous code."""
        return self._run(self.arank_and_fuse(examples, rankings=rankings))

    async def arank_and_fuse(
        self, examples: Sequence[Example], *, rankings: Sequence[Ranking | None] | None = None
    ) -> list[BlendResult]:
        """Rank, fuse and guard examples that already have candidates (no generation); one result each.

        All examples are ranked in one ranker call, fused in one fuser call and guarded in one
        ``compare`` call. ``rankings[i]``, when given and usable (indices within the example's
        candidates), is used instead of ranking example ``i`` again (the ``ranking`` field that
        ``llmblend rank`` writes). Each result's stage times are its share of the batch's.
        """
        if rankings is not None and len(rankings) != len(examples):
            raise ValueError(f"{len(rankings)} rankings for {len(examples)} examples")
        started = time.perf_counter()
        results = [
            BlendResult(
                ex.instruction,
                ex.input,
                ex.id,
                candidates=[BlendCandidate(c.model, c.decoding_method, c.text) for c in ex.candidates],
                ranker=self.ranker_name,
            )
            for ex in examples
        ]
        n = max(len(examples), 1)
        timings = StageTimings()

        clock = time.perf_counter()
        final = await self._rankings(examples, rankings, results)
        timings.rank_s = time.perf_counter() - clock

        todo: list[int] = []  # examples that go to the fuser
        for k, (example, ranking, result) in enumerate(zip(examples, final, results, strict=True)):
            if self._place(example, ranking, result):
                todo.append(k)

        clock = time.perf_counter()
        fused = await self._fuse(
            [
                FuseItem(
                    examples[k].instruction,
                    tuple(examples[k].candidates[i].text for i in results[k].top_k),
                    examples[k].input,
                )
                for k in todo
            ]
        )
        timings.fuse_s = time.perf_counter() - clock

        clock = time.perf_counter()
        decisions = await self._guard([examples[k] for k in todo], fused, [results[k] for k in todo])
        timings.guard_s = time.perf_counter() - clock

        for k, answer, decision in zip(todo, fused, decisions, strict=True):
            self._settle(results[k], answer, decision)
        total = time.perf_counter() - started
        for result in results:
            result.timings = StageTimings(
                rank_s=timings.rank_s / n,
                fuse_s=timings.fuse_s / n,
                guard_s=timings.guard_s / n,
                total_s=total / n,
            )
        return results

    # ---- stages ---------------------------------------------------------------------------------

    async def _rankings(
        self, examples: Sequence[Example], given: Sequence[Ranking | None] | None, results: list[BlendResult]
    ) -> list[Ranking]:
        """One ranking per example: the usable given ones, the others from one ranker call."""
        final: list[Ranking | None] = [None] * len(examples)
        for k, example in enumerate(examples):
            if len(example.candidates) == 0:
                final[k] = Ranking.failed("the example has no candidates")
            elif len(example.candidates) == 1:
                final[k] = Ranking(scores=(0.0,), order=(0,))
            elif given is not None and given[k] is not None:
                problem = _ranking_problem(given[k], len(example.candidates))
                if problem is None:
                    final[k] = given[k]
                else:
                    results[k].notes.append(f"the given ranking was not usable ({problem}); ranked again")
        todo = [k for k, ranking in enumerate(final) if ranking is None]
        if todo:
            batch = [examples[k] for k in todo]
            try:
                ranked = await asyncio.to_thread(self._rank_locked, batch)
                if len(ranked) != len(batch):
                    raise RuntimeError(
                        f"the ranker returned {len(ranked)} rankings for {len(batch)} examples"
                    )
            except Exception as exc:  # a ranker bug must not cost the whole batch its answers
                log.exception("ranker %s failed", self.ranker_name)
                ranked = [Ranking.failed(f"{type(exc).__name__}: {exc}")] * len(batch)
            for k, ranking in zip(todo, ranked, strict=True):
                final[k] = ranking
                results[k].n_forward = ranking.n_forward
        return [r if r is not None else Ranking.failed("not ranked") for r in final]

    def _rank_locked(self, examples: Sequence[Example]) -> list[Ranking]:
        with self._rank_lock:
            return list(self.ranker.rank(examples, strategy=self.strategy, top_k=self.top_k))

    def _place(self, example: Example, ranking: Ranking, result: BlendResult) -> bool:
        """Write the ranking into ``result``; True when the example goes on to the fuser."""
        if not ranking.ok:
            result.error = f"ranking failed: {ranking.error}"
            return False
        result.ranking = tuple(ranking.order)
        result.top_k = result.ranking[: self.top_k]
        for place, i in enumerate(ranking.order, start=1):
            result.candidates[i].rank = place
        for i, score in enumerate(ranking.scores):
            result.candidates[i].score = float(score)
        top = example.candidates[result.ranking[0]].text
        if len(example.candidates) == 1:
            result.answer, result.returned = top, "only candidate"
            return False
        if self.fuser is None:
            result.answer, result.returned = top, "top"
            result.notes.append(NO_FUSER_NOTE)
            return False
        return True

    async def _fuse(self, items: list[FuseItem]) -> list[Fused]:
        if not items or self.fuser is None:
            return []
        fuser = self.fuser
        name = getattr(fuser, "name", type(fuser).__name__)
        try:
            afuse = getattr(fuser, "afuse", None)
            if afuse is not None and inspect.iscoroutinefunction(afuse):
                fused = list(await afuse(items))
            else:
                fused = await asyncio.to_thread(self._fuse_locked, items)
            if len(fused) != len(items):
                raise RuntimeError(f"the fuser returned {len(fused)} answers for {len(items)} items")
        except Exception as exc:  # failures are data: every item gets the error
            log.exception("fuser %s failed", name)
            return [Fused("", name, error=f"{type(exc).__name__}: {exc}") for _ in items]
        return fused

    def _fuse_locked(self, items: list[FuseItem]) -> list[Fused]:
        assert self.fuser is not None
        with self._fuse_lock:
            return list(self.fuser.fuse(items))

    async def _guard(
        self, examples: Sequence[Example], fused: Sequence[Fused], results: Sequence[BlendResult]
    ) -> list[GuardDecision | None]:
        if self.guard is None or not fused:
            return [None] * len(fused)
        tops = [ex.candidates[result.ranking[0]].text for ex, result in zip(examples, results, strict=True)]
        try:
            return list(
                await asyncio.to_thread(self._guard_locked, [ex.source for ex in examples], list(fused), tops)
            )
        except Exception as exc:  # keep the fused answers, unchecked, and say so
            log.exception("the fusion guard failed")
            for result in results:
                result.notes.append(f"the fusion guard failed ({type(exc).__name__}: {exc}); not checked")
            return [None] * len(fused)

    def _guard_locked(self, sources: list[str], fused: list[Fused], tops: list[str]) -> list[GuardDecision]:
        assert self.guard is not None
        with self._rank_lock:  # the guard's ranker is usually the ranker
            return self.guard.check_many(sources, fused, tops)

    def _settle(self, result: BlendResult, fused: Fused, decision: GuardDecision | None) -> None:
        """Choose the answer of a fused example."""
        result.fused = fused
        result.tokens["fuse"] = TokenUsage(fused.prompt_tokens, fused.completion_tokens)
        top = result.candidates[result.ranking[0]].text
        if decision is not None:
            result.answer, result.returned, result.guard_margin = (
                decision.text,
                decision.returned,
                decision.margin,
            )
            if decision.returned == "top":
                result.notes.append(f"guard: {decision.reason}")
        elif fused.ok and fused.text.strip():
            result.answer, result.returned = fused.text, "fused"
        else:
            result.answer, result.returned = top, "top"
            why = fused.error or "the fused answer is empty"
            result.notes.append(f"fusion failed ({why}): returned the top candidate")

    # ---- event loop and cleanup -----------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise RuntimeError(
                "a synchronous Blender method was called inside a running event loop; "
                "await the a-prefixed one instead (ablend, arank_and_fuse)"
            )
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coroutine)

    async def aclose(self) -> None:
        """Close every backend (and the fuser's, when it has ``aclose``)."""
        seen: set[int] = set()
        for slot in self.slots:
            if id(slot.backend) not in seen:
                seen.add(id(slot.backend))
                await slot.backend.aclose()
        closer = getattr(self.fuser, "aclose", None)
        fuser_backend = getattr(self.fuser, "backend", None)
        if closer is not None and inspect.iscoroutinefunction(closer) and id(fuser_backend) not in seen:
            await closer()

    def close(self, *, close_backends: bool = True) -> None:
        """:meth:`aclose` (unless ``close_backends`` is False), then end the event loop of the
        synchronous methods."""
        if self._runner is None:
            if close_backends:
                self._runner = asyncio.Runner()
            else:
                return
        try:
            if close_backends:
                self._run(self.aclose())
        finally:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> Blender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Blender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
