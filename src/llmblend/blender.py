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

The stages are in :mod:`llmblend.blend`, each usable on its own: :class:`Blender` runs
:func:`~llmblend.blend.generate.generate_stage`, then a :class:`~llmblend.blend.pipeline.RankAndFuse`
(rank, fuse and guard stages). The ranker and a trained fuser are synchronous (torch, ONNX Runtime):
from asyncio they run in a worker thread, one call at a time each, so concurrent blends share them
safely. A fuser with an ``afuse`` coroutine (:class:`~llmblend.fuse.prompted.PromptedFuser`) is
awaited instead (:mod:`llmblend.blend.aio`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmblend.backends.base import Backend, GenerationParams
from llmblend.blend.aio import ClosesItsLoop, LoopRunner
from llmblend.blend.fuse import NO_FUSER_NOTE
from llmblend.blend.generate import DEFAULT_ID, as_slots, generate_stage
from llmblend.blend.pipeline import RankAndFuse
from llmblend.errors import LlmblendError
from llmblend.fuse.base import Fuser
from llmblend.fuse.guard import FusionGuard
from llmblend.rank.base import Ranker
from llmblend.types import BlendResult, Example, Prompt, Ranking

if TYPE_CHECKING:
    from llmblend.backends.config import GenerateConfig, Slot
    from llmblend.backends.fanout import UsageLog

__all__ = ["DEFAULT_ID", "NO_FUSER_NOTE", "Blender", "default_fuser", "load_fuser"]

log = logging.getLogger(__name__)


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


def _pipeline_attribute(name: str, doc: str) -> Any:
    """A Blender attribute kept on its :class:`~llmblend.blend.pipeline.RankAndFuse`."""
    return property(
        lambda self: getattr(self.pipeline, name),
        lambda self, value: setattr(self.pipeline, name, value),
        doc=doc,
    )


class Blender(ClosesItsLoop):
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

    The ranker, fuser, guard and their locks live on :attr:`pipeline` (a
    :class:`~llmblend.blend.pipeline.RankAndFuse`); ``ranker``, ``fuser``, ``top_k``, ``strategy``
    and ``guard`` read and write its attributes.
    """

    ranker = _pipeline_attribute("ranker", "The ranker (rank stage; usually the guard's ranker too).")
    fuser = _pipeline_attribute("fuser", "The fuser, or None (the top candidate is returned).")
    top_k = _pipeline_attribute("top_k", "How many of the best candidates the fuser reads.")
    strategy = _pipeline_attribute("strategy", "The ranking strategy (pairwise aggregation, §3.2).")
    guard = _pipeline_attribute("guard", "The fusion guard, or None.")

    def __init__(
        self,
        slots_or_backends: Sequence[Slot | Backend],
        ranker: Ranker,
        fuser: Fuser | None = None,
        *,
        top_k: int = 3,
        strategy: str | None = None,
        guard: bool | FusionGuard = True,
    ) -> None:
        #: Rank, fuse and guard: everything after generation.
        self.pipeline = RankAndFuse(ranker, fuser, top_k=top_k, strategy=strategy, guard=guard)
        self.slots = as_slots(slots_or_backends)
        #: Calls, tokens and latencies per backend over every :meth:`ablend` so far (None before the first).
        self.usage: UsageLog | None = None
        self._loop = LoopRunner("Blender", "ablend, arank_and_fuse")

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

    @classmethod
    def best_of_n(
        cls, backend: Backend, params: GenerationParams, n: int, ranker: Ranker, **options: Any
    ) -> Blender:
        """A Blender that asks ``backend`` for ``n`` seeded samples (:func:`~llmblend.blend.best_of_n.
        sample_slots`) and returns the best by ``ranker``: :meth:`blend` is then best-of-n."""
        from llmblend.blend.best_of_n import check_sampling, sample_slots

        check_sampling(params, n, backend.name)
        return cls(sample_slots(backend, params, n), ranker, None, **options)

    @property
    def ranker_name(self) -> str:
        return self.pipeline.ranker_name

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
        return self._loop.run(self.ablend(instruction, input, id=id))

    async def ablend(self, instruction: Prompt, input: str = "", *, id: str | None = None) -> BlendResult:
        """Blend the answers of every slot to one instruction; never raises for a failing model.

        Failed generations stay in ``result.candidates`` with their errors and are not ranked; when
        every model fails, the result has ``error`` set and an empty answer. One answer that came
        back is returned as is (``returned == "only candidate"``).
        """
        from llmblend.backends.fanout import UsageLog

        if not self.slots:
            raise ValueError(
                "this Blender has no models to ask; give it slots or backends, or use rank_and_fuse"
            )
        started = time.perf_counter()
        generated = await generate_stage(self.slots, instruction, input)
        if self.usage is None:
            self.usage = UsageLog()
        self.usage.add(generated.generations)
        if generated.answered:
            (result,) = await self.pipeline.arank_and_fuse([generated.example(id or DEFAULT_ID)])
        else:
            result = BlendResult(instruction, input, id, ranker=self.ranker_name, error=generated.error)
        generated.merge(result)
        result.id = id
        result.timings.total_s = time.perf_counter() - started
        return result

    # ---- examples that have candidates ------------------------------------------------------------

    def rank_and_fuse(
        self, examples: Sequence[Example], *, rankings: Sequence[Ranking | None] | None = None
    ) -> list[BlendResult]:
        """:meth:`arank_and_fuse` from synchronous code."""
        return self._loop.run(self.arank_and_fuse(examples, rankings=rankings))

    async def arank_and_fuse(
        self, examples: Sequence[Example], *, rankings: Sequence[Ranking | None] | None = None
    ) -> list[BlendResult]:
        """Rank, fuse and guard examples that already have candidates (no generation); one result each:
        :meth:`RankAndFuse.arank_and_fuse <llmblend.blend.pipeline.RankAndFuse.arank_and_fuse>`."""
        return await self.pipeline.arank_and_fuse(examples, rankings=rankings)

    # ---- cleanup ------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every backend (and the fuser's, when it has ``aclose``)."""
        seen: set[int] = set()
        for slot in self.slots:
            if id(slot.backend) not in seen:
                seen.add(id(slot.backend))
                await slot.backend.aclose()
        await self.pipeline.aclose(closed=seen)
