"""Preference-pair JSONL in TRL's formats (the unit PairRanker learns from, LLM-Blender §3.1).

Read, each line one of:

* standard: ``{"prompt": str, "chosen": str, "rejected": str}``
* conversational: ``{"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}``
* implicit prompt: ``{"chosen": [messages], "rejected": [messages]}`` — full conversations that share
  every turn but the last assistant one.

Optional keys ``source``, ``example_id``, ``chosen_model``, ``rejected_model``, ``margin`` are kept; other
keys are ignored. Written: the standard form (a conversation prompt stays a list of messages),
plus the optional keys that are set; with ``conversational=True`` a conversation prompt gets TRL's
conversational form, each answer one assistant message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmblend.data.jsonl import (
    FieldChecker,
    FieldProblem,
    collect_problems,
    iter_checked_records,
    write_jsonl,
)
from llmblend.data.mixinstruct import check_prompt, prompt_from_json, prompt_to_json
from llmblend.errors import DataProblem
from llmblend.types import PreferencePair

OPTIONAL_FIELDS = {
    "source": str,
    "example_id": str,
    "chosen_model": str,
    "rejected_model": str,
    "margin": (int, float),
}


def _check_answer(checker: FieldChecker, value: Any, field: str, implicit: bool) -> None:
    if isinstance(value, str) and not implicit:
        return
    check_prompt(checker, value, field)
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        if value[-1].get("role") != "assistant":
            checker.fail(f"{field}[{len(value) - 1}].role", "expected the last message to be the assistant's")
        if not implicit and len(value) != 1:
            checker.fail(field, "expected one assistant message (the prompt goes in 'prompt')")


def check_pair_record(record: Any) -> list[FieldProblem]:
    """Every problem of one preference record, as (field, message)."""
    checker = FieldChecker()
    if not checker.require_object(record):
        return checker.problems
    implicit = "prompt" not in record
    if implicit and isinstance(record.get("chosen"), str):
        checker.fail(
            "prompt",
            "missing; expected a prompt, or chosen/rejected as full conversations "
            "(hh-rlhf transcripts: use `llmblend data convert hh-rlhf`)",
        )
    elif not implicit:
        check_prompt(checker, record["prompt"], "prompt")
    for side in ("chosen", "rejected"):
        if side not in record:
            checker.fail(side, "missing; expected the answer text")
        else:
            _check_answer(checker, record[side], side, implicit)
    for key, types in OPTIONAL_FIELDS.items():
        checker.get(record, key, types, key, required=False, nullable=True)
    if implicit and not checker.problems and record["chosen"][:-1] != record["rejected"][:-1]:
        checker.fail("rejected", "implicit-prompt pair whose turns before the last differ from chosen's")
    return checker.problems


def _answer_text(value: str | list[dict[str, str]]) -> str:
    return value if isinstance(value, str) else value[-1]["content"]


def pair_from_record(record: dict[str, Any], default_source: str = "") -> PreferencePair:
    """Build a :class:`PreferencePair` from a record that passed :func:`check_pair_record`."""
    prompt = record["prompt"] if "prompt" in record else record["chosen"][:-1]
    return PreferencePair(
        prompt=prompt_from_json(prompt),
        chosen=_answer_text(record["chosen"]),
        rejected=_answer_text(record["rejected"]),
        source=record.get("source") or default_source,
        example_id=record.get("example_id"),
        chosen_model=record.get("chosen_model"),
        rejected_model=record.get("rejected_model"),
        margin=None if record.get("margin") is None else float(record["margin"]),
    )


def _answer_json(text: str, as_message: bool) -> str | list[dict[str, str]]:
    return [{"role": "assistant", "content": text}] if as_message else text


def record_from_pair(pair: PreferencePair, *, conversational: bool = False) -> dict[str, Any]:
    """The JSON record of a pair; ``conversational``: a conversation prompt's answers as messages."""
    as_message = conversational and not isinstance(pair.prompt, str)
    record: dict[str, Any] = {
        "prompt": prompt_to_json(pair.prompt),
        "chosen": _answer_json(pair.chosen, as_message),
        "rejected": _answer_json(pair.rejected, as_message),
        "source": pair.source,
    }
    for key in ("example_id", "chosen_model", "rejected_model", "margin"):
        if (value := getattr(pair, key)) is not None:
            record[key] = value
    return record


def read_preferences(path: str | Path) -> Iterator[PreferencePair]:
    """Stream the pairs of a preference JSONL file; ``source`` defaults to the file's stem."""
    default_source = Path(path).name.split(".")[0]
    for _, record in iter_checked_records(path, check_pair_record, unique_key=None):
        yield pair_from_record(record, default_source)


def write_preferences(pairs: Iterable[PreferencePair], path: str | Path) -> int:
    """Write pairs as TRL-style JSONL, atomically; return how many were written."""
    return write_jsonl((record_from_pair(p) for p in pairs), path)


def validate_preferences(path: str | Path) -> tuple[int, list[DataProblem]]:
    return collect_problems(path, check_pair_record, unique_key=None)
