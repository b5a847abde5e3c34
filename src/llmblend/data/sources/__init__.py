"""Converters from the public benchmark files in ``shared/data`` to llmblend's data model."""

from __future__ import annotations

import os
from pathlib import Path

from llmblend.errors import DataNotFoundError

DATA_DIR_ENV = "LLMBLEND_DATA_DIR"


def _candidate_dirs() -> list[Path]:
    here = Path(__file__).resolve()
    checkout = here.parents[4]  # src/llmblend/data/sources/__init__.py -> repository root
    cwd = Path.cwd()
    return [cwd / "shared" / "data", cwd.parent / "shared" / "data", checkout.parent / "shared" / "data"]


def locate_data_dir(explicit: str | Path | None = None) -> Path:
    """The shared data folder: ``explicit``, else ``$LLMBLEND_DATA_DIR``, else ``../shared/data``.

    ``../shared/data`` is looked for beside the working directory and beside the repository.
    """
    if explicit is not None or os.environ.get(DATA_DIR_ENV):
        path = Path(explicit if explicit is not None else os.environ[DATA_DIR_ENV])
        if not path.is_dir():
            raise DataNotFoundError(f"data folder {path} does not exist")
        return path
    for path in _candidate_dirs():
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in _candidate_dirs())
    raise DataNotFoundError(
        f"could not find the shared data folder (tried {tried}); pass --data-dir DIR "
        f"or set {DATA_DIR_ENV}=DIR"
    )


def require_file(data_dir: Path, relative: str) -> Path:
    """``data_dir / relative``, or a :class:`DataNotFoundError` that says which file is missing."""
    path = data_dir / relative
    if not path.exists():
        raise DataNotFoundError(f"{path} is missing; is {data_dir} the shared data folder?")
    return path
