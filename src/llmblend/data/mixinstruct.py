"""MixInstruct JSONL: the record format of LLM-Blender's ``llm-blender/mix-instruct`` (§2).

One record per line::

    {"id": str, "instruction": str | [{"role", "content"}, ...], "input": str, "output": str | null,
     "candidates": [{"decoding_method": str, "model": str, "text": str,
                     "scores": {"logprobs": float, "bleu": float, ..., "bartscore": float}}, ...],
     "cmp_results": str | null}

``cmp_results`` is a JSON *string* mapping "modelA,modelB" to "A is better", "B is better",
"Same good" or "Same bad". Files of the real dataset load unchanged; other top-level fields are
kept in :attr:`Example.extra` and written back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmblend.data.jsonl import (
    FieldChecker,
    FieldProblem,
    Sources,
    collect_problems,
    iter_checked_lines,
    iter_checked_records,
    short,
    write_jsonl,
)
from llmblend.errors import DataFormatError, DataProblem, MissingExtraError
from llmblend.types import CMP_VERDICTS, ROLES, Candidate, Example, Message, Prompt

RECORD_FIELDS = ("id", "instruction", "input", "output", "candidates", "cmp_results")
CANDIDATE_FIELDS = ("decoding_method", "model", "text", "scores")
#: The candidate scores the real MixInstruct dataset carries.
MIXINSTRUCT_SCORES = (
    "logprobs",
    "bleu",
    "bertscore",
    "rouge1",
    "rouge2",
    "rougeL",
    "rougeLsum",
    "bleurt",
    "bartscore",
)
NUMBER = (int, float)


# ---------------------------------------------------------------- checking


def check_prompt(checker: FieldChecker, value: Any, field: str) -> None:
    """A prompt is a string or a non-empty list of {"role", "content"} messages."""
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        checker.fail(field, f"expected a string or a non-empty list of messages, got {short(value)}")
        return
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not checker.require_object(message, where):
            continue
        role = checker.get(message, "role", str, f"{where}.role")
        if role is not None and role not in ROLES:
            checker.fail(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
        checker.get(message, "content", str, f"{where}.content")


def _check_candidate(checker: FieldChecker, candidate: Any, field: str) -> str | None:
    if not checker.require_object(candidate, field):
        return None
    for key in candidate:
        if key not in CANDIDATE_FIELDS:
            checker.fail(
                f"{field}.{key}",
                f"unknown candidate field; expected {', '.join(CANDIDATE_FIELDS)} "
                "(put numeric values in scores)",
            )
    model = checker.get(candidate, "model", str, f"{field}.model")
    if model == "":
        checker.fail(f"{field}.model", "expected a model name, got an empty string")
    checker.get(candidate, "text", str, f"{field}.text")
    checker.get(candidate, "decoding_method", str, f"{field}.decoding_method", required=False)
    scores = checker.get(candidate, "scores", dict, f"{field}.scores", required=False)
    for name, value in (scores or {}).items():
        if not isinstance(value, NUMBER) or isinstance(value, bool):
            checker.fail(f"{field}.scores.{name}", f"expected a number, got {short(value)}")
    return model


def parse_cmp_results(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``cmp_results`` mapping from its on-disk JSON string (``""``/``"null"`` → None)."""
    if value is None or isinstance(value, dict):
        return value
    if value.strip() in ("", "null"):
        return None
    parsed = json.loads(value)
    if parsed is not None and not isinstance(parsed, dict):
        raise ValueError(f"expected a JSON object inside the string, got {short(parsed)}")
    return parsed


def _check_cmp_results(checker: FieldChecker, record: dict[str, Any], models: set[str]) -> None:
    raw = checker.get(record, "cmp_results", (str, dict), "cmp_results", required=False, nullable=True)
    try:
        mapping = parse_cmp_results(raw)
    except ValueError as exc:
        checker.fail("cmp_results", f"expected a JSON string of an object: {exc}")
        return
    for key, verdict in (mapping or {}).items():
        pair = key.split(",")
        if len(pair) != 2 or not all(pair):
            checker.fail(f"cmp_results[{key!r}]", 'expected a key "modelA,modelB"')
        elif unknown := [m for m in pair if m not in models]:
            checker.fail(f"cmp_results[{key!r}]", f"model(s) {unknown} have no candidate")
        if verdict not in CMP_VERDICTS:
            checker.fail(
                f"cmp_results[{key!r}]", f"expected one of {list(CMP_VERDICTS)}, got {short(verdict)}"
            )


def check_record(record: Any) -> list[FieldProblem]:
    """Every problem of one MixInstruct record, as (field, message); empty if it is good."""
    checker = FieldChecker()
    if not checker.require_object(record):
        return checker.problems
    checker.get(record, "id", str, "id")
    if "instruction" in record:
        check_prompt(checker, record["instruction"], "instruction")
    else:
        checker.fail("instruction", "missing; expected a string or a list of messages")
    checker.get(record, "input", str, "input", required=False)
    checker.get(record, "output", str, "output", required=False, nullable=True)
    candidates = checker.get(record, "candidates", list, "candidates")
    if candidates == []:
        checker.fail("candidates", "empty; expected at least one candidate")
    models = {
        m for i, c in enumerate(candidates or []) if (m := _check_candidate(checker, c, f"candidates[{i}]"))
    }
    _check_cmp_results(checker, record, models)
    return checker.problems


# ---------------------------------------------------------------- conversion


def prompt_from_json(value: str | list[dict[str, str]]) -> Prompt:
    if isinstance(value, str):
        return value
    return [Message(m["role"], m["content"]) for m in value]


def prompt_to_json(prompt: Prompt) -> str | list[dict[str, str]]:
    if isinstance(prompt, str):
        return prompt
    return [{"role": m.role, "content": m.content} for m in prompt]


def example_from_record(record: dict[str, Any]) -> Example:
    """Build an :class:`Example` from a record that passed :func:`check_record`."""
    return Example(
        id=record["id"],
        instruction=prompt_from_json(record["instruction"]),
        input=record.get("input", ""),
        output=record.get("output"),
        candidates=[
            Candidate(
                model=c["model"],
                text=c["text"],
                scores={k: float(v) for k, v in (c.get("scores") or {}).items()},
                decoding_method=c.get("decoding_method", "unknown"),
            )
            for c in record["candidates"]
        ],
        cmp_results=parse_cmp_results(record.get("cmp_results")),
        extra={k: v for k, v in record.items() if k not in RECORD_FIELDS},
    )


def record_from_example(example: Example) -> dict[str, Any]:
    """The MixInstruct record of an example (``cmp_results`` as a JSON string, or null)."""
    return {
        "id": example.id,
        "instruction": prompt_to_json(example.instruction),
        "input": example.input,
        "output": example.output,
        "candidates": [
            {"decoding_method": c.decoding_method, "model": c.model, "text": c.text, "scores": c.scores}
            for c in example.candidates
        ],
        "cmp_results": None if example.cmp_results is None else json.dumps(example.cmp_results),
        **example.extra,
    }


# ---------------------------------------------------------------- files


def read_mixinstruct(sources: Sources) -> Iterator[Example]:
    """Stream the examples of a MixInstruct JSONL file (``.xz``/``.gz`` too), or of several files
    one after another (ids unique across them).

    Raises :class:`DataFormatError` naming file, line and field at the first bad record.
    """
    for _, record in iter_checked_records(sources, check_record):
        yield example_from_record(record)


def read_mixinstruct_lines(sources: Sources) -> Iterator[tuple[str, str]]:
    """(id, line) for each example of ``sources``, checked as :func:`read_mixinstruct` checks
    it, the line as read and without its line end: for a reader that only passes examples on."""
    for _, line, record in iter_checked_lines(sources, check_record):
        yield record["id"], line.rstrip("\r\n")


def load_mixinstruct(path: str | Path) -> list[Example]:
    """All examples of a MixInstruct file, in file order."""
    return list(read_mixinstruct(path))


def write_mixinstruct(examples: Iterable[Example], path: str | Path) -> int:
    """Write examples as MixInstruct JSONL, atomically; return how many were written."""
    return write_jsonl((record_from_example(e) for e in examples), path)


def validate_mixinstruct(path: str | Path) -> tuple[int, list[DataProblem]]:
    """Check a whole file; return (number of records, every problem), never stopping at the first."""
    return collect_problems(path, check_record)


def _without_arrow_nulls(row: dict[str, Any]) -> dict[str, Any]:
    """Arrow gives every candidate every score key; drop the ones a candidate does not have."""
    for candidate in row.get("candidates") or []:
        if isinstance(candidate.get("scores"), dict):
            candidate["scores"] = {k: v for k, v in candidate["scores"].items() if v is not None}
    return row


def load_hub_mixinstruct(
    name: str = "llm-blender/mix-instruct", split: str = "test", **load_kwargs: Any
) -> Iterator[Example]:
    """Examples of a MixInstruct-format dataset through ``datasets.load_dataset(name, split=...)``.

    ``name`` is a hub id (needs network) or a local folder holding ``{split}.jsonl`` files.
    """
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("datasets", "hub", "loading MixInstruct from the hub") from None
    rows = datasets.load_dataset(name, split=split, **load_kwargs)
    for number, row in enumerate(rows, start=1):
        record = _without_arrow_nulls(dict(row))
        if problems := check_record(record):
            field, message = problems[0]
            raise DataFormatError(DataProblem(f"{name}[{split}]", number, field, message), len(problems) - 1)
        yield example_from_record(record)
