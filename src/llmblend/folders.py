"""Model folders written atomically: build in a staging folder beside the target, then swap it in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_folder(staging: Path, path: Path) -> None:
    """Move the finished folder ``staging`` to ``path``, replacing what is there (two renames).

    Permissions become 0755 / 0644: a model folder is meant to be shared, and some writers (mkdtemp,
    mkstemp) create 0700 / 0600.
    """
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
