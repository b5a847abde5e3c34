"""``llmblend generate --engine ray`` and ``best-of-n --engine ray`` on a real local Ray cluster,
against the scripted OpenAI-compatible server: the local engine's records, one limit on calls in
flight for all workers together, and nothing lost or repeated after a killed driver.

Ray runs are real subprocesses, as a user runs them; the server runs in this process on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmblend.cli import app

pytest.importorskip("ray")

runner = CliRunner()
N = 16


def write_config(path: Path, base_url: str, concurrency: int) -> Path:
    path.write_text(
        "defaults: {max_tokens: 8, temperature: 0.7}\n"
        "backends:\n"
        f"  - {{name: api, model: api-model, base_url: {base_url}, concurrency: {concurrency},\n"
        "     samples: 2}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def instructions(tmp_path: Path) -> Path:
    path = tmp_path / "instructions.jsonl"
    lines = (json.dumps({"id": f"q{k:02d}", "instruction": f"Name {k} uses of copper."}) for k in range(N))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def on_ray(cluster, command: str, *args: str, workers: int = 2, shard_size: int = 4) -> subprocess.Popen:
    """``llmblend COMMAND ... --engine ray`` as a subprocess joined to the cluster."""
    argv = [sys.executable, "-m", "llmblend", command, *args, "--engine", "ray"]
    argv += ["--address", cluster.address, "--num-workers", str(workers), "--shard-size", str(shard_size)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-5000:]
    return output


def records(path: Path) -> list[dict]:
    """The records of a JSONL file, without the latencies (the one field that differs run to run)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for entry in record["generation"]:
            entry.pop("latency_s")
        out.append(record)
    return out


def local(command: str, *args: str) -> None:
    result = runner.invoke(app, [command, *args])
    assert result.exit_code == 0, result.output


def test_generate_on_ray_gives_the_local_records_within_one_cluster_wide_limit(
    ray_cluster, scripted_server, instructions: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "models.yaml", scripted_server.base_url, concurrency=2)
    scripted_server.script([("ok", 0.25)] * (2 * N))  # slow enough for the two workers to overlap
    out = tmp_path / "ray.jsonl"
    args = ["-i", str(instructions), "--out", str(out), "-c", str(config)]
    output = finish(on_ray(ray_cluster, "generate", *args, shard_size=2))
    # the driver feeds the 8 shards as the workers take them: Ray holds at most 2 per worker
    assert 1 <= int(re.search(r"8 shards answered \(at most (\d+) in Ray at once\)", output).group(1)) <= 4
    # each worker may keep 2 calls in flight, so two workers alone would reach 4
    assert scripted_server.max_in_flight == 2
    assert "api: at most 2 of 2 calls in flight across the cluster (32 calls)" in output
    assert len(re.findall(r" pid \d+ on ", output)) == 2, output  # both workers answered shards
    assert f"wrote {N} records ({2 * N} candidates)" in output

    expected = tmp_path / "local.jsonl"
    local("generate", "-i", str(instructions), "--out", str(expected), "-c", str(config))
    assert records(out) == records(expected)  # the same records, in input order


def test_a_killed_generate_driver_reruns_only_what_out_lacks(
    ray_cluster, scripted_server, instructions: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "models.yaml", scripted_server.base_url, concurrency=2)
    scripted_server.script([("ok", 0.3)] * (2 * N))
    out = tmp_path / "ray.jsonl"
    args = ["-i", str(instructions), "--out", str(out), "-c", str(config)]
    process = on_ray(ray_cluster, "generate", *args, shard_size=2)
    try:
        deadline = time.monotonic() + 300
        while not (out.exists() and out.read_text(encoding="utf-8").count("\n") >= 2):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    kept = {record["id"] for record in records(out)}
    assert 2 <= len(kept) < N
    asked = len(scripted_server.requests)

    output = finish(on_ray(ray_cluster, "generate", *args, shard_size=2))
    assert f"{len(kept)} were already done" in output
    assert len(scripted_server.requests) - asked == 2 * (N - len(kept))  # only what OUT lacked
    assert [record["id"] for record in records(out)] == [f"q{k:02d}" for k in range(N)]


def test_best_of_n_on_ray_gives_the_local_output(
    ray_cluster, scripted_server, instructions: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "models.yaml", scripted_server.base_url, concurrency=2)
    args = ["-i", str(instructions), "-c", str(config), "-n", "3", "-r", "longest", "--limit", "8"]
    out = tmp_path / "ray.jsonl"
    output = finish(on_ray(ray_cluster, "best-of-n", *args, "--out", str(out)))
    assert "best of 3 from api: 24 samples generated" in output and "8 instructions ranked" in output
    expected = tmp_path / "local.jsonl"
    local("best-of-n", *args, "--out", str(expected))
    assert records(out) == records(expected)
    assert all(record["best"]["text"].startswith("echo: ") for record in records(out))
