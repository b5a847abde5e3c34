"""The shards of a job over MixInstruct files (rank, eval judge): fixed slices of the input, each
finished one in its own file, merged in order.

Shard ``k`` holds the pending examples (those OUT lacks, by ``id``) among input positions
``[k * size, (k + 1) * size)`` of the first ``limit`` examples (several input files count as one,
in order). :func:`pending_shards` streams them: the driver never holds more than one shard's
examples. The boundaries depend only on the
input order and the shard size, never on what OUT holds, so a rerun after a kill (even one in the
middle of the merge) finds the same shards and redoes only those without a finished file.

A finished shard is ``OUT.shards/shard-000003.jsonl``: its output records, serialized as the local
engine appends them. It appears by rename only, so it is whole or absent. ``manifest.json`` beside
the shards records the settings they were made with; a rerun with other settings fails instead
of mixing rankings. The merge appends each shard's records to OUT in input order (one flushed
write per shard, skipping ids OUT already has) and then removes the folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from llmblend.atomic import write_file
from llmblend.data.jsonl import Sources, source_paths
from llmblend.data.mixinstruct import example_from_record, read_mixinstruct_lines
from llmblend.errors import LlmblendError
from llmblend.rank.rank_file import RANKING_FIELD
from llmblend.types import Example

MANIFEST = "manifest.json"


class ShardIds(NamedTuple):
    """Which shard, and the ids of its pending examples, in input order (what the merge needs)."""

    index: int
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Shard:
    """The pending examples of one slice of the input, in input order: their ids, and the examples
    as MixInstruct JSONL in UTF-8, one record a line (what a worker receives). Bytes, not the
    parsed examples (nor a str, which takes 4 bytes a character once a text holds an emoji): about
    a fifth of the memory."""

    index: int
    ids: tuple[str, ...]
    data: bytes

    @classmethod
    def of_lines(cls, index: int, lines: Sequence[tuple[str, str]]) -> Shard:
        """The shard of (id, JSON line) pairs, the lines kept as read (nothing re-serialised)."""
        text = "".join(line + "\n" for _, line in lines)
        return cls(index, tuple(example_id for example_id, _ in lines), text.encode("utf-8"))

    @property
    def examples(self) -> list[Example]:
        return examples_of(self.data)

    @property
    def key(self) -> ShardIds:
        return ShardIds(self.index, self.ids)


def examples_of(data: bytes | str) -> list[Example]:
    """The examples of a shard's JSONL (what a worker does with :attr:`Shard.data`)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
    return [example_from_record(json.loads(line)) for line in text.split("\n") if line.strip()]


def shard_folder(out: str | Path) -> Path:
    """Where the shards of OUT are kept: ``OUT.shards`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.name}.shards")


def source_setting(sources: Sources) -> list[str]:
    """The input files as a job's settings record them (resolved paths, in order)."""
    return [str(path.resolve()) for path in source_paths(sources)]


def pending_shards(
    sources: Sources, done: Collection[str], shard_size: int, limit: int | None = None
) -> Iterator[Shard]:
    """The shards of the first ``limit`` examples of ``sources`` with examples whose id is not in
    ``done``, one at a time, as the input is read."""
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    lines = islice(read_mixinstruct_lines(sources), limit)
    for index, chunk in enumerate(_slices(lines, shard_size)):
        pending = [(example_id, line) for example_id, line in chunk if example_id not in done]
        if pending:
            yield Shard.of_lines(index, pending)


def _slices(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(items, size)):
        yield chunk


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.jsonl"


def prepare_folder(folder: Path, settings: dict[str, Any]) -> None:
    """Create ``folder`` with a manifest of ``settings``, or check that its manifest has the same.

    Temporary files a killed run left behind are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        write_file(manifest, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return
    before = json.loads(manifest.read_text(encoding="utf-8"))
    changed = [key for key in sorted(set(before) | set(settings)) if before.get(key) != settings.get(key)]
    if changed:
        key = changed[0]
        raise LlmblendError(
            f"{folder} holds shards made with other settings ({key}: {before.get(key)!r} then, "
            f"{settings.get(key)!r} now); rerun with the same settings to finish them, or delete {folder} "
            "to start over"
        )


def shard_ids(path: Path) -> list[str]:
    """The ``id`` of each record of a finished shard file."""
    return [json.loads(line)["id"] for line in _lines(path.read_bytes().decode("utf-8"))]


def is_finished(folder: Path, shard: ShardIds | Shard) -> bool:
    """Whether the shard has a finished file holding every example it still needs."""
    path = shard_path(folder, shard.index)
    return path.is_file() and set(shard.ids) <= set(shard_ids(path))


def write_shard(folder: Path, index: int, text: str) -> Path:
    """Write a finished shard's records (JSONL text) atomically: a temporary file, then a rename."""
    path = shard_path(folder, index)
    write_file(path, text)
    return path


class MergeCount(NamedTuple):
    """Records a merge appended, and how many of them failed."""

    records: int
    failed: int


def ranking_failed(record: dict[str, Any]) -> bool:
    """Whether a rank job's output record holds a failed ranking."""
    return record.get(RANKING_FIELD, {}).get("error") is not None


def merge_shards(
    folder: Path,
    shards: Sequence[ShardIds],
    out: str | Path,
    failed_record: Callable[[dict[str, Any]], bool] = ranking_failed,
) -> MergeCount:
    """Append each shard's records for its pending ids to ``out``, in shard order, counting those
    ``failed_record`` says failed.

    Every shard must be finished. Lines are copied byte for byte, one flushed write per shard, so a
    kill leaves at most one torn last line (which the next run drops).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = failed = 0
    for shard in shards:
        wanted = set(shard.ids)
        path = shard_path(folder, shard.index)
        lines = []
        for line in _lines(path.read_bytes().decode("utf-8")):
            record = json.loads(line)
            if record["id"] in wanted:
                lines.append(line + "\n")
                failed += failed_record(record)
        if len(lines) != len(wanted):
            raise LlmblendError(f"{path} lacks records of shard {shard.index}; delete it and rerun")
        _append(out, "".join(lines))
        written += len(lines)
    return MergeCount(written, failed)


def remove_folder(folder: Path) -> None:
    """Remove the shards once OUT holds them all."""
    shutil.rmtree(folder, ignore_errors=True)


def _lines(text: str) -> list[str]:
    # split on "\n" only: JSON escapes it inside strings, while str.splitlines would also split on
    # U+2028 and other separators that dumps() leaves as they are
    return [line for line in text.split("\n") if line.strip()]


def _append(path: Path, text: str) -> None:
    with path.open("ab") as handle:
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
