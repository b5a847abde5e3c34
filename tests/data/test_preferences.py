from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmblend.data.preferences import read_preferences, validate_preferences, write_preferences
from llmblend.data.validate import validate_file
from llmblend.errors import DataFormatError
from llmblend.types import Message, PreferencePair


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_standard_conversational_and_implicit_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {
                "prompt": [{"role": "user", "content": "2+2?"}],
                "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "5"}],
                "extra_column": 1,
            },
            {
                "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
                "source": "mine",
            },
        ],
    )
    pairs = list(read_preferences(path))
    assert pairs[0] == PreferencePair("2+2?", "4", "5", "prefs")
    assert pairs[1] == PreferencePair([Message("user", "2+2?")], "4", "5", "prefs")
    assert pairs[2] == PreferencePair([Message("user", "Hi")], "Hello!", "Go away.", "mine")


def test_round_trip_keeps_provenance(tmp_path: Path) -> None:
    pairs = [
        PreferencePair(
            "q",
            "good",
            "bad",
            "alpaca_eval",
            example_id="koala/3",
            chosen_model="a",
            rejected_model="b",
            margin=0.42,
        ),
        PreferencePair([Message("system", "Be brief."), Message("user", "q")], "g", "b", "hh_rlhf"),
    ]
    path = tmp_path / "pairs.jsonl"
    assert write_preferences(pairs, path) == 2
    assert list(read_preferences(path)) == pairs
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        "prompt": "q",
        "chosen": "good",
        "rejected": "bad",
        "source": "alpaca_eval",
        "example_id": "koala/3",
        "chosen_model": "a",
        "rejected_model": "b",
        "margin": 0.42,
    }


@pytest.mark.parametrize(
    "record,field,message",
    [
        ({"chosen": "a", "rejected": "b"}, "prompt", "missing; expected a prompt"),
        ({"prompt": "q", "rejected": "b"}, "chosen", "missing"),
        ({"prompt": "q", "chosen": 3, "rejected": "b"}, "chosen", "expected a string or a non-empty list"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}, "margin", "expected a number"),
        (
            {
                "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}],
            },
            "rejected",
            "differ from chosen",
        ),
        (
            {"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
            "chosen[0].role",
            "assistant",
        ),
    ],
)
def test_bad_pairs_name_file_line_and_field(tmp_path: Path, record: dict, field: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(DataFormatError) as caught:
        list(read_preferences(path))
    assert str(caught.value).startswith(f"{path}:2: {field}: ")
    assert message in str(caught.value)
    assert validate_file(path)[0] == "preferences"
    assert validate_preferences(path)[1][0].line == 2
