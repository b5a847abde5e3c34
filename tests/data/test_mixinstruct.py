from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

import pytest

from llmblend.data.mixinstruct import (
    MIXINSTRUCT_SCORES,
    load_mixinstruct,
    read_mixinstruct,
    record_from_example,
    write_mixinstruct,
)
from llmblend.errors import DataFormatError
from llmblend.types import Candidate, Example, Message


def raw_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_real_shaped_records_load_unchanged(sample_file: Path) -> None:
    examples = load_mixinstruct(sample_file)
    assert [e.id for e in examples] == ["unified_chip2/69962", "itwgpt4/6230", "laion/unified_chip2/1"]
    first = examples[0]
    assert first.instruction == "" and first.input.startswith("What is the difference")
    assert first.source == first.input
    assert len(first.candidates) == 3
    assert set(first.candidates[0].scores) == set(MIXINSTRUCT_SCORES)
    assert first.candidates[0].decoding_method == "top_p_sampling"
    assert first.cmp_results == {
        "oasst-sft-4-pythia-12b-epoch-3.5,koala-7B": "A is better",
        "oasst-sft-4-pythia-12b-epoch-3.5,alpaca-native": "Same good",
        "koala-7B,alpaca-native": "B is better",
    }
    assert examples[2].cmp_results is None
    assert (
        examples[1].source
        == "Rewrite the sentence in the passive voice.\n\nThe committee approved the new budget."
    )


def test_round_trip_gives_back_the_same_records(sample_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy.jsonl"
    assert write_mixinstruct(read_mixinstruct(sample_file), out) == 3
    assert raw_records(out) == raw_records(sample_file)
    # cmp_results stays a JSON *string* on disk, as in the real dataset
    assert isinstance(raw_records(out)[0]["cmp_results"], str)
    assert load_mixinstruct(out) == load_mixinstruct(sample_file)


def test_multi_turn_instruction_and_extra_fields_round_trip(tmp_path: Path) -> None:
    example = Example(
        id="chat/1",
        instruction=[Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "Tell a joke.")],
        candidates=[Candidate("m1", "Why did the ...", {"gpt4_score": 7.0}, "greedy")],
        extra={"category": "humor"},
    )
    path = tmp_path / "chat.jsonl"
    write_mixinstruct([example], path)
    record = raw_records(path)[0]
    assert record["instruction"][2] == {"role": "user", "content": "Tell a joke."}
    assert record["category"] == "humor" and record["output"] is None
    assert load_mixinstruct(path) == [example]


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".gz"), (lzma.open, ".xz")])
def test_compressed_files_read(sample_file: Path, tmp_path: Path, opener, suffix: str) -> None:
    path = tmp_path / f"sample.jsonl{suffix}"
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write(sample_file.read_text(encoding="utf-8"))
    assert load_mixinstruct(path) == load_mixinstruct(sample_file)


def test_reading_streams_records_before_a_later_bad_line(sample_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "tail_broken.jsonl"
    path.write_text(sample_file.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    stream = read_mixinstruct(path)
    assert [next(stream).id for _ in range(3)] == [
        "unified_chip2/69962",
        "itwgpt4/6230",
        "laion/unified_chip2/1",
    ]
    with pytest.raises(DataFormatError, match=r"tail_broken.jsonl:4: not valid JSON"):
        next(stream)


def test_write_is_atomic_and_keeps_old_file_on_failure(sample_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_mixinstruct(read_mixinstruct(sample_file), path)
    before = path.read_bytes()

    def failing():
        yield from read_mixinstruct(sample_file)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_mixinstruct(failing(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_record_key_order_matches_the_dataset(sample_file: Path) -> None:
    record = record_from_example(load_mixinstruct(sample_file)[0])
    assert list(record) == ["id", "instruction", "input", "output", "candidates", "cmp_results"]
    assert list(record["candidates"][0]) == ["decoding_method", "model", "text", "scores"]
