"""Best-of-n: n seeded samples of one backend over real HTTP, ranked, the best marked; resumable."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from llmblend.backends.base import GenerationParams
from llmblend.backends.openai_http import OpenAIBackend
from llmblend.blend.best_of_n import check_sampling, sample_slots
from llmblend.blender import Blender
from llmblend.cli import app
from llmblend.errors import LlmblendError
from llmblend.rank.baselines import LongestRanker

runner = CliRunner()


def _config(tmp_path, server, temperature: float = 0.8):
    path = tmp_path / "models.yaml"
    backend = {"name": "sampler", "model": "sampler", "base_url": server.base_url, "max_retries": 0}
    path.write_text(
        yaml.safe_dump({"defaults": {"temperature": temperature, "max_tokens": 32}, "backends": [backend]})
    )
    return path


def test_sample_slots_are_seeded_copies_and_greedy_is_refused() -> None:
    backend = OpenAIBackend(name="x", model="x", base_url="http://127.0.0.1:9/v1")
    slots = sample_slots(backend, GenerationParams(temperature=0.7, seed=5), 3)
    assert [s.params.seed for s in slots] == [5, 6, 7] and len({s.key for s in slots}) == 3
    with pytest.raises(LlmblendError, match="needs sampling"):
        check_sampling(GenerationParams(temperature=0.0), 4, "x")
    check_sampling(GenerationParams(temperature=0.0), 1, "x")  # one greedy sample is fine


def test_the_cli_keeps_every_sample_marks_the_best_and_resumes(scripted_server, tmp_path) -> None:
    answers = ["Short.", "A much longer answer than the others.", "Medium answer."]
    scripted_server.script_for("sampler", [("say", a) for a in answers * 2])
    instructions = tmp_path / "q.txt"
    instructions.write_text("Name a metal.\nName a colour.\n")
    out = tmp_path / "best.jsonl"
    args = [
        "best-of-n",
        "-i",
        str(instructions),
        "--out",
        str(out),
        "-n",
        "3",
        "-c",
        str(_config(tmp_path, scripted_server)),
    ]
    result = runner.invoke(app, [*args, "-r", "longest"], terminal_width=200)
    assert result.exit_code == 0, result.output
    seeds = sorted(r.body["seed"] for r in scripted_server.requests_for("sampler"))
    assert seeds == [0, 0, 1, 1, 2, 2]  # three distinct samples per instruction
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert len(record["candidates"]) == 3 and record["ranking"]["ranker"] == "longest"
        best = record["best"]
        assert best["text"] == record["candidates"][best["index"]]["text"]
        assert (
            best["text"].startswith("A much longer") or len(set(c["text"] for c in record["candidates"])) < 3
        )
    assert (tmp_path / "best.samples.jsonl").is_file()
    again = runner.invoke(app, [*args, "-r", "longest"], terminal_width=200)
    assert again.exit_code == 0 and "2 were already done" in again.output
    assert len(scripted_server.requests_for("sampler")) == 6  # nothing asked twice


def test_greedy_best_of_n_is_an_error_naming_the_backend(scripted_server, tmp_path) -> None:
    instructions = tmp_path / "q.txt"
    instructions.write_text("Name a metal.\n")
    config = _config(tmp_path, scripted_server, temperature=0.0)
    result = runner.invoke(
        app, ["best-of-n", "-i", str(instructions), "--out", str(tmp_path / "o.jsonl"), "-c", str(config)]
    )
    assert result.exit_code == 2 and "backend 'sampler' decodes greedily" in result.output
    assert not scripted_server.requests_for("sampler")


def test_blender_best_of_n_returns_the_best_sample(scripted_server) -> None:
    scripted_server.script_for(
        "sampler", [("say", "Tin."), ("say", "Copper is used for wires."), ("say", "Gold.")]
    )
    backend = OpenAIBackend(name="sampler", model="sampler", base_url=scripted_server.base_url, max_retries=0)
    with Blender.best_of_n(backend, GenerationParams(temperature=0.9), 3, LongestRanker()) as blender:
        result = blender.blend("Which metal is used for wires?")
    assert result.answer == "Copper is used for wires." and len(result.candidates) == 3
    assert result.fused is None
