"""The ``llmblend`` command line, driven through typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmblend.cli import app

runner = CliRunner()


def test_help_lists_the_data_commands() -> None:
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    for command in ("validate", "build", "convert", "stats"):
        assert command in result.output


def test_validate_good_and_bad_files(sample_file: Path, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["data", "validate", str(sample_file)])
    assert ok.exit_code == 0 and "ok: 3 mixinstruct record(s)" in ok.output
    bad = tmp_path / "bad.jsonl"
    lines = sample_file.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["candidates"] = []
    markup = json.loads(lines[2])
    markup["id"] = "[bold]x"
    del markup["candidates"][0]["text"]
    bad.write_text("\n".join([lines[0], "{oops", json.dumps(broken), lines[0], json.dumps(markup)]) + "\n")
    result = runner.invoke(app, ["data", "validate", str(bad)], terminal_width=300)
    assert result.exit_code == 1
    assert f"{bad}:2: not valid JSON" in result.output
    assert f"{bad}:3: candidates: empty" in result.output
    assert f"{bad}:4: id: duplicate id 'unified_chip2/69962'" in result.output
    assert f"{bad}:5: candidates[0].text: missing" in result.output  # brackets are not rich markup
    assert "problem(s) on 4 of 5 line(s)" in result.output


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_convert_writes_a_valid_file(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "vicuna80.jsonl"
    result = runner.invoke(
        app, ["data", "convert", "vicuna80", "--out", str(out), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "80 examples" in result.output
    assert runner.invoke(app, ["data", "validate", str(out)]).exit_code == 0
    unknown = runner.invoke(app, ["data", "convert", "nope", "--out", str(out), "--data-dir", str(data_dir)])
    assert unknown.exit_code == 2 and "choose one of alpaca-eval" in unknown.output


@pytest.mark.slow
def test_build_and_stats_as_a_real_process(tmp_path: Path, data_dir: Path) -> None:
    """What `make demo` runs, through the installed console script."""
    exe = Path(sys.executable).with_name("llmblend")
    out = tmp_path / "ab"
    build = subprocess.run(
        [exe, "data", "build", "alpaca-blend", "--out", out, "--data-dir", data_dir],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert "train 480, dev 120" in build.stdout
    stats = subprocess.run(
        [exe, "data", "stats", out / "dev.jsonl"],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    assert stats.returncode == 0, stats.stderr
    for rule in ("oracle pick", "random pick", "longest answer", "model: OpenHermes-2.5-Mistral-7B"):
        assert rule in stats.stdout
    assert "120 examples, 1320 candidates" in stats.stdout
