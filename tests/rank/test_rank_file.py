"""``llmblend rank`` and ``llmblend compare``: ranked output, resume after a kill, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.jsonl import append_jsonl, resume_jsonl
from llmblend.data.mixinstruct import write_mixinstruct
from llmblend.rank.baselines import LongestRanker
from llmblend.rank.rank_file import rank_file
from llmblend.types import Candidate, Example

runner = CliRunner()


def examples(n: int) -> list[Example]:
    return [
        Example(
            id=f"ex/{i}",
            instruction=f"question number {i}",
            candidates=[Candidate(f"m{j}", "word " * (1 + (i + j) % 5) + str(j)) for j in range(4)],
        )
        for i in range(n)
    ]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    write_mixinstruct(examples(10), path)
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rank_file_writes_each_example_with_its_ranking(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    report = rank_file(LongestRanker(), source, out, strategy="full", ranker_label="longest", chunk_size=3)
    records = read(out)
    assert (report.ranked, report.already_done, report.failed) == (10, 0, 0)
    assert [r["id"] for r in records] == [f"ex/{i}" for i in range(10)]
    for record in records:
        ranking = record["ranking"]
        lengths = [len(c["text"].split()) for c in record["candidates"]]
        assert lengths[ranking["order"][0]] == max(lengths)
        assert sorted(ranking["order"]) == [0, 1, 2, 3] and len(ranking["scores"]) == 4
        assert ranking["ranker"] == "longest" and ranking["error"] is None


def test_rerun_after_a_kill_ranks_only_what_is_missing(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rank_file(LongestRanker(), source, out, strategy="full", ranker_label="longest", chunk_size=4)
    whole = out.read_text(encoding="utf-8")
    lines = whole.splitlines(keepends=True)
    out.write_text("".join(lines[:6]) + lines[6][:40], encoding="utf-8")  # killed mid-write of line 7
    report = rank_file(LongestRanker(), source, out, strategy="full", ranker_label="longest", chunk_size=4)
    assert (report.already_done, report.ranked) == (6, 4)
    assert out.read_text(encoding="utf-8") == whole  # every example exactly once, same content
    again = rank_file(LongestRanker(), source, out, strategy="full", ranker_label="longest")
    assert again.ranked == 0 and out.read_text(encoding="utf-8") == whole


def test_resume_jsonl_drops_only_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    assert resume_jsonl(path, "id") == set()
    append_jsonl(path, [{"id": 1}, {"id": 2}])
    with path.open("a") as handle:
        handle.write('{"id": 3, "te')
    assert resume_jsonl(path, "id") == {1, 2}
    assert path.read_text() == '{"id": 1}\n{"id": 2}\n'


def test_cli_rank_with_a_model_then_resume(source: Path, tmp_path: Path, tiny_ranker_dir: Path) -> None:
    out = tmp_path / "ranked.jsonl"
    args = ["rank", str(source), "--out", str(out), "--model", str(tiny_ranker_dir), "--chunk-size", "4"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "ranked 10 examples" in first.output and "examples/s" in first.output
    records = read(out)
    assert len(records) == 10 and all(r["ranking"]["strategy"] == "sparse-refine" for r in records)
    assert all(r["ranking"]["n_forward"] > 0 for r in records)
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines()[:7]))
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "ranked 3 examples" in second.output
    assert [r["id"] for r in read(out)] == [f"ex/{i}" for i in range(10)]


def test_cli_rank_refuses_to_overwrite_its_input(source: Path) -> None:
    result = runner.invoke(app, ["rank", str(source), "--out", str(source)])
    assert result.exit_code == 2 and "is an input file" in result.output


def test_cli_rank_reads_several_files_as_one_input(source: Path, tmp_path: Path) -> None:
    """rank A B --out OUT gives what ranking A and B concatenated gives; OUT must be named."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(lines[:4]), encoding="utf-8")
    second.write_text("".join(lines[4:]), encoding="utf-8")
    out, whole = tmp_path / "two.jsonl", tmp_path / "whole.jsonl"
    for args in ([str(first), str(second), "--out", str(out)], [str(source), "--out", str(whole)]):
        result = runner.invoke(app, ["rank", *args, "-r", "longest", "--chunk-size", "3"])
        assert result.exit_code == 0, result.output
    assert out.read_bytes() == whole.read_bytes()
    unnamed = runner.invoke(app, ["rank", str(first), str(second), "-r", "longest"])
    assert unnamed.exit_code == 2 and "2 input files need --out" in unnamed.output
    onto_input = runner.invoke(app, ["rank", str(first), str(second), "--out", str(second)])
    assert onto_input.exit_code == 2 and "is an input file" in onto_input.output


def test_cli_compare_prints_winner_and_margin(tiny_ranker_dir: Path) -> None:
    args = ["compare", "name a city", "paris", "the city of paris in france", "--model", str(tiny_ranker_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith("better: ") and "margin " in line and "P(A better) " in line
    margin = float(line.split("margin ")[1].split()[0])
    swapped = runner.invoke(app, [*args[:2], args[3], args[2], *args[4:]])
    assert float(swapped.output.split("margin ")[1].split()[0]) == pytest.approx(-margin, abs=1e-3)
