"""The process group of a data-parallel training run (``torchrun`` or ``accelerate launch``).

A launcher starts K copies of one command and tells each its place through the environment:
``WORLD_SIZE`` (K), ``RANK`` (0 … K−1), ``LOCAL_RANK`` (its index on this machine), and
``MASTER_ADDR`` / ``MASTER_PORT`` where the copies meet. :func:`data_parallel` reads them, joins the
process group (gloo on CPU; NCCL when the device is CUDA, each process on ``cuda:LOCAL_RANK``) and
leaves it at the end. A group the caller already joined is used as it is and left alone.

Without those variables, or with ``WORLD_SIZE`` 1, nothing is joined: :class:`DataParallel` is then
a single process whose collectives return their input, so a plain run is exactly what it was
before data-parallel training existed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from llmblend.errors import LlmblendError

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """This process's place as the launcher set it: ``rank`` of ``world_size``, ``local_rank`` on
    this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "")
    if not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise LlmblendError(
            f"{name}={value!r} is not a whole number; start the processes with torchrun or "
            "accelerate launch, which set it"
        ) from None


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch:
    """The :class:`Launch` that ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` describe (default: one
    process). LlmblendError for values no launcher would set."""
    env = os.environ if environ is None else environ
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    if world_size < 1:
        raise LlmblendError(f"WORLD_SIZE={world_size}: it must be at least 1 (the number of processes)")
    if not 0 <= rank < world_size:
        raise LlmblendError(
            f"RANK={rank} with WORLD_SIZE={world_size}: a rank must be in 0..{world_size - 1}"
        )
    return Launch(rank=rank, world_size=world_size, local_rank=local_rank)


def training_device(device: str | None, launch: Launch) -> str | None:
    """The device this process trains on: ``device`` as configured for one process; with K
    processes on CUDA, ``cuda:LOCAL_RANK`` (one GPU each). LlmblendError for a configured GPU index,
    which K processes cannot share."""
    if launch.world_size == 1:
        return device
    from llmblend.hf_loading import pick_device

    resolved = pick_device(device)
    if resolved.type != "cuda":
        return str(resolved)
    if resolved.index is not None:
        raise LlmblendError(
            f"device {device!r} names one GPU, but the {launch.world_size} processes each need their own; "
            "set device: cuda (process LOCAL_RANK then uses cuda:LOCAL_RANK), or choose the GPUs with "
            "CUDA_VISIBLE_DEVICES"
        )
    return f"cuda:{launch.local_rank}"


def require_same_world_size(checkpoint: object, saved: int, now: int) -> None:
    """LlmblendError unless ``checkpoint`` was written by as many processes (``saved``) as this run
    has (``now``): with another number each step's batch (processes × batch_size) would change."""
    if saved == now:
        return
    fix = (
        "run it as one process"
        if saved == 1
        else f"launch {saved} processes (torchrun --nproc-per-node {saved})"
    )
    raise LlmblendError(
        f"{checkpoint} was written by a run of {saved} process(es) and this run has {now}; each step's "
        f"batch (processes × batch_size) would change. To resume, {fix}; or use another output_dir."
    )


class DataParallel:
    """This process's part in a data-parallel run: rank, world size, and the few collectives the
    training loop needs. ``DataParallel()`` is a single process (no group; collectives are no-ops)."""

    def __init__(self, launch: Launch | None = None, device: str | None = None) -> None:
        self.launch = launch or Launch()
        self.device = device

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, models and logs."""
        return self.launch.is_main

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: Any) -> Any:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over
        the processes in ``backward``; rank 0's weights broadcast at the start), or itself alone."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device is not None and self.device.startswith("cuda")
        return DistributedDataParallel(module, device_ids=[self.launch.local_rank] if cuda else None)

    def accumulating(self, model: Any, sync: bool):
        """Context for one micro-batch's forward and backward: with ``sync`` False (not the last of a
        step's micro-batches) the gradient all-reduce waits (DDP's ``no_sync``); the sum it averages
        at the last one is the same."""
        if self.distributed and not sync:
            return model.no_sync()
        return nullcontext()

    def shard(self, items: Sequence[T]) -> list[T]:
        """Every ``world_size``-th item from position ``rank``: this process's share of ``items``."""
        return list(items[self.rank :: self.world_size])

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed element-wise over the processes (float64 all-reduce)."""
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device or "cpu")
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value: T) -> list[T]:
        """Every process's ``value`` (any picklable object), in rank order, on every process."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        """Wait until every process gets here (e.g. until rank 0 has written a checkpoint)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def _joined(launch: Launch) -> Launch | None:
    """The place of this process in a group the caller already joined, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return Launch(dist.get_rank(), dist.get_world_size(), launch.local_rank)


def _use_gpu(device: str | None) -> bool:
    """Make ``device``, when a GPU, this process's current one (NCCL's collectives run there)."""
    if device is None or not device.startswith("cuda"):
        return False
    import torch

    torch.cuda.set_device(device)
    return True


def _join(launch: Launch, device: str | None) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        raise LlmblendError(
            f"WORLD_SIZE={launch.world_size} but this torch build has no torch.distributed; "
            "install a torch with distributed support, or run one process"
        )
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise LlmblendError(
            f"WORLD_SIZE={launch.world_size} but {' and '.join(missing)} not set; start the processes with "
            f"torchrun --nproc-per-node {launch.world_size} (or accelerate launch), which sets them"
        )
    backend = "nccl" if _use_gpu(device) else "gloo"
    dist.init_process_group(backend=backend, rank=launch.rank, world_size=launch.world_size)


@contextmanager
def data_parallel(device: str | None) -> Iterator[DataParallel]:
    """This process's :class:`DataParallel` for a run on ``device`` (as configured): joins the
    process group the launcher's environment describes and leaves it afterwards, or uses the group
    the caller joined. One process (no launcher) joins nothing and trains on ``device`` unchanged."""
    launch = launch_from_env()
    joined = _joined(launch)
    launch = joined or launch
    if launch.world_size == 1:
        yield DataParallel(launch, device)
        return
    resolved = training_device(device, launch)
    if joined is not None:
        _use_gpu(resolved)
        yield DataParallel(launch, resolved)
        return
    import torch.distributed as dist

    _join(launch, resolved)
    try:
        yield DataParallel(launch, resolved)
    finally:
        dist.destroy_process_group()
