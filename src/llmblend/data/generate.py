"""Build a MixInstruct file from real generations, resumably (LLM-Blender §2, how MixInstruct was made).

Each instruction is sent to every (backend, sampling variant) concurrently; its record is appended
to the output as soon as all its answers are in (one write, fsynced), so a kill loses at most the
instructions in flight. A record keeps one ``generation`` entry per slot (model, decoding method,
tokens, latency, finish reason, error), and only successful answers become candidates.

Resuming: a rerun reads the output, skips every slot that already has an answer and asks again
only the failed or missing ones; the merged record is appended and supersedes the earlier line.
At the end of a run the file is rewritten (atomically) in input order with one line per id.
Instructions for which *every* model failed have no candidate, which a MixInstruct record must
have, so they go to ``OUT.failed.jsonl`` instead, and are retried the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmblend.backends.base import Generation
from llmblend.backends.config import Slot
from llmblend.backends.fanout import UsageLog, ask_all
from llmblend.data.jsonl import (
    FieldChecker,
    FieldProblem,
    append_jsonl,
    iter_checked_records,
    iter_lines,
    read_journal,
    write_jsonl,
)
from llmblend.data.mixinstruct import check_prompt, prompt_from_json, prompt_to_json, record_from_example
from llmblend.errors import DataFormatError, DataProblem
from llmblend.types import Candidate, Example, Message, Prompt

GENERATION_KEY = "generation"


# ---------------------------------------------------------------- instructions


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction to answer; ``output`` is a reference answer when the input file has one."""

    id: str
    instruction: Prompt
    input: str = ""
    output: str | None = None

    @property
    def prompt(self) -> Prompt:
        """What the models are asked: the instruction, with the input after it when there is one."""
        if not self.input:
            return self.instruction
        if isinstance(self.instruction, str):
            return f"{self.instruction}\n\n{self.input}"
        *head, last = self.instruction
        return [*head, Message(last.role, f"{last.content}\n\n{self.input}")]


def _content_id(instruction: Prompt, input_text: str) -> str:
    """A stable id for a record without one: a hash of what is asked (survives reordering)."""
    text = json.dumps([prompt_to_json(instruction), input_text], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _check_instruction(record: Any) -> list[FieldProblem]:
    checker = FieldChecker()
    if not checker.require_object(record):
        return checker.problems
    if "instruction" not in record:
        checker.fail("instruction", "missing; expected a string or a list of messages")
    else:
        check_prompt(checker, record["instruction"], "instruction")
    checker.get(record, "id", (str, int), "id", required=False)
    checker.get(record, "input", str, "input", required=False)
    checker.get(record, "output", str, "output", required=False, nullable=True)
    return checker.problems


def read_instructions(path: str | Path) -> list[Instruction]:
    """Instructions from JSONL or from a ``.txt`` file with one instruction per line.

    JSONL records need ``instruction`` and may have ``id``, ``input`` and ``output`` (MixInstruct
    files and AlpacaEval's instructions qualify; candidates are ignored). A record without ``id``
    gets a hash of its text, so reruns find it again.
    """
    path = Path(path)
    items: list[Instruction] = []
    if path.suffix == ".txt":
        for _number, line in iter_lines(path):
            text = line.strip()
            items.append(Instruction(_content_id(text, ""), text))
    else:
        for _number, record in iter_checked_records(path, _check_instruction):
            items.append(instruction_from_record(record))
    _check_unique(path, items)
    return items


def instruction_from_record(record: dict[str, Any]) -> Instruction:
    """The instruction of a checked JSONL record (an id made from its text when it has none)."""
    prompt = prompt_from_json(record["instruction"])
    input_text = record.get("input", "")
    item_id = str(record["id"]) if record.get("id") is not None else _content_id(prompt, input_text)
    return Instruction(item_id, prompt, input_text, record.get("output"))


def instruction_record(item: Instruction) -> dict[str, Any]:
    """``item`` as a JSONL record that :func:`instruction_from_record` reads back the same."""
    return {
        "id": item.id,
        "instruction": prompt_to_json(item.instruction),
        "input": item.input,
        "output": item.output,
    }


def _check_unique(path: Path, items: Sequence[Instruction]) -> None:
    seen: dict[str, int] = {}
    for position, item in enumerate(items, start=1):
        if item.id in seen:
            raise DataFormatError(
                DataProblem(
                    str(path),
                    position,
                    "id",
                    f"instruction {position} repeats id {item.id!r} of instruction {seen[item.id]} "
                    "(the same text twice, or a repeated id); give each record its own id",
                )
            )
        seen[item.id] = position


# ---------------------------------------------------------------- records


def generation_entry(generation: Generation, decoding_method: str) -> dict[str, Any]:
    """The ``generation`` entry of one slot: what was asked and what came back (or why not)."""
    return {
        "model": generation.model,
        "decoding_method": decoding_method,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "latency_s": round(generation.latency_s, 4),
        "finish_reason": generation.finish_reason,
        "error": generation.error,
    }


@dataclass(slots=True)
class _Kept:
    """What a previous run already has for one instruction: successful entries and candidates."""

    entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    candidates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> _Kept:
        kept = cls()
        if record is None:
            return kept
        for entry in record.get(GENERATION_KEY, []):
            if entry.get("error") is None:
                kept.entries[(entry["model"], entry["decoding_method"])] = entry
        for candidate in record.get("candidates", []):
            kept.candidates[(candidate["model"], candidate.get("decoding_method", "unknown"))] = candidate
        return kept

    def has(self, key: tuple[str, str]) -> bool:
        return key in self.candidates


def build_record(
    item: Instruction, slots: Sequence[Slot], generations: Sequence[Generation], kept: _Kept
) -> dict[str, Any]:
    """The MixInstruct record of one instruction: kept answers plus this run's, in slot order."""
    new = dict(zip((slot.key for slot in slots), generations, strict=True))
    candidates, entries = [], []
    for key in [*kept.candidates, *new]:
        if key in kept.candidates:
            candidates.append(kept.candidates.pop(key))
            entries.append(kept.entries.get(key, {"model": key[0], "decoding_method": key[1], "error": None}))
        elif key in new:
            generation = new.pop(key)
            entries.append(generation_entry(generation, key[1]))
            if generation.ok:
                candidates.append({"decoding_method": key[1], "model": key[0], "text": generation.text})
    example = Example(
        id=item.id,
        instruction=item.instruction,
        input=item.input,
        output=item.output,
        candidates=[
            Candidate(c["model"], c["text"], c.get("scores", {}), c["decoding_method"]) for c in candidates
        ],
        extra={GENERATION_KEY: entries},
    )
    return record_from_example(example)


# ---------------------------------------------------------------- the job


@dataclass(slots=True)
class GenerateReport:
    """What one run did. ``failed_slots`` counts failed generations (recorded, retried next run)."""

    instructions: int
    already_done: int
    written: int = 0
    candidates: int = 0
    failed_slots: int = 0
    without_candidates: int = 0
    wall_s: float = 0.0
    usage: UsageLog = field(default_factory=UsageLog)


def failed_path_for(out: str | Path) -> Path:
    """Where instructions that got no candidate at all are kept: ``OUT.failed.jsonl``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".failed.jsonl")


@dataclass(frozen=True, slots=True)
class _Todo:
    item: Instruction
    slots: tuple[Slot, ...]
    kept: _Kept


def plan(items: Sequence[Instruction], slots: Sequence[Slot], out: Path) -> tuple[list[_Todo], int]:
    """The instructions with slots still to ask, and how many are already complete."""
    previous = previous_records(out)
    todo = [entry for item in items if (entry := todo_for(item, slots, previous.get(item.id)))]
    return todo, len(items) - len(todo)


def previous_records(out: Path) -> dict[str, dict[str, Any]]:
    """What earlier runs wrote for each id: its latest record in OUT, or else in OUT.failed.jsonl."""
    return {**read_journal(failed_path_for(out), "id"), **read_journal(out, "id")}


def todo_for(item: Instruction, slots: Sequence[Slot], previous: dict[str, Any] | None) -> _Todo | None:
    """What is left to ask for ``item`` given its ``previous`` record (None: everything)."""
    kept = _Kept.from_record(previous)
    missing = tuple(slot for slot in slots if not kept.has(slot.key))
    return _Todo(item, missing, kept) if missing else None


async def answer(todo: _Todo) -> tuple[dict[str, Any], list[Generation]]:
    """The merged record of one instruction (kept answers plus the missing slots') and this run's
    generations."""
    generations = await ask_all(todo.item.prompt, todo.slots)
    return build_record(todo.item, todo.slots, generations, todo.kept), generations


async def answer_all(
    todo: Sequence[_Todo],
    max_in_flight: int,
    on_answer: Callable[[dict[str, Any], list[Generation]], None],
) -> None:
    """Answer every instruction of ``todo``, at most ``max_in_flight`` at once; ``on_answer(record,
    generations)`` is called for each as soon as it is complete (in the event loop's one thread)."""
    gate = asyncio.Semaphore(max_in_flight)

    async def run(entry: _Todo) -> None:
        try:
            on_answer(*await answer(entry))
        finally:
            gate.release()

    tasks = []
    for entry in todo:
        await gate.acquire()
        tasks.append(asyncio.create_task(run(entry)))
    await asyncio.gather(*tasks)


def default_in_flight(slots: Sequence[Slot]) -> int:
    """Instructions answered at once by default: twice the largest backend concurrency, at least 4."""
    return max(4, 2 * max((slot.backend.concurrency for slot in slots), default=1))


def write_answers(out: Path, records: Sequence[dict[str, Any]], report: GenerateReport) -> None:
    """Append answered records to OUT (to ``OUT.failed.jsonl`` those without a candidate), one
    flushed write per file, and count them in ``report`` (its usage is the caller's to add)."""
    answered = [r for r in records if r["candidates"]]
    unanswered = [r for r in records if not r["candidates"]]
    for target, group in ((out, answered), (failed_path_for(out), unanswered)):
        if group:
            append_jsonl(target, group)
    report.written += len(records)
    report.candidates += sum(len(r["candidates"]) for r in records)
    # a record keeps only successful entries from earlier runs: every failed entry is this run's
    report.failed_slots += sum(e.get("error") is not None for r in records for e in r[GENERATION_KEY])
    report.without_candidates += len(unanswered)


async def generate_dataset(
    items: Sequence[Instruction],
    slots: Sequence[Slot],
    out: str | Path,
    *,
    max_in_flight: int | None = None,
    on_record: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> GenerateReport:
    """Answer every instruction with every slot into ``out`` (MixInstruct JSONL), resumably.

    ``max_in_flight`` bounds the instructions being answered at once (default:
    :func:`default_in_flight`); ``on_plan(done)`` gets the number of instructions a previous run
    completed, ``on_record(n)`` is called after each record is written.
    """
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    todo, done = plan(items, slots, out)
    report = GenerateReport(instructions=len(items), already_done=done)
    if on_plan:
        on_plan(done)

    def written(record: dict[str, Any], generations: list[Generation]) -> None:
        write_answers(out, [record], report)  # one thread: appends never interleave
        report.usage.add(generations)
        if on_record:
            on_record(report.written)

    await answer_all(todo, max_in_flight or default_in_flight(slots), written)
    compact(out, [item.id for item in items])
    report.wall_s = time.perf_counter() - started
    return report


def compact(out: Path, order: Sequence[str]) -> None:
    """Rewrite ``out`` with one line per id in input order (later lines win), atomically; drop from
    the failed file every id that now has candidates, and remove it when it is empty."""
    records = read_journal(out, "id")
    if records:
        rank = {item_id: position for position, item_id in enumerate(order)}
        ordered = sorted(records.values(), key=lambda r: rank.get(r["id"], len(rank)))
        write_jsonl(ordered, out)
    failed_path = failed_path_for(out)
    failed = {k: v for k, v in read_journal(failed_path, "id").items() if k not in records}
    if failed:
        write_jsonl(failed.values(), failed_path)
    else:
        failed_path.unlink(missing_ok=True)


async def close_backends(slots: Sequence[Slot]) -> None:
    for backend in {id(slot.backend): slot.backend for slot in slots}.values():
        await backend.aclose()
