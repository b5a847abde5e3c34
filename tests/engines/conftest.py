"""A real local Ray cluster for the engine tests: ``ray start --head`` on free ports, stopped after.

The cluster lives in its own short temporary folder (Unix socket paths must stay short), and is
stopped by ending exactly its own processes (those naming that folder, and their children), not
by ``ray stop``, which would end every Ray cluster on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The process title of a Ray Data worker running :class:`llmblend.engines.ray_rank.ShardRanker`.
WORKER_TITLE = "ray::MapWorker(MapBatches(ShardRanker))"


@dataclass(frozen=True)
class RayCluster:
    address: str
    temp_dir: Path
    dashboard: str  # the job server's address, for ray job submit

    def pids(self) -> set[int]:
        """Every live process of this cluster: those naming its folder, and their descendants."""
        table = _process_table()
        table.pop(os.getpid(), None)
        pids = {pid for pid, (_, cmdline) in table.items() if str(self.temp_dir) in cmdline}
        while True:
            children = {pid for pid, (ppid, _) in table.items() if ppid in pids} - pids
            if not children:
                return pids
            pids |= children

    def worker_pids(self) -> list[int]:
        """The ShardRanker worker processes of this cluster, oldest first."""
        table = _process_table()
        return sorted(pid for pid in self.pids() if table.get(pid, (0, ""))[1].startswith(WORKER_TITLE))


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process (Linux /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if cmdline:  # zombies have none
            table[int(entry.name)] = (ppid, cmdline)
    return table


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(cluster: RayCluster, grace: float = 3.0) -> None:
    pids = cluster.pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while (pids := pids & cluster.pids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids:
            return


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head node with 2 CPUs, joined at 127.0.0.1 by its address; stopped even when tests fail.

    Ray 2.60 requires token authentication by default, and a driver that joins by address sends
    its token only with ``RAY_AUTH_MODE=token``: the cluster and every driver of this session get
    that and a token of their own (``RAY_AUTH_TOKEN``), so ``~/.ray`` is neither read nor written.
    """
    pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        yield from _cluster()


def _cluster() -> Iterator[RayCluster]:
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="llmblend-ray-", dir="/tmp"))
    gcs, dashboard, agent, agent_grpc, env_agent, metrics = _free_ports(6)
    command = [
        str(ray_bin), "start", "--head", "--port", str(gcs),
        "--num-cpus", "2", "--include-dashboard=true", "--dashboard-host", "127.0.0.1",
        "--disable-usage-stats",
        "--temp-dir", str(temp_dir),
        "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", str(agent),
        "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(env_agent),
        "--metrics-export-port", str(metrics),
    ]  # fmt: skip
    cluster = RayCluster(f"127.0.0.1:{gcs}", temp_dir, f"http://127.0.0.1:{dashboard}")
    try:
        started = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            pytest.fail(f"ray start failed:\n{started.stdout}\n{started.stderr}")
        yield cluster
    finally:
        _stop(cluster)
        shutil.rmtree(temp_dir, ignore_errors=True)
