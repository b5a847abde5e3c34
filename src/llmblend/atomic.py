"""Files and folders written atomically: built beside the target, then renamed over it, so a reader
(or a run after a crash) sees the old version or the new one whole, never a part.

Permissions become 0644 / 0755: what llmblend writes (data, models, caches) is meant to be shared,
and ``mkstemp`` / ``mkdtemp`` create 0600 / 0700.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_file(path: str | Path, text: str | Iterable[str]) -> None:
    """Write ``text`` (a string, or pieces written as they come) to ``path`` in UTF-8 with ``\\n``
    line ends: a temporary file in the same folder, flushed to disk, then renamed over ``path``.

    The parent folder is created. A failure, a kill or an exception from ``text``'s iterator leaves
    an earlier file at ``path`` untouched (a killed process may leave a ``.NAME.*.tmp`` behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for piece in [text] if isinstance(text, str) else text:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def replace_folder(staging: Path, path: Path) -> None:
    """Move the finished folder ``staging`` to ``path``, replacing what is there (two renames)."""
    os.chmod(staging, 0o755)
    for file in staging.iterdir():
        if file.is_file():
            os.chmod(file, 0o644)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(path)
