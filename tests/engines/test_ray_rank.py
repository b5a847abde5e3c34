"""``llmblend rank --engine ray`` on a real local Ray cluster: the local engine's output, byte for byte,
also after a killed driver and after a killed worker.

Every Ray run is compared with a local run of the shipped ranker (onnx-int8) on the same 12
alpaca-blend dev examples. Ray runs are real subprocesses, as a user runs them (a driver that joins
a cluster reads Ray's authentication settings once per process).
"""

from __future__ import annotations

import gzip
import json
import os
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
N_EXAMPLES = 12
INT8 = ["--runtime", "onnx-int8"]
BUBBLE = [*INT8, "--strategy", "bubble"]  # 20 forwards an example instead of 66: the kill tests


@pytest.fixture(scope="module")
def dev_slice(alpaca_blend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 examples of alpaca-blend dev."""
    folder, _ = alpaca_blend
    lines = (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:N_EXAMPLES]
    path = tmp_path_factory.mktemp("ray-rank") / "dev12.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def rank(*args: str) -> str:
    result = runner.invoke(app, ["rank", *args])
    assert result.exit_code == 0, result.output
    return result.output


def local_output(source: Path, name: str, options: list[str]) -> bytes:
    """The local engine's output for ``source`` with these rank options (written beside it)."""
    out = source.with_name(f"local-{name}.jsonl")
    rank(str(source), "--out", str(out), *options)
    return out.read_bytes()


@pytest.fixture(scope="module")
def local_int8(dev_slice: Path) -> bytes:
    """The local engine's output with the shipped ranker."""
    return local_output(dev_slice, "int8", INT8)


def rank_on_ray(cluster, *args: str, shard_size: int = 4) -> str:
    """``llmblend rank ... --engine ray`` in a fresh process (as a user runs it); its stdout."""
    command = [sys.executable, "-m", "llmblend", "rank", *args, *ray_args(cluster, shard_size=shard_size)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    return result.stdout


@pytest.fixture(scope="module")
def local_bubble(dev_slice: Path) -> bytes:
    """The local engine's output with the shipped ranker and the cheaper bubble strategy."""
    return local_output(dev_slice, "bubble", BUBBLE)


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def ray_args(cluster, workers: int = 2, shard_size: int = 4) -> list[str]:
    return [
        "--engine", "ray", "--address", cluster.address, "--num-workers", str(workers),
        "--shard-size", str(shard_size),
    ]  # fmt: skip


def test_ray_output_is_the_local_output_with_the_shipped_ranker(
    ray_cluster, dev_slice: Path, local_int8: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "ray.jsonl"
    output = rank_on_ray(ray_cluster, str(dev_slice), "--out", str(out), *INT8)
    assert out.read_bytes() == local_int8
    assert not (tmp_path / "ray.jsonl.shards").exists()  # merged, then removed
    assert "records/s" in output and f"ranked {N_EXAMPLES} examples on Ray" in output
    assert "3 shards ranked now" in output and ", 0 failed" in output


def test_ray_output_is_the_local_output_with_a_spec_ranker_on_two_input_files_one_gzip(
    ray_cluster, dev_slice: Path, tmp_path: Path
) -> None:
    """FILE... is one input on Ray too: a shard of 5 takes examples from both files."""
    lines = dev_slice.read_bytes().splitlines(keepends=True)
    first, compressed = tmp_path / "dev-first7.jsonl", tmp_path / "dev-last5.jsonl.gz"
    first.write_bytes(b"".join(lines[:7]))
    compressed.write_bytes(gzip.compress(b"".join(lines[7:])))
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    rank(str(dev_slice), "--out", str(local), "-r", "longest")
    rank_on_ray(ray_cluster, str(first), str(compressed), "--out", str(ray), "-r", "longest", shard_size=5)
    assert ray.read_bytes() == local.read_bytes()
    # a second run finds everything done and starts no Ray job
    again = rank_on_ray(ray_cluster, str(first), str(compressed), "--out", str(ray), "-r", "longest")
    assert "ranked 0 examples" in again and ray.read_bytes() == local.read_bytes()


def test_the_workers_start_while_the_driver_reads_and_ray_holds_a_few_shards(
    ray_cluster, dev_slice: Path, tmp_path: Path
) -> None:
    """12 shards of one example for 2 workers: never more than 2 x 2 of them in Ray at once, so the
    workers were ranking before the driver had read the input (it used to put all 12 first)."""
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    rank(str(dev_slice), "--out", str(local), "-r", "longest")
    output = rank_on_ray(ray_cluster, str(dev_slice), "--out", str(ray), "-r", "longest", shard_size=1)
    assert f"{N_EXAMPLES} shards ranked now" in output
    assert 1 <= int(re.search(r"at most (\d+) in Ray at once", output).group(1)) <= 4
    assert ray.read_bytes() == local.read_bytes()


def test_a_malformed_line_stops_the_job_keeping_what_came_before(
    ray_cluster, dev_slice: Path, tmp_path: Path
) -> None:
    """The driver meets the bad line while workers rank the shards before it: the error names the
    file and line, those shards are kept, and the rerun on the mended file ranks only the rest."""
    lines = dev_slice.read_text(encoding="utf-8").splitlines(keepends=True)
    source = tmp_path / "dev12.jsonl"
    source.write_text("".join([*lines[:9], "{not json\n", *lines[10:]]), encoding="utf-8")
    out = tmp_path / "ray.jsonl"
    command = [sys.executable, "-m", "llmblend", "rank", str(source), "--out", str(out), "-r", "longest"]
    failed = subprocess.run(command + ray_args(ray_cluster, shard_size=2), capture_output=True, text=True)
    assert failed.returncode != 0
    assert f"{source}:10: not valid JSON" in failed.stderr, failed.stderr[-3000:]
    kept = sorted(p.name for p in (tmp_path / "ray.jsonl.shards").glob("shard-*.jsonl"))
    assert kept == [f"shard-{k:06d}.jsonl" for k in range(4)] and not out.exists()
    source.write_text("".join(lines), encoding="utf-8")
    output = rank_on_ray(ray_cluster, str(source), "--out", str(out), "-r", "longest", shard_size=2)
    assert "2 shards ranked now" in output and re.search(r"in Ray at once\), 4 \(8 records\)", output)
    local = tmp_path / "local.jsonl"
    rank(str(source), "--out", str(local), "-r", "longest")
    assert out.read_bytes() == local.read_bytes()


def driver(cluster, source: Path, out: Path, shard_size: int) -> subprocess.Popen:
    """``llmblend rank --engine ray`` as a subprocess, its output in files beside OUT."""
    command = [sys.executable, "-m", "llmblend", "rank", str(source), "--out", str(out), *BUBBLE]
    command += ray_args(cluster, shard_size=shard_size)
    log = out.with_name(out.name + ".log").open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_for_first_shard(process: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    shards = out.with_name(out.name + ".shards")
    deadline = time.monotonic() + timeout
    while not list(shards.glob("shard-*.jsonl")):
        assert process.poll() is None, out.with_name(out.name + ".log").read_text()
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.05)


def test_a_killed_driver_reruns_only_unfinished_shards(
    ray_cluster, dev_slice: Path, local_bubble: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "ray.jsonl"
    process = driver(ray_cluster, dev_slice, out, shard_size=3)
    try:
        wait_for_first_shard(process, out)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finished = len(list((tmp_path / "ray.jsonl.shards").glob("shard-*.jsonl")))
    assert 1 <= finished < 4 and not out.exists()
    output = rank_on_ray(ray_cluster, str(dev_slice), "--out", str(out), *BUBBLE, shard_size=3)
    reused = int(re.search(r"in Ray at once\), (\d+) \(", output).group(1))
    assert reused == finished
    assert out.read_bytes() == local_bubble
    assert len(set(ids(out))) == N_EXAMPLES


def test_a_killed_worker_is_restarted_and_its_shard_retried(
    ray_cluster, dev_slice: Path, local_bubble: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "ray.jsonl"
    process = driver(ray_cluster, dev_slice, out, shard_size=3)
    try:
        wait_for_first_shard(process, out)
        before = set(ray_cluster.worker_pids())
        assert before, "no ShardRanker worker process found"
        os.kill(max(before), signal.SIGKILL)
        seen: set[int] = set()
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            seen |= set(ray_cluster.worker_pids())
            time.sleep(0.2)
        assert process.wait(timeout=10) == 0, out.with_name(out.name + ".log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert seen - before, "Ray did not restart the killed worker"
    assert out.read_bytes() == local_bubble
    assert len(set(ids(out))) == N_EXAMPLES


def test_engine_ray_without_ray_names_the_extra(dev_slice: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = str(tmp_path / "o.jsonl")
    result = runner.invoke(app, ["rank", str(dev_slice), "--out", out, "--engine", "ray"])
    assert result.exit_code == 2
    assert "pip install 'llmblend[ray]'" in result.output


def test_ray_options_need_engine_ray_and_a_known_engine(dev_slice: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "o.jsonl")
    result = runner.invoke(app, ["rank", str(dev_slice), "--out", out, "--num-workers", "2"])
    assert result.exit_code == 2 and "--num-workers: only with --engine ray" in result.output
    result = runner.invoke(app, ["rank", str(dev_slice), "--out", out, "--engine", "spark"])
    assert result.exit_code == 2 and "choose local or ray" in result.output
    result = runner.invoke(app, ["generate", "-i", str(dev_slice), "--out", out, "--worker-gpus", "1"])
    assert result.exit_code == 2 and "--worker-gpus: only with --engine ray" in result.output
    result = runner.invoke(
        app, ["rank", str(dev_slice), "--out", out, "--engine", "ray", "--worker-cpus", "0"]
    )
    assert result.exit_code == 2 and "CPUs must be above 0" in result.output


def test_joining_without_the_clusters_token_is_a_clear_error(
    ray_cluster, dev_slice: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(tmp_path)}
    command = [sys.executable, "-m", "llmblend", "rank", str(dev_slice), "--out", str(tmp_path / "o.jsonl")]
    command += ["-r", "longest", *ray_args(ray_cluster)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert "needs RAY_AUTH_MODE=token and the cluster's token" in result.stdout + result.stderr


def test_a_ray_client_address_is_refused_with_the_route_that_works(dev_slice: Path, tmp_path: Path) -> None:
    """Ray Data does not run under Ray Client: ray:// would fail deep inside Ray, after joining."""
    out = str(tmp_path / "o.jsonl")
    args = ["rank", str(dev_slice), "--out", out, "-r", "longest", "--engine", "ray"]
    result = runner.invoke(app, [*args, "--address", "ray://h:10001"])
    assert result.exit_code == 2, result.output
    assert "does not run under Ray Client" in result.output and "ray job submit" in result.output
    assert not Path(out).exists()


def test_a_command_submitted_as_a_ray_job_ranks_as_locally(
    ray_cluster, dev_slice: Path, tmp_path: Path
) -> None:
    """The route to a remote cluster: ``ray job submit -- llmblend rank ... --engine ray`` (the job
    joins its cluster without --address), through the cluster's job server."""
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    rank(str(dev_slice), "--out", str(local), "-r", "longest")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    command = [ray_bin, "job", "submit", "--address", ray_cluster.dashboard, "--"]
    command += [sys.executable, "-m", "llmblend", "rank", str(dev_slice), "--out", str(ray), "-r", "longest"]
    command += ["--engine", "ray", "--num-workers", "2", "--shard-size", "4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "3 shards ranked now" in result.stdout and "succeeded" in result.stdout + result.stderr
    assert ray.read_bytes() == local.read_bytes()


JOIN_AND_CHECK = """
import logging
from llmblend.engines.ray_session import RayOptions, check_cpus, joins_a_cluster, ray_session
logging.basicConfig(level=logging.WARNING)
assert joins_a_cluster(None)
with ray_session(None):
    check_cpus(RayOptions(num_workers=3))  # 3 CPUs of a 2-CPU cluster
"""


def test_a_ray_job_without_address_joins_its_cluster_and_waits_for_it_to_grow(
    ray_cluster, monkeypatch
) -> None:
    """In a Ray job (RAY_ADDRESS set) no --address joins the job's cluster: too few CPUs for the
    workers is then a warning (an autoscaler may add nodes), not the local engine's error."""
    from llmblend.engines.ray_session import joins_a_cluster

    env = os.environ | {"RAY_ADDRESS": ray_cluster.address}
    result = subprocess.run([sys.executable, "-c", JOIN_AND_CHECK], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "needs 3 CPUs (1 per worker) and this Ray cluster has 2: workers wait" in result.stderr
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not joins_a_cluster(None) and joins_a_cluster("auto")
