"""RewardBench rows → preference pairs (the label set ``rewardbench:PATH`` of ``eval agreement``).

A RewardBench file (JSONL, ``.gz``/``.xz`` too, or a ``.json`` list) holds one pair per row::

    {"prompt": str, "chosen": str, "rejected": str, "chosen_model": str, "rejected_model": str,
     "subset": str, "id": int | str}

``prompt``, ``chosen`` and ``rejected`` are required; the rest may be missing or null. Each pair's
``source`` is ``rewardbench/<subset>`` (``rewardbench`` without one) and its ``example_id``
``rewardbench/<id>`` (the line number without one). A bad row is a
:class:`~llmblend.errors.DataFormatError` naming file, line (for a ``.json`` list: the item's
1-based position) and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from llmblend.data.jsonl import FieldChecker, FieldProblem, iter_lines, open_text, parse_line
from llmblend.errors import DataFormatError, DataProblem
from llmblend.types import PreferencePair

PREFIX: Final = "rewardbench"


def check_row(row: Any) -> list[FieldProblem]:
    """Every problem of one RewardBench row, as (field, message)."""
    checker = FieldChecker()
    if not checker.require_object(row):
        return checker.problems
    for key in ("prompt", "chosen", "rejected"):
        checker.get(row, key, str, key)
    for key in ("chosen_model", "rejected_model", "subset"):
        checker.get(row, key, str, key, required=False, nullable=True)
    checker.get(row, "id", (int, str), "id", required=False, nullable=True)
    return checker.problems


def pair_from_row(row: dict[str, Any], number: int) -> PreferencePair:
    """The pair of a row that passed :func:`check_row`; ``number`` is its line (or item) number."""
    subset = row.get("subset")
    row_id = row.get("id")
    return PreferencePair(
        prompt=row["prompt"],
        chosen=row["chosen"],
        rejected=row["rejected"],
        source=f"{PREFIX}/{subset}" if subset else PREFIX,
        example_id=f"{PREFIX}/{row_id if row_id is not None else number}",
        chosen_model=row.get("chosen_model"),
        rejected_model=row.get("rejected_model"),
    )


def _is_json_list(path: Path) -> bool:
    suffixes = path.suffixes[-2:]
    return path.suffix == ".json" or (suffixes[-1:] in ([".gz"], [".xz"]) and suffixes[:1] == [".json"])


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open_text(path) as handle:
        try:
            rows = json.load(handle)
        except json.JSONDecodeError as exc:
            problem = DataProblem(str(path), exc.lineno, None, f"not valid JSON ({exc.msg})")
            raise DataFormatError(problem) from None
    if not isinstance(rows, list):
        raise DataFormatError(DataProblem(str(path), 1, None, "expected a JSON list of rows"))
    yield from enumerate(rows, start=1)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    for number, line in iter_lines(path):
        yield number, parse_line(path, number, line)


def _checked(path: Path, rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    seen: set[str] = set()
    for number, row in rows:
        problems = check_row(row)
        if not problems and row.get("id") is not None:
            if str(row["id"]) in seen:
                problems.append(("id", f"duplicate id {row['id']!r}: each row needs its own"))
            seen.add(str(row["id"]))
        if problems:
            field, message = problems[0]
            raise DataFormatError(DataProblem(str(path), number, field, message), len(problems) - 1)
        yield number, row


def rewardbench_pairs(path: str | Path) -> list[PreferencePair]:
    """Every pair of a RewardBench file, in file order."""
    path = Path(path)
    rows = _json_rows(path) if _is_json_list(path) else _jsonl_rows(path)
    return [pair_from_row(row, number) for number, row in _checked(path, rows)]
