"""``llmblend data validate``: check a whole file and report every problem, not just the first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from llmblend.data.jsonl import iter_lines
from llmblend.data.mixinstruct import validate_mixinstruct
from llmblend.data.preferences import validate_preferences
from llmblend.errors import DataProblem

Format = Literal["mixinstruct", "preferences"]


def detect_format(path: str | Path) -> Format:
    """ "preferences" if the first JSON object has ``chosen``, else "mixinstruct"."""
    for _, line in iter_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return "preferences" if "chosen" in record else "mixinstruct"
    return "mixinstruct"


def validate_file(path: str | Path, fmt: Format | None = None) -> tuple[Format, int, list[DataProblem]]:
    """(format checked, number of records, every problem) for a MixInstruct or preference file."""
    fmt = fmt or detect_format(path)
    validate = validate_mixinstruct if fmt == "mixinstruct" else validate_preferences
    count, problems = validate(path)
    return fmt, count, problems
