"""JSON-lines plumbing: compressed reading, line-numbered parsing, checked records, atomic writes.

Every reader in :mod:`llmblend.data` goes through :func:`iter_checked_records`, so a bad line always
produces the same kind of error: file, line number, field, and what was expected.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from llmblend.atomic import write_file
from llmblend.errors import DataFormatError, DataNotFoundError, DataProblem

#: One file, or several read one after another as if they were one (a sharded input).
Sources = str | Path | Sequence[str | Path]

#: A record checker returns (field, message) for each problem it finds; empty when the record is good.
FieldProblem = tuple[str | None, str]
RecordCheck = Callable[[Any], list[FieldProblem]]


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, decompressing ``.xz`` and ``.gz`` transparently."""
    return io.TextIOWrapper(open_bytes(path), encoding="utf-8")


def open_bytes(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing ``.xz`` and ``.gz`` transparently."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no such file: {path}")
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def count_lines(sources: Sources, chunk_bytes: int = 1 << 22) -> int:
    """How many lines ``sources`` hold (a last line without a newline counts): a bound on their
    records, found without parsing them (about a second per GB of plain JSONL)."""
    lines = 0
    for path in source_paths(sources):
        last = b"\n"
        with open_bytes(path) as handle:
            while chunk := handle.read(chunk_bytes):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        lines += last != b"\n"
    return lines


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for each non-blank line, streaming."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def parse_line(path: str | Path, number: int, line: str) -> Any:
    """Parse one JSON line; a :class:`DataFormatError` naming file and line if it is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            DataProblem(str(path), number, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
        ) from None


def read_jsonl(path: str | Path) -> Iterator[Any]:
    """Yield each parsed JSON value of a JSONL file (no schema check)."""
    for number, line in iter_lines(path):
        yield parse_line(path, number, line)


def _unique_key_problem(record: Any, seen: set[str], unique_key: str | None) -> str | None:
    if unique_key is None or not isinstance(record, dict) or unique_key not in record:
        return None
    key = str(record[unique_key])
    if key in seen:
        return f"duplicate {unique_key} {key!r}: each record needs its own"
    seen.add(key)
    return None


def _line_problems(
    path: str | Path, number: int, line: str, check: RecordCheck, seen: set[str], unique_key: str | None
) -> tuple[Any, list[DataProblem]]:
    record = parse_line(path, number, line)
    problems = [DataProblem(str(path), number, f, m) for f, m in check(record)]
    duplicate = _unique_key_problem(record, seen, unique_key)
    if duplicate:
        problems.append(DataProblem(str(path), number, unique_key, duplicate))
    return record, problems


def source_paths(sources: Sources) -> list[Path]:
    """The files of ``sources``, in order; ValueError for none."""
    paths = [Path(sources)] if isinstance(sources, str | Path) else [Path(path) for path in sources]
    if not paths:
        raise ValueError("no input file given")
    return paths


def iter_checked_records(
    sources: Sources, check: RecordCheck, unique_key: str | None = "id"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for records that pass ``check``; raise on the first bad one.

    Several files are read in order as one: ``unique_key`` must be unique across all of them.
    Streams: memory grows only with the set of ``unique_key`` values seen.
    """
    for number, _line, record in iter_checked_lines(sources, check, unique_key):
        yield number, record


def iter_checked_lines(
    sources: Sources, check: RecordCheck, unique_key: str | None = "id"
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """:func:`iter_checked_records` with each record's line as read (its text, for a caller that
    passes records on without re-serialising them)."""
    seen: set[str] = set()
    for path in source_paths(sources):
        for number, line in iter_lines(path):
            record, problems = _line_problems(path, number, line, check, seen, unique_key)
            if problems:
                raise DataFormatError(problems[0], more=len(problems) - 1)
            yield number, line, record


def collect_problems(
    path: str | Path, check: RecordCheck, unique_key: str | None = "id"
) -> tuple[int, list[DataProblem]]:
    """Check every line of a file; return (number of records, every problem found)."""
    seen: set[str] = set()
    problems: list[DataProblem] = []
    count = 0
    for number, line in iter_lines(path):
        count += 1
        try:
            problems += _line_problems(path, number, line, check, seen, unique_key)[1]
        except DataFormatError as exc:
            problems.append(exc.problem)
    return count, problems


def dumps(record: Any) -> str:
    """One JSON line, UTF-8 kept as is (as the MixInstruct files are written)."""
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(records: Iterable[Any], path: str | Path) -> int:
    """Write records to ``path`` atomically (:func:`llmblend.atomic.write_file`); return the count.

    A crash mid-write leaves any earlier file at ``path`` untouched.
    """
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for record in records:
            yield dumps(record) + "\n"
            count += 1

    write_file(path, lines())
    return count


class FieldChecker:
    """Collects (field, message) problems while checking one record's fields."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def fail(self, field: str | None, message: str) -> None:
        self.problems.append((field, message))

    def get(
        self,
        record: dict[str, Any],
        key: str,
        types: type | tuple[type, ...],
        field: str,
        *,
        required: bool = True,
        nullable: bool = False,
    ) -> Any:
        """The value at ``key`` if it has one of ``types``; records a problem and returns None if not."""
        if key not in record:
            if required:
                self.fail(field, f"missing; expected {describe(types, nullable)}")
            return None
        value = record[key]
        if value is None and nullable:
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            self.fail(field, f"expected {describe(types, nullable)}, got {type_name(value)} {short(value)}")
            return None
        return value

    def require_object(self, value: Any, field: str | None = None) -> bool:
        if isinstance(value, dict):
            return True
        self.fail(field, f"expected a JSON object, got {type_name(value)} {short(value)}")
        return False


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


_JSON_NAMES = {
    str: "a string",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
    bool: "true/false",
}


def describe(types: type | tuple[type, ...], nullable: bool = False) -> str:
    names = list(dict.fromkeys(_JSON_NAMES.get(t, t.__name__) for t in _as_tuple(types)))
    if nullable:
        names.append("null")
    return " or ".join(names)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return describe(type(value))


def short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _complete_records(path: Path) -> Iterator[Any]:
    """Each record of an output file a previous run appended to, dropping a torn last line.

    A last line cut short by a crash (no final newline) is cut from the file, so appending can go
    on; a missing file holds nothing.
    """
    if not path.is_file():
        return
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    for number, line in enumerate(complete.decode("utf-8").split("\n"), start=1):
        if line.strip():
            yield parse_line(path, number, line)


def resume_jsonl(path: str | Path, key: str) -> set[Any]:
    """The ``key`` of every complete record of an output file a previous run appended to."""
    return {record[key] for record in _complete_records(Path(path))}


def read_journal(path: str | Path, key: str) -> dict[Any, Any]:
    """The last record of each ``key`` in an append-only file (later lines supersede earlier ones).

    Like :func:`resume_jsonl`, a torn last line is dropped from the file first.
    """
    return {record[key]: record for record in _complete_records(Path(path))}


def append_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Append records in one write, flushed to disk, so a kill leaves at most one torn last line."""
    lines = "".join(dumps(record) + "\n" for record in records)
    with Path(path).open("a", encoding="utf-8", newline="\n") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
    return lines.count("\n")
