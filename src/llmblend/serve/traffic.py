"""Traffic as data: every blend the gateway serves, and every judgement users give of it, appended
as records that llmblend's own readers take back (LLM-Blender §2, §3.1: more judged data for
``llmblend train pool`` and ``llmblend train ranker``).

* :class:`TrafficLog` — one MixInstruct record per blend (:func:`blend_record`: the answered
  candidates with the ranker's score as ``scores["ranker"]``; answer, how it was chosen, profile,
  time and failures as ``llmblend_*`` fields, which the reader keeps in ``Example.extra``). Rotated by
  size; :meth:`TrafficLog.lookup` finds a blend by its completion id.
* :class:`FeedbackLog` — a preference for one candidate becomes one TRL-style preference pair per
  other candidate (:func:`feedback_pairs`); a rating of the answer becomes a MixInstruct record with
  the answer as its one candidate, ``scores: {"user_rating": r}`` (:func:`rating_record`). Ratings go
  to a sibling ``ratings.jsonl``, not the feedback file: ``detect_format`` decides a whole file's
  format from its first record, so a file mixing the two formats would be misread.

Writes: the encoded line (or all the lines of one judgement) goes to the file in a single
``os.write`` on an ``O_APPEND`` descriptor, under a per-file lock: threads never interleave, and a
process crash cannot fall between two halves of a line (a loop finishes only a short write). No
fsync by default (what was written survives a process crash, not a power cut); ``fsync=True``
syncs each write. One log object per file per process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmblend.data.mixinstruct import check_record, example_from_record, prompt_to_json
from llmblend.data.preferences import record_from_pair
from llmblend.types import BlendCandidate, Example, PreferencePair, Prompt

log = logging.getLogger(__name__)

MIB = 2**20
#: Recent blends kept in memory for :meth:`TrafficLog.lookup` (older ones are found by scanning).
INDEX_SIZE = 10_000
RATINGS_FILE = "ratings.jsonl"
#: The model name of a rated answer that no single model wrote.
FUSED_MODEL = "llmblend-fused"
FEEDBACK_SOURCE = "feedback"
RANKER_SCORE = "ranker"
RATING_SCORE = "user_rating"


# ---------------------------------------------------------------- whole-line appends


def encode_lines(records: Iterable[dict[str, Any]]) -> bytes:
    """UTF-8 JSON lines (``ensure_ascii=False``; NaN refused, so every line is valid JSON)."""
    return b"".join(
        (json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8") for r in records
    )


def rotated_paths(path: Path, backups: int) -> list[Path]:
    """``path.1`` … ``path.{backups}``, newest first."""
    return [Path(f"{path}.{k}") for k in range(1, backups + 1)]


class _LineFile:
    """Appends whole lines to one file, rotating it by size when ``max_bytes`` is set."""

    def __init__(
        self, path: Path, *, max_bytes: int | None = None, backups: int = 0, fsync: bool = False
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, data: bytes) -> None:
        with self.lock:
            if self._needs_rotation(len(data)):
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def _needs_rotation(self, size: int) -> bool:
        if self.max_bytes is None:
            return False
        try:
            current = self.path.stat().st_size
        except FileNotFoundError:
            return False
        return current > 0 and current + size > self.max_bytes

    def _rotate(self) -> None:
        older = rotated_paths(self.path, self.backups)
        if not older:
            self.path.unlink(missing_ok=True)
            return
        for source, target in reversed(list(itertools.pairwise(older))):
            if source.exists():
                os.replace(source, target)
        os.replace(self.path, older[0])
        log.info("rotated %s (%d old files kept)", self.path, self.backups)


def _write_all(fd: int, data: bytes) -> None:
    """One ``os.write`` (a regular file takes it whole); loops only on a short write."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------- the record of a blend


def blend_record(
    completion_id: str,
    prompt: Prompt,
    candidates: Sequence[BlendCandidate],
    *,
    answer: str,
    returned: str,
    profile: str,
    created: float | None = None,
) -> dict[str, Any]:
    """The MixInstruct record of one blend; ValueError when it would not read back (no candidate
    answered, an empty conversation, an empty model name).

    ``candidates`` are the blend's, failed ones included: the answered ones become the record's
    candidates (``scores: {"ranker": score}`` when ranked), ``llmblend_indices[k]`` is the blend's
    index of record candidate ``k``, and the failed ones are listed in ``llmblend_failed``.
    ``llmblend_answer_model`` names the model whose answer was returned unchanged (None if fused).
    """
    kept = [(i, c) for i, c in enumerate(candidates) if c.ok]
    record = {
        "id": completion_id,
        "instruction": prompt_to_json(prompt),
        "input": "",
        "output": None,
        "candidates": [_candidate_json(c) for _, c in kept],
        "cmp_results": None,
        "llmblend_answer": answer,
        "llmblend_returned": returned,
        "llmblend_answer_model": _answer_model([c for _, c in kept], answer, returned),
        "llmblend_profile": profile,
        "llmblend_created": time.time() if created is None else created,
        "llmblend_indices": [i for i, _ in kept],
        "llmblend_failed": [
            {"index": i, "model": c.model, "decoding_method": c.decoding_method, "error": c.error}
            for i, c in enumerate(candidates)
            if not c.ok
        ],
    }
    _example(record)
    return record


def _candidate_json(candidate: BlendCandidate) -> dict[str, Any]:
    score = candidate.score
    scores = {RANKER_SCORE: float(score)} if score is not None and math.isfinite(score) else {}
    return {
        "decoding_method": candidate.decoding_method,
        "model": candidate.model,
        "text": candidate.text,
        "scores": scores,
    }


def _answer_model(kept: Sequence[BlendCandidate], answer: str, returned: str) -> str | None:
    """The model of the best-ranked candidate whose text is the answer, unless the answer was fused."""
    if returned == "fused":
        return None
    matches = [c for c in kept if c.text == answer]
    if not matches:
        return None
    return min(matches, key=lambda c: math.inf if c.rank is None else c.rank).model


def _example(record: Any) -> Example:
    """The record as an Example; ValueError naming the first problem if it is not MixInstruct."""
    if problems := check_record(record):
        field, message = problems[0]
        where = f"{field}: " if field else ""
        raise ValueError(f"not a MixInstruct record of a blend: {where}{message}")
    return example_from_record(record)


# ---------------------------------------------------------------- the traffic log


class TrafficLog:
    """One MixInstruct record per blend, appended to ``path`` (made with its folder).

    Before a write that would take the file past ``max_bytes`` it is rotated: ``path`` becomes
    ``path.1``, ``path.1`` becomes ``path.2``, … keeping ``backups`` old files (the oldest dropped;
    ``backups=0`` drops the full file). A record larger than ``max_bytes`` still gets a file of its
    own. The last ``index_size`` records are kept in memory for :meth:`lookup`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 64 * MIB,
        backups: int = 5,
        index_size: int = INDEX_SIZE,
        fsync: bool = False,
    ) -> None:
        if max_bytes <= 0 or backups < 0 or index_size < 0:
            raise ValueError(
                f"max_bytes must be > 0 and backups, index_size ≥ 0; got {max_bytes}, {backups}, {index_size}"
            )
        self.path = Path(path)
        self.backups = backups
        self.index_size = index_size
        self._file = _LineFile(self.path, max_bytes=max_bytes, backups=backups, fsync=fsync)
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._index_lock = threading.Lock()

    @property
    def files(self) -> list[Path]:
        """The log's files that exist, newest first (the current one, then ``path.1`` …)."""
        return [p for p in [self.path, *rotated_paths(self.path, self.backups)] if p.exists()]

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (e.g. :func:`blend_record`'s); its ``id`` must be a string."""
        completion_id = record.get("id")
        if not isinstance(completion_id, str):
            raise ValueError(f"a traffic record needs a string id, got {completion_id!r}")
        data = encode_lines([record])
        self._file.append(data)
        self._remember(completion_id, data.decode("utf-8"))

    async def aappend(self, record: dict[str, Any]) -> None:
        """:meth:`append` in a worker thread, so the event loop does not wait on the disk."""
        await asyncio.to_thread(self.append, record)

    def lookup(self, completion_id: str) -> dict[str, Any] | None:
        """The record of blend ``completion_id`` (a fresh dict), or None when no file has it.

        Recent blends come from memory; older ones from scanning the files, newest first.
        """
        with self._index_lock:
            line = self._recent.get(completion_id)
        if line is not None:
            return json.loads(line)
        return self._scan(completion_id)

    async def alookup(self, completion_id: str) -> dict[str, Any] | None:
        """:meth:`lookup` in a worker thread."""
        return await asyncio.to_thread(self.lookup, completion_id)

    def _remember(self, completion_id: str, line: str) -> None:
        if not self.index_size:
            return
        with self._index_lock:
            self._recent[completion_id] = line
            self._recent.move_to_end(completion_id)
            while len(self._recent) > self.index_size:
                self._recent.popitem(last=False)

    def _scan(self, completion_id: str) -> dict[str, Any] | None:
        for path in self.files:
            try:
                found = _last_record_with_id(path, completion_id)
            except FileNotFoundError:  # rotated away while we looked
                continue
            if found is not None:
                return found
        return None


def _last_record_with_id(path: Path, completion_id: str) -> dict[str, Any] | None:
    """The last record of ``path`` whose id is ``completion_id``."""
    needle = json.dumps(completion_id, ensure_ascii=False).encode("utf-8")
    found = None
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if needle not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d is not valid JSON; skipped", path, number)
                continue
            if isinstance(record, dict) and record.get("id") == completion_id:
                found = record
    return found


# ---------------------------------------------------------------- feedback


def feedback_pairs(
    record: dict[str, Any], preferred: int | str, *, source: str = FEEDBACK_SOURCE
) -> list[PreferencePair]:
    """One pair per other candidate of a logged blend: ``preferred``'s answer chosen over it.

    ``preferred`` is a candidate index as the blend numbered them (failed candidates included; the
    position in ``candidates`` for a record without ``llmblend_indices``) or a model name. A
    candidate with the same text as the preferred one gives no pair. ValueError naming the value
    and the valid choices for an unknown index or model, a failed candidate, or an ambiguous model.
    """
    example = _example(record)
    chosen = example.candidates[_preferred_position(record, example, preferred)]
    prompt = example.source if example.input else example.instruction
    return [
        PreferencePair(
            prompt=prompt,
            chosen=chosen.text,
            rejected=other.text,
            source=source,
            example_id=example.id,
            chosen_model=chosen.model,
            rejected_model=other.model,
        )
        for other in example.candidates
        if other is not chosen and other.text != chosen.text
    ]


def _blend_indices(record: dict[str, Any], n: int) -> list[int]:
    indices = record.get("llmblend_indices")
    if indices is None:
        return list(range(n))
    if not isinstance(indices, list) or len(indices) != n or not all(type(i) is int for i in indices):
        raise ValueError(f"llmblend_indices should be {n} candidate indices, got {indices!r}")
    return indices


def _preferred_position(record: dict[str, Any], example: Example, preferred: int | str) -> int:
    """The position in ``example.candidates`` of the candidate ``preferred`` names."""
    indices = _blend_indices(record, len(example.candidates))
    choices = f"choose an index in {indices} or a model in {sorted(set(example.models))}"
    if isinstance(preferred, bool) or not isinstance(preferred, int | str):
        raise ValueError(f"preferred {preferred!r} is neither a candidate index nor a model name; {choices}")
    if isinstance(preferred, int):
        if preferred in indices:
            return indices.index(preferred)
        failed = {f.get("index"): f for f in record.get("llmblend_failed") or [] if isinstance(f, dict)}
        if preferred in failed:
            f = failed[preferred]
            raise ValueError(
                f"candidate {preferred} ({f.get('model')}) of blend {example.id!r} failed "
                f"({f.get('error')}): it has no answer to prefer; {choices}"
            )
        raise ValueError(f"blend {example.id!r} has no candidate {preferred}; {choices}")
    positions = [k for k, c in enumerate(example.candidates) if c.model == preferred]
    if not positions:
        raise ValueError(f"blend {example.id!r} has no candidate from model {preferred!r}; {choices}")
    if len(positions) > 1:
        raise ValueError(
            f"model {preferred!r} wrote {len(positions)} candidates of blend {example.id!r}: "
            f"choose one by index, {[indices[k] for k in positions]}"
        )
    return positions[0]


def rating_record(record: dict[str, Any], rating: float, *, created: float | None = None) -> dict[str, Any]:
    """A MixInstruct record of a user's rating in [0, 1] of a logged blend's answer.

    Its one candidate is the answer, ``scores: {"user_rating": rating}``, from
    ``llmblend_answer_model`` when the record names it, else :data:`FUSED_MODEL`; its id is the
    completion id plus a unique suffix (a blend can be rated more than once), and
    ``llmblend_completion_id`` keeps the blend's.
    """
    rating = _checked_rating(rating)
    example = _example(record)
    answer = record.get("llmblend_answer")
    if not isinstance(answer, str):
        raise ValueError(f"blend {example.id!r} has no logged answer (llmblend_answer) to rate")
    model = record.get("llmblend_answer_model") or FUSED_MODEL
    decoding = next(
        (c.decoding_method for c in example.candidates if c.model == model and c.text == answer), "fused"
    )
    return {
        "id": f"{example.id}:rating:{uuid.uuid4().hex[:12]}",
        "instruction": record["instruction"],
        "input": example.input,
        "output": None,
        "candidates": [
            {"decoding_method": decoding, "model": model, "text": answer, "scores": {RATING_SCORE: rating}}
        ],
        "cmp_results": None,
        "llmblend_completion_id": example.id,
        "llmblend_profile": record.get("llmblend_profile"),
        "llmblend_returned": record.get("llmblend_returned"),
        "llmblend_created": time.time() if created is None else created,
    }


def _checked_rating(rating: Any) -> float:
    if isinstance(rating, bool) or not isinstance(rating, int | float) or not 0.0 <= rating <= 1.0:
        raise ValueError(f"rating {rating!r} is not a number in [0, 1]")
    return float(rating)


class FeedbackLog:
    """Users' judgements of logged blends: preference pairs to ``path``, ratings to
    ``ratings_path`` (default: ``ratings.jsonl`` beside ``path``). Both made with their folder."""

    def __init__(
        self, path: str | Path, *, ratings_path: str | Path | None = None, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.ratings_path = (
            Path(ratings_path) if ratings_path is not None else self.path.with_name(RATINGS_FILE)
        )
        if self.ratings_path.resolve() == self.path.resolve():
            raise ValueError(
                f"the feedback file {self.path} is also the ratings file: name it otherwise or give "
                "ratings_path (the two formats cannot share a file)"
            )
        self._pairs = _LineFile(self.path, fsync=fsync)
        self._ratings = _LineFile(self.ratings_path, fsync=fsync)

    def add_preference(self, record: dict[str, Any], preferred: int | str) -> int:
        """Append :func:`feedback_pairs` (all in one write); return how many pairs were written."""
        created = time.time()
        pairs = [
            {**record_from_pair(p), "llmblend_created": created} for p in feedback_pairs(record, preferred)
        ]
        if pairs:
            self._pairs.append(encode_lines(pairs))
        log.debug("feedback on %s: %d preference pairs", record.get("id"), len(pairs))
        return len(pairs)

    def add_rating(self, record: dict[str, Any], rating: float) -> None:
        """Append :func:`rating_record` to the ratings file."""
        self._ratings.append(encode_lines([rating_record(record, rating)]))

    async def aadd_preference(self, record: dict[str, Any], preferred: int | str) -> int:
        """:meth:`add_preference` in a worker thread."""
        return await asyncio.to_thread(self.add_preference, record, preferred)

    async def aadd_rating(self, record: dict[str, Any], rating: float) -> None:
        """:meth:`add_rating` in a worker thread."""
        await asyncio.to_thread(self.add_rating, record, rating)
