"""``llmblend rank -r judge:models.yaml --engine ray`` and ``llmblend eval judge --engine ray``: an
LLM judge works on Ray workers with one limit on its calls in flight for the whole cluster, and
gives the local engine's output (for ``rank``, the judge's wall time aside)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.jsonl import append_jsonl
from llmblend.data.mixinstruct import record_from_example
from llmblend.types import Candidate, Example

pytest.importorskip("ray")

runner = CliRunner()
CALLS = 8 * 3 * 2  # 8 examples; knockout on 4 candidates plays 3 matches, each in both orders


def files(tmp_path: Path, base_url: str) -> tuple[Path, Path]:
    answers = [[Candidate(f"m{i}", f"answer {k}.{i}") for i in range(4)] for k in range(8)]
    examples = [Example(f"ex{k}", f"Question {k}?", candidates=answers[k]) for k in range(8)]
    data = tmp_path / "data.jsonl"
    append_jsonl(data, [record_from_example(ex) for ex in examples])
    models = tmp_path / "models.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": base_url, "concurrency": 2, "max_retries": 0}
    models.write_text(yaml.safe_dump({"backends": [backend], "judge": {"strategy": "knockout"}}))
    return data, models


def test_a_judge_on_ray_keeps_its_concurrency_across_workers(ray_cluster, scripted_server, tmp_path) -> None:
    data, models = files(tmp_path, scripted_server.base_url)
    scripted_server.script([("say", "[[A]]", 0.25)] * CALLS)
    out = tmp_path / "ray.jsonl"
    command = [sys.executable, "-m", "llmblend", "rank", str(data), "--out", str(out)]
    command += ["-r", f"judge:{models}"]
    command += ["--engine", "ray", "--address", ray_cluster.address]
    command += ["--num-workers", "2", "--shard-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    assert len(scripted_server.requests) == CALLS
    # each worker's judge keeps 2 calls in flight on its own: two workers alone would reach 4
    assert scripted_server.max_in_flight == 2
    assert result.stdout.count(" pid ") == 2, result.stdout  # both workers ranked shards

    scripted_server.script([("say", "[[A]]")] * CALLS)
    local = tmp_path / "local.jsonl"
    ranked = runner.invoke(app, ["rank", str(data), "--out", str(local), "-r", f"judge:{models}"])
    assert ranked.exit_code == 0, ranked.output
    assert rankings(out) == rankings(local)


def rankings(path: Path) -> list[dict]:
    """The records, without the seconds each judge spent (the one field that differs run to run)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for record in records:
        assert record["ranking"]["usage"].pop("seconds") >= 0
    return records


def slow_reply(prompt: str) -> str:
    """The better answer by its number (a higher k.i wins), after a pause that keeps calls in flight."""
    time.sleep(0.15)
    first, second = re.findall(r"answer \d+\.(\d+)", prompt)[-2:]
    return "[[A]]" if int(first) > int(second) else "[[B]]"


def test_eval_judge_on_ray_equals_the_local_run_and_keeps_the_limit(
    ray_cluster, scripted_server, tmp_path
) -> None:
    data, models = files(tmp_path, scripted_server.base_url)
    calls = 8 * 6 * 2  # 8 examples, 6 pairs each, both orders
    scripted_server.script([("reply", slow_reply)] * calls)
    out = tmp_path / "ray.jsonl"
    command = [sys.executable, "-m", "llmblend", "eval", "judge", str(data), "--judge", str(models)]
    command += ["--out", str(out), "--engine", "ray", "--address", ray_cluster.address]
    command += ["--num-workers", "2", "--shard-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    assert len(scripted_server.requests) == calls
    assert scripted_server.max_in_flight == 2  # the judge's concurrency, for both workers together
    assert result.stdout.count(" pid ") == 2, result.stdout
    first = json.loads(out.read_text().splitlines()[0])
    assert json.loads(first["cmp_results"])["m0,m3"] == "B is better"  # the later answer is better

    scripted_server.script([("reply", slow_reply)] * calls)
    local = tmp_path / "local.jsonl"
    judged = runner.invoke(app, ["eval", "judge", str(data), "--judge", str(models), "--out", str(local)])
    assert judged.exit_code == 0, judged.output
    assert out.read_bytes() == local.read_bytes()
