"""Each bad input names file:line and the field, and says what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmblend.data.mixinstruct import load_mixinstruct, validate_mixinstruct
from llmblend.data.validate import validate_file
from llmblend.errors import DataFormatError


def good_record(id_: str = "a/1") -> dict:
    return {
        "id": id_,
        "instruction": "Say hi.",
        "input": "",
        "output": "Hi!",
        "candidates": [
            {"decoding_method": "greedy", "model": "m1", "text": "Hi", "scores": {"bleu": 1.0}},
            {"decoding_method": "greedy", "model": "m2", "text": "Hello", "scores": {"bleu": 0.5}},
        ],
        "cmp_results": json.dumps({"m1,m2": "A is better"}),
    }


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def file_with(tmp_path: Path, bad: dict | str) -> Path:
    bad_line = bad if isinstance(bad, str) else json.dumps(bad)
    return write_lines(tmp_path / "data.jsonl", [json.dumps(good_record("a/0")), bad_line])


def apply(target: dict, changes: dict) -> None:
    """Set each key to its value, or delete it when the value is KeyError."""
    for key, value in changes.items():
        if value is KeyError:
            del target[key]
        else:
            target[key] = value


def mutate(**changes) -> dict:
    record = good_record()
    apply(record, changes)
    return record


def bad_candidate(**changes) -> dict:
    record = good_record()
    apply(record["candidates"][1], changes)
    return record


CASES = [
    ("malformed JSON", '{"id": "a/1", "instruction": ', None, "not valid JSON"),
    ("not an object", "[1, 2]", None, "expected a JSON object"),
    ("missing id", mutate(id=KeyError), "id", "missing; expected a string"),
    ("mistyped id", mutate(id=7), "id", "expected a string, got a number 7"),
    ("missing candidates", mutate(candidates=KeyError), "candidates", "missing; expected a list"),
    ("empty candidates", mutate(candidates=[]), "candidates", "empty; expected at least one candidate"),
    ("mistyped output", mutate(output=3.5), "output", "expected a string or null"),
    (
        "bad role",
        mutate(instruction=[{"role": "robot", "content": "x"}]),
        "instruction[0].role",
        "expected one of",
    ),
    ("missing text", bad_candidate(text=KeyError), "candidates[1].text", "missing; expected a string"),
    (
        "score not a number",
        bad_candidate(scores={"bleu": "high"}),
        "candidates[1].scores.bleu",
        "expected a number",
    ),
    (
        "unknown candidate field",
        bad_candidate(latency=1.0),
        "candidates[1].latency",
        "unknown candidate field",
    ),
    (
        "cmp_results not JSON",
        mutate(cmp_results="{oops"),
        "cmp_results",
        "expected a JSON string of an object",
    ),
    (
        "bad verdict",
        mutate(cmp_results=json.dumps({"m1,m2": "A wins"})),
        "cmp_results['m1,m2']",
        "expected one of",
    ),
    (
        "unknown model in cmp",
        mutate(cmp_results=json.dumps({"m1,m9": "A is better"})),
        "cmp_results['m1,m9']",
        "m9",
    ),
    ("duplicate id", good_record("a/0"), "id", "duplicate id 'a/0'"),
]


@pytest.mark.parametrize("name,bad,field,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_file_line_and_field(tmp_path: Path, name: str, bad, field, message: str) -> None:
    path = file_with(tmp_path, bad)
    with pytest.raises(DataFormatError) as caught:
        load_mixinstruct(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:2: "), text
    if field:
        assert f": {field}: " in text, text
    assert message in text, text
    problem = caught.value.problem
    assert (problem.path, problem.line, problem.field) == (str(path), 2, field)


def test_validate_reports_every_problem_not_just_the_first(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "many.jsonl",
        [
            json.dumps(good_record("a/0")),
            "{broken",
            json.dumps(mutate(id=5, candidates=[], cmp_results=None)),
            "",
            json.dumps(good_record("a/0")),
            json.dumps(good_record("a/9")),
        ],
    )
    count, problems = validate_mixinstruct(path)
    assert count == 5
    found = [(p.line, p.field) for p in problems]
    assert found == [(2, None), (3, "id"), (3, "candidates"), (5, "id")]
    assert validate_file(path) == ("mixinstruct", 5, problems)


def test_first_error_mentions_how_many_more(tmp_path: Path) -> None:
    path = file_with(tmp_path, mutate(id=5, candidates=[], cmp_results=None))
    with pytest.raises(DataFormatError, match=r"and 1 more problem"):
        load_mixinstruct(path)


def test_good_file_has_no_problems(sample_file: Path) -> None:
    assert validate_mixinstruct(sample_file) == (3, [])
