"""``llmblend rank -r judge:models.yaml``: an LLM judge over real HTTP ranks a file, within budget."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import yaml
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.jsonl import append_jsonl
from llmblend.data.mixinstruct import load_mixinstruct, record_from_example
from llmblend.types import Candidate, Example

runner = CliRunner()


def _files(tmp_path, server):
    examples = [
        Example(
            f"ex{k}", f"Question {k}?", candidates=[Candidate(f"m{i}", f"answer {k}.{i}") for i in range(5)]
        )
        for k in range(2)
    ]
    data = tmp_path / "data.jsonl"
    append_jsonl(data, [record_from_example(ex) for ex in examples])
    models = tmp_path / "models.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": server.base_url, "max_retries": 0}
    models.write_text(
        yaml.safe_dump({"backends": [backend], "judge": {"prices": {"prompt": 1.0, "completion": 2.0}}})
    )
    return data, models


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rank_with_a_judge_knockout_within_max_calls_and_resume(scripted_server, tmp_path) -> None:
    data, models = _files(tmp_path, scripted_server)
    args = ["rank", str(data), "-r", f"judge:{models}", "--strategy", "knockout", "--max-calls", "20"]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert len(scripted_server.requests) == 16  # knockout on 5: 4 matches in both orders, per example
    assert "judge: 16 calls (0 cached)" in result.output and "$" in result.output
    out = tmp_path / "data.ranked.jsonl"
    for record in _records(out):
        ranking = record["ranking"]
        assert ranking["ranker"] == f"judge:{models}" and ranking["strategy"] == "knockout"
        assert ranking["usage"]["calls"] == 8 and ranking["usage"]["prompt_tokens"] > 0
        assert ranking["usage"]["cost_usd"] > 0 and not ranking["usage"]["budget_cut"]
        assert sorted(ranking["order"]) == list(range(5))
    again = runner.invoke(app, args, terminal_width=200)
    assert again.exit_code == 0 and "2 examples already ranked" in again.output
    assert len(scripted_server.requests) == 16  # nothing asked twice


def test_a_tight_budget_cuts_every_example(scripted_server, tmp_path) -> None:
    data, models = _files(tmp_path, scripted_server)
    out = tmp_path / "ranked.jsonl"
    result = runner.invoke(
        app,
        [
            "rank",
            str(data),
            "--out",
            str(out),
            "-r",
            f"judge:{models}",
            "--strategy",
            "full",
            "--max-calls",
            "6",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(scripted_server.requests) == 12
    assert all(r["ranking"]["usage"]["budget_cut"] for r in _records(out))


def test_budget_options_need_a_judge_and_ranker_excludes_model(scripted_server, tmp_path) -> None:
    data, models = _files(tmp_path, scripted_server)
    result = runner.invoke(app, ["rank", str(data), "-r", "longest", "--max-calls", "3"], terminal_width=200)
    assert result.exit_code == 2 and "cap an LLM judge's calls; ranker 'longest' makes none" in result.output
    result = runner.invoke(app, ["rank", str(data), "-r", f"judge:{models}", "-m", "x"], terminal_width=200)
    assert result.exit_code == 2 and "replaces --model" in result.output


@pytest.mark.slow
def test_smollm2_behind_llama_cpp_server_ranks_alpaca_blend_dev_as_a_judge(alpaca_blend, tmp_path) -> None:
    """The real thing: the packaged SmolLM2 behind its own llama_cpp.server, `llmblend rank -r judge:`
    as a real process, on two alpaca-blend dev examples (3 candidates each), with token accounting."""
    folder, _ = alpaca_blend
    examples = [
        replace(ex, candidates=ex.candidates[:3]) for ex in load_mixinstruct(folder / "dev.jsonl")[:2]
    ]
    data = tmp_path / "dev3.jsonl"
    append_jsonl(data, [record_from_example(ex) for ex in examples])
    models = tmp_path / "judge.yaml"
    backend = {"name": "smollm2-judge", "model": "local:smollm2-135m", "llama_mode": "server", "n_ctx": 4096}
    judge = {"prompt": "gpt-rank", "orders": "random", "max_reply_tokens": 4}
    models.write_text(yaml.safe_dump({"backends": [backend], "judge": judge}))
    command = [sys.executable, "-m", "llmblend", "rank", str(data), "-r", f"judge:{models}"]
    command += ["--strategy", "knockout", "--max-calls", "20"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "judge: 4 calls (0 cached)" in result.stdout  # knockout on 3, each match once: 2 per example
    for record in _records(tmp_path / "dev3.ranked.jsonl"):
        usage = record["ranking"]["usage"]
        assert usage["calls"] == 2 and usage["prompt_tokens"] > 100 and usage["completion_tokens"] >= 2
        assert sorted(record["ranking"]["order"]) == [0, 1, 2] and record["ranking"]["error"] is None
