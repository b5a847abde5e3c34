"""The gateway's long-lived parts, built once and shared by every request.

:class:`Gateway` holds the backends (one object per backend name, with its configured sampling
variants as :class:`~llmblend.backends.config.Slot` s), the ranker with its lock and
:class:`~llmblend.serve.batching.RankBatcher`, the fuser, one
:class:`~llmblend.blend.pipeline.RankAndFuse` per profile (all sharing the ranker's and the fuser's
locks), the traffic logs and the metrics. :meth:`Gateway.build` loads the models (slow: call it in a
worker thread); :meth:`Gateway.aclose` closes every backend and stops llama.cpp child servers.
Parts may be given ready-made (``ranker=``, ``fuser=``, ``backends=``), as the tests and the
benchmark do.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from llmblend.backends.base import Backend
from llmblend.backends.config import GenerateConfig, Slot, build_slots
from llmblend.blend.best_of_n import sample_slots
from llmblend.blend.pipeline import RankAndFuse
from llmblend.fuse.base import Fuser
from llmblend.rank.base import Ranker
from llmblend.serve.batching import RankBatcher
from llmblend.serve.config import ProfileSpec, RankerSpec, ServeConfig
from llmblend.serve.metrics import Metrics

log = logging.getLogger(__name__)


def build_ranker(spec: RankerSpec) -> Ranker:
    """The ranker a config names: a ``-r`` spec, or the (pool-aware) PairRanker."""
    from llmblend.rank.registry import load_ranker, load_ranker_with_pool

    if spec.spec is not None:
        return load_ranker(spec.spec)
    return load_ranker_with_pool(spec.model, spec.runtime, spec.batch_size, spec.pool)


def batches_forwards(ranker: Ranker) -> bool:
    """Whether cross-request batches can pay for ``ranker``: not on a runtime that scores one pair
    per forward (``onnx-int8``), where bench/bench_gateway.py measured batching 7–27% slower."""
    from llmblend.rank.pairranker import PER_PAIR_RUNTIMES

    return getattr(ranker, "runtime", None) not in PER_PAIR_RUNTIMES


def build_fuser(spec: str | None) -> Fuser | None:
    from llmblend.blender import load_fuser

    return load_fuser(spec or "none")


@dataclass(slots=True)
class Profile:
    """One exposed model that is more than one backend: its spec, the slots it asks and its pipeline."""

    name: str
    spec: ProfileSpec
    slots: list[Slot]
    pipeline: RankAndFuse

    @property
    def fuses(self) -> bool:
        return self.pipeline.fuser is not None


@dataclass
class Gateway:
    """See the module docstring."""

    config: ServeConfig
    backends: dict[str, Backend]
    slots: dict[str, list[Slot]]
    ranker: Ranker
    fuser: Fuser | None
    metrics: Metrics = field(default_factory=Metrics)
    rank_lock: threading.Lock = field(default_factory=threading.Lock)
    fuse_lock: threading.Lock = field(default_factory=threading.Lock)
    profiles: dict[str, Profile] = field(default_factory=dict)
    traffic: object | None = None  # llmblend.serve.traffic.TrafficLog
    feedback: object | None = None  # llmblend.serve.traffic.FeedbackLog

    def __post_init__(self) -> None:
        batching = self.config.batching
        batched = batching.enabled and batches_forwards(self.ranker)
        self.batcher = RankBatcher(
            self.ranker,
            window_s=batching.window_ms / 1000 if batched else 0.0,
            max_examples=batching.max_examples if batched else 1,
            lock=self.rank_lock,
            on_batch=self.metrics.ranker_batch.observe,
        )
        self._open_traffic()

    @classmethod
    def build(
        cls,
        config: ServeConfig,
        *,
        ranker: Ranker | None = None,
        fuser: Fuser | str | None = "config",
        backends: dict[str, Backend] | None = None,
    ) -> Gateway:
        """Load everything ``config`` names (models included: seconds to minutes), except the parts
        given. ``backends`` replaces the config's backend objects by name (their sampling variants
        still come from the config)."""
        all_slots = build_slots(GenerateConfig(defaults=config.defaults, backends=config.backends))
        if backends:
            all_slots = [Slot(backends.get(s.backend.name, s.backend), s.params) for s in all_slots]
        slots: dict[str, list[Slot]] = {}
        for slot in all_slots:
            slots.setdefault(slot.backend.name, []).append(slot)
        gateway = cls(
            config=config,
            backends={name: group[0].backend for name, group in slots.items()},
            slots=slots,
            ranker=ranker if ranker is not None else build_ranker(config.ranker),
            fuser=build_fuser(config.fuser) if fuser == "config" else fuser,
        )
        return gateway

    # ---- profiles ---------------------------------------------------------------------------------

    def profile(self, name: str) -> Profile | None:
        """The profile an exposed model name stands for (made on first use), or None for a backend
        name or an unknown one."""
        if name in self.profiles:
            return self.profiles[name]
        spec = self.config.profile(name)
        if spec is None:
            return None
        fuser = self.fuser if spec.kind == "blend" and spec.fuse else None
        pipeline = RankAndFuse(
            self.ranker,
            fuser,
            top_k=spec.top_k,
            strategy=spec.strategy,
            guard=spec.guard and fuser is not None,
        )
        pipeline.rank_lock, pipeline.fuse_lock = self.rank_lock, self.fuse_lock
        profile = Profile(name, spec, self._profile_slots(spec), pipeline)
        self.profiles[name] = profile
        return profile

    def _profile_slots(self, spec: ProfileSpec) -> list[Slot]:
        names = spec.backends or list(self.slots)
        if spec.kind == "best-of-n":  # seeds again per request (run.request_params) when one names a seed
            (name,) = names
            first = self.slots[name][0]
            return sample_slots(first.backend, first.params, spec.n)
        return [slot for name in names for slot in self.slots[name]]

    def owner(self, name: str) -> str:
        """Who a model name belongs to, for ``/v1/models``: ``llmblend`` for profiles, else the backend."""
        return "llmblend" if self.config.profile(name) is not None else f"backend:{name}"

    # ---- traffic ----------------------------------------------------------------------------------

    def _open_traffic(self) -> None:
        spec = self.config.traffic
        if spec is None:
            return
        from llmblend.serve.traffic import FeedbackLog, TrafficLog

        self.traffic = TrafficLog(spec.log, max_bytes=spec.max_bytes, backups=spec.backups)
        self.feedback = FeedbackLog(spec.feedback_path)

    # ---- shutdown ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every backend (llama.cpp child servers stop) and the fuser."""
        for backend in self.backends.values():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing backend %s failed", backend.name)
        close = getattr(self.fuser, "aclose", None) or getattr(self.fuser, "close", None)
        if close is not None:
            result = close()
            if hasattr(result, "__await__"):
                await result
