"""The stages of a blend (LLM-Blender §2–4), each usable on its own, and the pipeline that joins them.

* :func:`~llmblend.blend.generate.generate_stage`: every slot answers one instruction →
  :class:`~llmblend.blend.generate.Generated` (one candidate per slot, failures kept);
* :func:`~llmblend.blend.rank.rank_stage`: examples → :class:`~llmblend.blend.rank.Ranked` (one
  ranking per example, from one ranker call);
* :func:`~llmblend.blend.fuse.fuse_stage`: top-K items → :class:`~llmblend.blend.fuse.Fusion` (one
  :class:`~llmblend.blend.fuse.Answer` per item);
* :func:`~llmblend.blend.guard.guard_stage`: answers → :class:`~llmblend.blend.guard.Guarded` (the
  top candidate where the ranker prefers it to the fused answer);
* :class:`~llmblend.blend.pipeline.RankAndFuse`: rank, fuse and guard a batch into
  :class:`~llmblend.types.BlendResult` s; :class:`~llmblend.blender.Blender` puts generation in front.

Each stage result carries its wall ``seconds``. The synchronous/asynchronous bridges (worker threads
under a lock, an event loop for synchronous callers) are in :mod:`llmblend.blend.aio`.
"""

from llmblend.blend.fuse import NO_FUSER_NOTE, Answer, Fusion, fuse_stage
from llmblend.blend.generate import DEFAULT_ID, Generated, generate_stage
from llmblend.blend.guard import Guarded, guard_stage
from llmblend.blend.pipeline import RankAndFuse
from llmblend.blend.rank import Ranked, rank_stage

__all__ = [
    "DEFAULT_ID",
    "NO_FUSER_NOTE",
    "Answer",
    "Fusion",
    "Generated",
    "Guarded",
    "RankAndFuse",
    "Ranked",
    "fuse_stage",
    "generate_stage",
    "guard_stage",
    "rank_stage",
]
