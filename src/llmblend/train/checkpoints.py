"""Small pieces both training loops use to survive an interruption: atomic text files, and a
training log cut back to the checkpoint a run resumes from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def normalise(value: Any) -> Any:
    """A setting as it reads back from JSON (tuples become lists), to compare resumed settings."""
    return list(value) if isinstance(value, tuple | list) else value


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a partial file beside it, then renamed)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the interruption
    write_text(path, "".join(line + "\n" for line in kept))
