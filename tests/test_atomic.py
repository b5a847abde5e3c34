"""Atomic writes (llmblend.atomic): one helper for every small file llmblend replaces."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from llmblend.atomic import write_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_is_written_whole_shared_and_with_unix_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "notes.txt"
    write_file(path, "première\nligne 😀\n")
    assert path.read_bytes() == "première\nligne 😀\n".encode()
    assert _mode(path) == 0o644
    write_file(path, (f"line {i}\n" for i in range(3)))
    assert path.read_text(encoding="utf-8") == "line 0\nline 1\nline 2\n"
    assert [p.name for p in path.parent.iterdir()] == ["notes.txt"]


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_staging_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_file(path, "old\n")

    def pieces():
        yield "half of the new"
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        write_file(path, pieces())
    assert path.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
