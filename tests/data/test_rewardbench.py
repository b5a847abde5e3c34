"""RewardBench rows as preference pairs, and as the label set ``rewardbench:PATH`` of eval agreement."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.sources.rewardbench import rewardbench_pairs
from llmblend.errors import DataFormatError
from llmblend.eval.agreement import grouped_agreement, load_labels, ranker_predictions
from llmblend.rank.baselines import LongestRanker

SAMPLE = Path(__file__).parents[1] / "fixtures" / "rewardbench_sample.jsonl"


def test_rows_become_pairs_with_subset_and_models() -> None:
    pairs = rewardbench_pairs(SAMPLE)
    assert len(pairs) == 8
    assert Counter(p.source for p in pairs) == {
        "rewardbench/alpacaeval-easy": 3,
        "rewardbench/mt-bench-easy": 2,
        "rewardbench/refusals-dangerous": 3,
    }
    first = pairs[0]
    assert first.prompt == "What is the capital of France?" and first.rejected == "Lyon."
    assert (first.chosen_model, first.rejected_model, first.example_id) == (
        "gpt-4",
        "llama-2-7b-chat",
        "rewardbench/100",
    )


def test_a_json_list_reads_the_same(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    for row in rows[:2]:
        del row["id"], row["subset"]
    path = tmp_path / "sample.json"
    path.write_text(json.dumps(rows))
    pairs = rewardbench_pairs(path)
    assert [p.chosen for p in pairs] == [p.chosen for p in rewardbench_pairs(SAMPLE)]
    assert (pairs[1].source, pairs[1].example_id) == ("rewardbench", "rewardbench/2")  # no id: the item


def test_bad_rows_name_file_line_and_field(tmp_path: Path) -> None:
    lines = SAMPLE.read_text().splitlines()
    bad = json.loads(lines[2])
    bad["chosen"] = None
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*lines[:2], json.dumps(bad), *lines[3:]]) + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:3: chosen: expected a string, got null"):
        rewardbench_pairs(path)
    path.write_text("\n".join([lines[0], lines[0]]) + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: id: duplicate id 100"):
        rewardbench_pairs(path)
    listed = tmp_path / "bad.json"
    listed.write_text(json.dumps([json.loads(lines[0]), {"prompt": "q", "chosen": "a"}]))
    with pytest.raises(DataFormatError, match=r"bad\.json:2: rejected: missing"):
        rewardbench_pairs(listed)
    listed.write_text(json.dumps({"rows": []}))
    with pytest.raises(DataFormatError, match="expected a JSON list of rows"):
        rewardbench_pairs(listed)


def test_agreement_per_subset(tmp_path: Path) -> None:
    name = f"rewardbench:{SAMPLE}"
    pairs = load_labels(name, tmp_path)
    results = grouped_agreement(name, "longest", pairs, ranker_predictions(LongestRanker(), pairs))
    scores = {r.labels.removeprefix(name): (r.correct, r.decided) for r in results}
    assert scores == {
        "": (6, 8),
        " / alpacaeval-easy": (2, 3),
        " / mt-bench-easy": (2, 2),
        " / refusals-dangerous": (2, 3),
    }


def test_cli_agreement_on_a_rewardbench_file(tmp_path: Path) -> None:
    out = tmp_path / "agreement.md"
    args = ["eval", "agreement", "-l", f"rewardbench:{SAMPLE}", "-r", "longest", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert f"| rewardbench:{SAMPLE} | longest | 8 | 75.0 |" in text
    assert f"| rewardbench:{SAMPLE} / refusals-dangerous | longest | 3 | 66.7 |" in text
    missing = CliRunner().invoke(app, ["eval", "agreement", "-l", "rewardbench:nope.jsonl", "-r", "longest"])
    assert missing.exit_code == 2 and "nope.jsonl" in missing.output
