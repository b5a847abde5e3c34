"""The main job end to end: `llmblend blend` on a fresh machine, no configuration, no network."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")


@pytest.mark.slow
def test_llmblend_blend_with_the_packaged_models_ranker_and_fuser() -> None:
    command = [sys.executable, "-m", "llmblend", "blend", "Give two tips for sleeping better.", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    candidates = record["candidates"]
    assert sorted({c["model"] for c in candidates}) == ["gemma3-270m", "smollm2-135m"]
    assert len(candidates) == 4
    assert sorted(c["rank"] for c in candidates if c["error"] is None) == list(range(1, 5))
    assert record["ranker"] and len(record["top_k"]) == 3
    assert record["fused"]["fuser"] == "gemma3-270m-fuser" and record["fused"]["error"] is None
    assert record["returned"] in ("fused", "top") and record["answer"]
    if record["returned"] == "fused":
        assert record["answer"] == record["fused"]["text"] and record["guard_margin"] >= 0
    else:
        assert record["guard_margin"] < 0
    timings = record["timings"]
    assert all(timings[k] > 0 for k in ("generate_s", "rank_s", "fuse_s", "guard_s", "total_s"))
