"""Shards of a rank job (no Ray): fixed boundaries, finished files, the merge, the manifest."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llmblend.data.jsonl import append_jsonl, dumps, resume_jsonl
from llmblend.data.mixinstruct import load_mixinstruct, record_from_example, write_mixinstruct
from llmblend.engines.shards import (
    Shard,
    is_finished,
    merge_shards,
    pending_shards,
    prepare_folder,
    shard_folder,
    shard_path,
    write_shard,
)
from llmblend.errors import DataFormatError, LlmblendError
from llmblend.rank.baselines import LongestRanker
from llmblend.rank.rank_file import rank_file, ranked_chunks
from llmblend.types import Candidate, Example


def examples(n: int, tail: str = "") -> list[Example]:
    return [
        Example(
            id=f"ex/{i}",
            instruction=f"question {i}{tail}",
            candidates=[Candidate(f"m{j}", "word " * (1 + (i + j) % 4)) for j in range(3)],
        )
        for i in range(n)
    ]


def plan_shards(sources, out: Path, size: int, limit: int | None = None) -> list[Shard]:
    """The pending shards, as the driver reads them (after dropping a torn last line of OUT)."""
    return list(pending_shards(sources, resume_jsonl(out, "id"), size, limit))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    write_mixinstruct(examples(10), path)
    return path


def test_shards_split_records_on_newlines_only(tmp_path: Path) -> None:
    """dumps() keeps U+2028 as it is: str.splitlines would cut such a record in two."""
    source = tmp_path / "in.jsonl"
    write_mixinstruct(examples(5, tail="\u2028with a line separator"), source)
    out = tmp_path / "out.jsonl"
    folder = shard_folder(out)
    folder.mkdir()
    plan = plan_shards(source, out, 2)
    for shard in plan:
        finish(folder, shard)
    assert all(is_finished(folder, s) for s in plan)
    assert merge_shards(folder, [s.key for s in plan], out).records == 5
    assert out.read_bytes() == local_output(source, tmp_path)


def finish(folder: Path, shard) -> None:
    """Rank a shard as a worker does and write its file."""
    text = "".join(
        dumps(record) + "\n"
        for _, _, records in ranked_chunks(
            LongestRanker(), list(shard.examples), strategy="full", ranker_label="longest", chunk_size=2
        )
        for record in records
    )
    write_shard(folder, shard.index, text)


def local_output(source: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "local.jsonl"
    rank_file(LongestRanker(), source, out, strategy="full", ranker_label="longest")
    return out.read_bytes()


def test_boundaries_follow_input_positions_not_what_out_holds(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert [list(s.ids) for s in plan_shards(source, out, 4)] == [
        [f"ex/{i}" for i in range(0, 4)],
        [f"ex/{i}" for i in range(4, 8)],
        ["ex/8", "ex/9"],
    ]
    append_jsonl(out, [{"id": "ex/1"}, {"id": "ex/4"}, {"id": "ex/5"}, {"id": "ex/6"}, {"id": "ex/7"}])
    plan = plan_shards(source, out, 4, limit=9)
    assert [(s.index, list(s.ids)) for s in plan] == [(0, ["ex/0", "ex/2", "ex/3"]), (2, ["ex/8"])]


def test_merge_gives_the_local_output_also_after_a_merge_cut_short(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    folder = shard_folder(out)
    prepare_folder(folder, {"shard_size": 3})
    plan = plan_shards(source, out, 3)
    for shard in plan:
        finish(folder, shard)
    assert all(is_finished(folder, s) for s in plan)
    merge_shards(folder, [s.key for s in plan[:2]], out)  # killed after two shards ...
    with out.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "ex/6", "instr')  # ... and in the middle of the third
    again = plan_shards(source, out, 3)  # the torn line is dropped; the same boundaries
    assert [s.index for s in again] == [2, 3] and all(is_finished(folder, s) for s in again)
    assert merge_shards(folder, [s.key for s in again], out).records == 4
    assert out.read_bytes() == local_output(source, tmp_path)


def test_a_shard_file_without_every_pending_id_is_not_finished(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    folder = shard_folder(out)
    folder.mkdir()
    short = plan_shards(source, out, 4, limit=9)[-1]  # ex/8 only
    finish(folder, short)
    longer = plan_shards(source, out, 4)[-1]  # ex/8 and ex/9
    assert is_finished(folder, short) and not is_finished(folder, longer)
    assert json.loads(shard_path(folder, 2).read_text(encoding="utf-8"))["ranking"]["ranker"] == "longest"


def test_the_manifest_refuses_other_settings(tmp_path: Path) -> None:
    folder = tmp_path / "out.jsonl.shards"
    prepare_folder(folder, {"shard_size": 4, "strategy": None})
    (folder / ".shard-000001.jsonl.abc.tmp").write_text("torn")
    prepare_folder(folder, {"shard_size": 4, "strategy": None})  # the same settings: fine
    assert not list(folder.glob(".*.tmp"))  # a killed run's temporary file is gone
    with pytest.raises(LlmblendError, match=r"shard_size: 4 then, 8 now.*delete"):
        prepare_folder(folder, {"shard_size": 8, "strategy": None})


def test_a_shard_holds_its_examples_as_utf8_jsonl(tmp_path: Path) -> None:
    """The driver keeps bytes, not parsed examples; a worker reads back exactly the examples."""
    examples = [
        Example("e/1", "Quelle ville ? 🙂", candidates=[Candidate("m", "Paris 🗼"), Candidate("n", "Rome")])
    ]
    shard = Shard.of_lines(3, [(e.id, dumps(record_from_example(e))) for e in examples])
    assert isinstance(shard.data, bytes) and shard.ids == ("e/1",)
    assert shard.examples == examples


def test_a_shard_passes_the_input_lines_on_as_read(tmp_path: Path) -> None:
    """The driver checks each line but does not re-serialise it (the reading sets a Ray job's
    pace): a shard's data is the input's lines, CRLF ends dropped, and the examples the reader
    gives; a malformed line still stops the reading with its file and line."""
    source = tmp_path / "in.jsonl"
    write_mixinstruct(examples(3), source)
    lines = source.read_text(encoding="utf-8").splitlines()
    lines[1] = json.dumps(json.loads(lines[1]), indent=None, separators=(",", ":"))  # not dumps()'s spacing
    source.write_bytes("".join(line + "\r\n" for line in lines).encode("utf-8"))
    (shard,) = plan_shards(source, tmp_path / "out.jsonl", 3)
    assert shard.data == "".join(line + "\n" for line in lines).encode("utf-8")
    assert shard.examples == load_mixinstruct(source) == examples(3)

    source.write_text(lines[0] + "\n" + lines[1].replace('"candidates"', '"candidatez"') + "\n")
    with pytest.raises(DataFormatError, match=r"in\.jsonl:2"):
        plan_shards(source, tmp_path / "out.jsonl", 3)


def test_several_input_files_shard_as_one_file_in_order(tmp_path: Path) -> None:
    """FILE... is one input: shard boundaries run across the files; the merge is the local output."""
    first, second, whole = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz", tmp_path / "all.jsonl"
    write_mixinstruct(examples(10), whole)
    write_mixinstruct(examples(10)[:3], first)
    second.write_bytes(gzip.compress(b"".join(whole.read_bytes().splitlines(keepends=True)[3:])))
    out = tmp_path / "out.jsonl"
    shards = plan_shards([first, second], out, 4)
    assert [s.ids for s in shards] == [s.ids for s in plan_shards(whole, out, 4)]
    assert shards[0].ids == ("ex/0", "ex/1", "ex/2", "ex/3")  # across the two files
    folder = shard_folder(out)
    folder.mkdir()
    for shard in shards:
        finish(folder, shard)
    merge_shards(folder, [s.key for s in shards], out)
    assert out.read_bytes() == local_output(whole, tmp_path)


def test_an_id_repeated_across_input_files_names_the_file_and_line(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_mixinstruct(examples(3), first)
    write_mixinstruct(examples(5)[2:], second)  # ex/2 again, on its line 1
    with pytest.raises(DataFormatError, match=r"b\.jsonl:1: id: duplicate id 'ex/2'"):
        plan_shards([first, second], tmp_path / "out.jsonl", 2)
