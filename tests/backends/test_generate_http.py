"""``llmblend generate`` against real HTTP: partial failures as data, and a real kill -9 then resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llmblend.backends.base import GenerationParams
from llmblend.backends.config import Slot
from llmblend.backends.openai_http import OpenAIBackend
from llmblend.data.generate import Instruction, failed_path_for, generate_dataset
from llmblend.data.mixinstruct import load_mixinstruct


def http_slot(name: str, base_url: str, **options) -> Slot:
    backend = OpenAIBackend(name=name, base_url=base_url, max_retries=0, **options)
    return Slot(backend, GenerationParams(max_tokens=16))


def test_every_kind_of_failing_backend_leaves_the_good_answer(scripted_server, refused_url, tmp_path) -> None:
    url = scripted_server.base_url
    for model, behaviour in [
        ("hangs", ("hang", 3)),
        ("errors", 500),
        ("garbles", "garbage"),
        ("limits", (429, 1)),
    ]:
        scripted_server.script_for(model, [behaviour] * 2)
    slots = [
        http_slot("good", url),
        http_slot("refused", refused_url),
        http_slot("hangs", url, read_timeout=0.3),
        http_slot("errors", url),
        http_slot("garbles", url),
        http_slot("limits", url),
    ]
    out = tmp_path / "mix.jsonl"
    items = [Instruction("q1", "Name a colour."), Instruction("q2", "Name a city.")]
    started = time.perf_counter()
    report = asyncio.run(generate_dataset(items, slots, out))
    assert time.perf_counter() - started < 2.5  # the hanging model cost its timeout, not its hang

    for example in load_mixinstruct(out):
        assert [(c.model, c.text) for c in example.candidates] == [("good", f"echo: {example.instruction}")]
        errors = {e["model"]: e["error"] for e in example.extra["generation"] if e["error"]}
        assert set(errors) == {"refused", "hangs", "errors", "garbles", "limits"}
        assert errors["refused"].startswith("connection:")
        assert errors["hangs"].startswith("timeout:")
        assert errors["errors"].startswith("bad_response:") and "500" in errors["errors"]
        assert errors["garbles"].startswith("bad_response:")
        assert errors["limits"].startswith("rate_limit:")
    assert report.failed_slots == 10
    assert report.usage.backends["errors"].failures == 2


def run_generate(config: Path, instructions: Path, out: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "llmblend", "generate", "-c", str(config), "-i", str(instructions)]
    return subprocess.Popen(
        [*command, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )


def test_kill_9_mid_run_then_rerun_gives_each_instruction_one_full_set(scripted_server, tmp_path) -> None:
    n = 16
    instructions = tmp_path / "questions.txt"
    instructions.write_text("".join(f"question number {i}\n" for i in range(n)))
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
defaults: {{max_tokens: 8, temperature: 0.7}}
backends:
  - {{model: m1, base_url: "{scripted_server.base_url}", concurrency: 2, samples: 2}}
  - {{model: m2, base_url: "{scripted_server.base_url}", concurrency: 2, samples: 2}}
"""
    )
    scripted_server.script([("ok", 0.15)] * (4 * n))
    out = tmp_path / "mix.jsonl"
    process = run_generate(config, instructions, out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 4):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {json.loads(line)["id"] for line in out.read_bytes().splitlines() if line.endswith(b"}")}
    assert 4 <= len(done_before) < n, "the kill should land mid-run"
    with out.open("ab") as handle:  # as if the kill had torn a write in half
        handle.write(b'{"id": "torn", "instruction": "quest')
    asked_before = len(scripted_server.requests)

    rerun = run_generate(config, instructions, out)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr.decode()

    examples = load_mixinstruct(out)  # valid, and no id twice (the reader checks)
    assert len(examples) == n
    assert sorted(e.instruction for e in examples) == sorted(f"question number {i}" for i in range(n))
    for example in examples:
        assert sorted((c.model, c.decoding_method) for c in example.candidates) == sorted(
            (m, f"top_p_sampling(t=0.7,p=1,seed={s})") for m in ("m1", "m2") for s in (0, 1)
        )
        assert {c.text for c in example.candidates} == {f"echo: {example.instruction}"}
    asked_again = {r.body["messages"][-1]["content"] for r in scripted_server.requests[asked_before:]}
    ids_before = {e.id for e in examples if e.id in done_before}
    assert not asked_again & {e.instruction for e in examples if e.id in ids_before}
    assert not failed_path_for(out).exists()
    assert b"already done" in stdout
