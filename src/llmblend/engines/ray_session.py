"""What every Ray job of llmblend shares: joining Ray, mapping shards over an actor pool, Ray's errors.

A job cuts its input into shards (one row each, put into the object store as a block of its own by
:func:`put_shard`, a few at a time as the driver reads them: :mod:`llmblend.engines.feed`), and
:func:`map_shards` runs them on a Ray Data ``map_batches`` over an actor pool: each actor builds its
heavy parts (a ranker, backends) once in its constructor and then handles one shard per call.
Rows come back as the workers finish them.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from llmblend.errors import LlmblendError, MissingExtraError

log = logging.getLogger(__name__)


def require_ray(purpose: str = "--engine ray") -> Any:
    """The ``ray`` module with Ray Data, or :class:`MissingExtraError` naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtraError("ray[data]", "ray", purpose) from None
    return ray


@dataclass(frozen=True, slots=True)
class RayOptions:
    """Where a job runs and with how many workers: ``address`` None starts a local Ray for the job
    (or joins the cluster of the Ray job it runs in), ``"auto"`` or ``"host:port"`` joins a cluster
    this machine is a node of (Ray Data does not run under Ray Client: no ``ray://``; submit the
    command as a Ray job instead); each of the ``num_workers`` actors takes
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` for
    it); a dead worker is restarted and its shard retried ``max_retries`` times."""

    address: str | None = None
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    max_retries: int = 3
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.address is not None and self.address.startswith("ray://"):
            raise ValueError(
                f"--address {self.address}: Ray Data, which runs llmblend's Ray jobs, does not run under "
                "Ray Client (ray://). Submit the command to the cluster as a Ray job instead: ray job "
                "submit --address http://HEAD:8265 -- llmblend ... --engine ray (without --address: "
                "a Ray job joins its cluster), or run it on a node of the cluster with --address auto"
            )
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be above 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be 0 or more, got {self.gpus_per_worker}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")

    @property
    def cpus_needed(self) -> float:
        return self.num_workers * self.cpus_per_worker

    def fit(self, shards: int) -> RayOptions:
        """No more workers than shards (a worker without a shard would idle)."""
        return replace(self, num_workers=min(self.num_workers, shards))


@contextmanager
def ray_session(address: str | None) -> Iterator[float]:
    """Join Ray (``address``), start a local one (None), or use the one this process already joined;
    yields the seconds that took, and shuts Ray down afterwards only if this call connected."""
    ray = require_ray()
    started = time.perf_counter()
    owned = not ray.is_initialized()
    if owned:
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if not joins_a_cluster(address):
            options["include_dashboard"] = False
        try:
            ray.init(address=address, **options)
        except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
            raise LlmblendError(
                f"could not join the Ray cluster at {address}: {_gist(exc)}. Check the address; a cluster "
                "with token authentication needs RAY_AUTH_MODE=token and the cluster's token here "
                "(RAY_AUTH_TOKEN, or ~/.ray/auth_token); one without needs neither"
            ) from None
    try:
        yield time.perf_counter() - started
    finally:
        if owned:
            ray.shutdown()


def check_cpus(options: RayOptions) -> None:
    """ValueError when the Ray this process started has too few CPUs for the workers; a warning when
    a cluster it joined has (its workers wait until the cluster grows)."""
    cpus = require_ray().cluster_resources().get("CPU", 0)
    if cpus >= options.cpus_needed:
        return
    message = (
        f"--num-workers {options.num_workers} needs {options.cpus_needed:g} CPUs "
        f"({options.cpus_per_worker:g} per worker) and this Ray cluster has {cpus:g}"
    )
    if not joins_a_cluster(options.address):
        raise ValueError(f"{message}: lower --num-workers")
    log.warning("%s: workers wait until the cluster grows", message)


def joins_a_cluster(address: str | None) -> bool:
    """Whether ``ray.init(address)`` joins a running cluster rather than starting a Ray of its own:
    an address, or none and ``RAY_ADDRESS`` set (as in a command submitted as a Ray job)."""
    return address is not None or bool(os.environ.get("RAY_ADDRESS"))


def put_shard(row: dict[str, Any]) -> Any:
    """One shard's row as a one-row Arrow table in Ray's object store (which spills to disk when
    full): the block :func:`map_shards` reads, so the driver keeps only its reference."""
    import pyarrow as pa

    return require_ray().put(pa.Table.from_pylist([row]))


def map_shards(
    dataset: Any,
    actor: type,
    actor_kwargs: dict[str, Any],
    columns: Sequence[str],
    options: RayOptions,
) -> Iterator[dict[str, Any]]:
    """``actor(**actor_kwargs)(batch)`` over the shard rows of ``dataset`` (a
    :class:`~llmblend.engines.feed.ShardFeed`'s), on ``options.num_workers`` actors; each
    result row's ``columns`` as plain Python values, in the order workers finish them.

    A worker that dies is restarted and its shard retried, ``options.max_retries`` times; then the
    job fails with :class:`LlmblendError` (what the workers had finished was already yielded).
    """
    ray = require_ray()
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts / max_task_retries only as (deprecated) extra remote args
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        mapped = dataset.map_batches(
            actor,
            batch_size=1,
            # one shard at a time per actor: shards are coarse, so a queue on the first actor that
            # is ready would leave the others idle
            compute=ray.data.ActorPoolStrategy(size=options.num_workers, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs=actor_kwargs,
            num_cpus=options.cpus_per_worker,
            num_gpus=options.gpus_per_worker or None,
            max_restarts=options.max_retries,
            max_task_retries=options.max_retries,
        )
    try:
        for row in mapped.iter_rows():
            yield {column: _plain(row[column]) for column in columns}
    except ray.exceptions.RayError as exc:
        raise LlmblendError(
            f"the Ray workers failed (finished shards are kept for a rerun): {_gist(exc)}"
        ) from exc


def batch_rows(batch: dict[str, Any], handle: Any, columns: Sequence[str]) -> dict[str, list[Any]]:
    """A ``map_batches`` batch of shard rows through ``handle(row) -> result row``, as columns."""
    out: dict[str, list[Any]] = {column: [] for column in columns}
    keys = list(batch)
    for values in zip(*(batch[key] for key in keys), strict=True):
        result = handle({key: _plain(value) for key, value in zip(keys, values, strict=True)})
        for column in columns:
            out[column].append(result[column])
    return out


@dataclass(slots=True)
class WorkerStats:
    """What one worker (an actor process) did in this run."""

    shards: int = 0
    records: int = 0
    failed: int = 0
    seconds: float = 0.0


def per_worker(rows: Sequence[dict[str, Any]], records_column: str) -> dict[str, WorkerStats]:
    """The result rows (``worker``, ``failed``, ``seconds`` and ``records_column``) added up per
    worker, by worker label."""
    workers: dict[str, WorkerStats] = {}
    for row in rows:
        stats = workers.setdefault(row["worker"], WorkerStats())
        stats.shards += 1
        stats.records += row[records_column]
        stats.failed += row["failed"]
        stats.seconds += row["seconds"]
    return dict(sorted(workers.items()))


def worker_label() -> str:
    """Who is working: the actor's id, its process and its node (for the final table)."""
    import os

    import ray

    context = ray.get_runtime_context()
    return f"{context.get_actor_id()[:8]} pid {os.getpid()} on {context.get_node_id()[:8]}"


def _gist(exc: Exception) -> str:
    """The gist of a Ray error: its last line, which for a worker's traceback is the original error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _plain(value: Any) -> Any:
    """A numpy scalar from Ray Data as the plain Python value."""
    return value.item() if hasattr(value, "item") else value
