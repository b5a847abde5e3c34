"""``llmblend eval judge``: an LLM judge's GPT-Rank verdicts on every pair of a file, resumably.

The judge is a real :class:`~llmblend.rank.judge_ranker.JudgeRanker` over the scripted HTTP server,
which prefers the answer whose quality word is better (so a position-blind judge, decided pairs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.mixinstruct import parse_cmp_results, write_mixinstruct
from llmblend.eval.judge_file import JUDGE_FIELD, summarize
from llmblend.types import Candidate, Example

runner = CliRunner()
QUALITY = {"excellent": 3, "decent": 2, "poor": 1}
ANSWERS = {"strong": "an excellent answer", "mid": "a decent answer", "weak": "a poor answer"}
CALLS_PER_EXAMPLE = 3 * 2  # 3 pairs, both orders


def judge_reply(prompt: str) -> str:
    """MT-bench's verdict for the answer whose quality word comes first in the prompt (A) or second."""
    first, second = re.findall("|".join(QUALITY), prompt)[-2:]  # the two answers come last
    return "[[A]]" if QUALITY[first] > QUALITY[second] else "[[B]]"


def write_files(tmp_path: Path, base_url: str, examples: int = 4) -> tuple[Path, Path]:
    judge = {"prompt": "mt-bench", "soft": False, "strategy": "full", "cache": "judge-cache.jsonl"}
    config = tmp_path / "judge.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": base_url, "max_retries": 0}
    config.write_text(yaml.safe_dump({"backends": [backend], "judge": judge}), encoding="utf-8")
    data = [
        Example(f"q/{i}", f"question {i}", candidates=[Candidate(m, f"{t} {i}") for m, t in ANSWERS.items()])
        for i in range(examples)
    ]
    # the first example carries earlier verdicts: one the judge shares, one it does not
    data[0] = Example(
        "q/0",
        "question 0",
        candidates=data[0].candidates,
        cmp_results={"strong,weak": "A is better", "strong,mid": "B is better"},
    )
    path = tmp_path / "candidates.jsonl"
    write_mixinstruct(data, path)
    return config, path


def invoke(*args) -> object:
    return runner.invoke(app, ["eval", "judge", *(str(a) for a in args)])


def records(path: Path) -> list[dict]:
    """OUT's records, ``cmp_results`` parsed (MixInstruct stores it as a JSON string)."""
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for record in found:
        record["cmp_results"] = parse_cmp_results(record["cmp_results"])
    return found


def test_every_pair_gets_the_judges_verdict_as_cmp_results(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url)
    scripted_server.script([("reply", judge_reply)] * 4 * CALLS_PER_EXAMPLE)
    out = tmp_path / "judged.jsonl"
    result = invoke(data, "--judge", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(scripted_server.requests) == 4 * CALLS_PER_EXAMPLE
    judged = records(out)
    assert [r["id"] for r in judged] == ["q/0", "q/1", "q/2", "q/3"]
    for record in judged:
        assert record["cmp_results"] == {
            "strong,mid": "A is better",
            "strong,weak": "A is better",
            "mid,weak": "A is better",
        }
        counts = record[JUDGE_FIELD]
        assert counts["judge"] == f"judge:{config}" and counts["prompt"] == "mt-bench"
        assert (counts["pairs"], counts["decided"], counts["ties"], counts["errors"]) == (3, 3, 0, 0)
    # the earlier verdicts were replaced, and compared: strong beat weak (agreed), not mid (disagreed)
    assert judged[0][JUDGE_FIELD]["recorded"] == {"pairs": 2, "agreed": 1}
    assert "recorded" not in judged[1][JUDGE_FIELD]
    assert "agreement with FILE's cmp_results: 0.500 of 2 pairs" in result.output

    summary = summarize(out)
    assert list(summary.models) == ["strong", "mid", "weak"]
    strong, weak = summary.models["strong"], summary.models["weak"]
    assert (strong.mean_rank, strong.wins, strong.losses) == (1.0, 8, 0)
    assert (weak.mean_rank, weak.wins, weak.losses) == (3.0, 0, 8)
    assert re.search(r"strong\s*│\s*4\s*│\s*1\.00\s*│\s*8\s*│\s*0", result.output), result.output


def test_a_failed_call_is_counted_and_kept_as_data(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url, examples=2)
    scripted_server.script([(500, "the judge is down")] + [("reply", judge_reply)] * 11)
    out = tmp_path / "judged.jsonl"
    result = invoke(data, "--judge", config, "--out", out, "--chunk-size", "1")
    assert result.exit_code == 0, result.output
    first, second = records(out)
    assert first[JUDGE_FIELD]["errors"] == 1 and "the judge is down" in first[JUDGE_FIELD]["error"]
    assert len(first["cmp_results"]) == 2  # the other two pairs keep their verdicts
    assert second[JUDGE_FIELD]["errors"] == 0 and len(second["cmp_results"]) == 3
    assert "1 with a failed pair" in result.output
    assert summarize(out).failed == 1


def test_a_rerun_judges_only_what_out_lacks(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url)
    (tmp_path / "judge.yaml").write_text(  # no cache: a rerun that asked again would show
        (tmp_path / "judge.yaml").read_text().replace("cache: judge-cache.jsonl", "cache: null")
    )
    scripted_server.script([("reply", judge_reply)] * 4 * CALLS_PER_EXAMPLE)
    out = tmp_path / "judged.jsonl"
    assert invoke(data, "--judge", config, "--out", out, "--limit", "2").exit_code == 0
    assert len(scripted_server.requests) == 2 * CALLS_PER_EXAMPLE
    with out.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "q/2", "torn')  # a kill mid-write
    result = invoke(data, "--judge", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(scripted_server.requests) == 4 * CALLS_PER_EXAMPLE
    assert "2 were already done" in result.output
    assert [r["id"] for r in records(out)] == ["q/0", "q/1", "q/2", "q/3"]


def test_rank_and_train_pool_reuse_the_judged_verdicts(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url)
    scripted_server.script([("reply", judge_reply)] * 4 * CALLS_PER_EXAMPLE)
    assert invoke(data, "--judge", config, "--out", tmp_path / "judged.jsonl").exit_code == 0
    asked = len(scripted_server.requests)

    ranked = tmp_path / "ranked.jsonl"
    result = runner.invoke(app, ["rank", str(data), "-r", f"judge:{config}", "--out", str(ranked)])
    assert result.exit_code == 0, result.output
    pool = tmp_path / "pool.json"
    result = runner.invoke(app, ["train", "pool", str(data), "--judge", str(config), "--out", str(pool)])
    assert result.exit_code == 0, result.output
    assert len(scripted_server.requests) == asked  # both read the cache the judging filled
    for record in records(ranked):
        assert record["candidates"][record["ranking"]["order"][0]]["model"] == "strong"


def test_bad_arguments_get_clear_errors(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url)
    result = invoke(data, "--judge", config, "--out", data)
    assert result.exit_code != 0 and "is an input file" in result.output
    result = invoke(data, "--judge", f"{config}#nobody", "--out", tmp_path / "o.jsonl")
    assert result.exit_code != 0 and "no backend named 'nobody'" in result.output
    result = invoke(data, "--judge", config, "--shard-size", "2")
    assert result.exit_code != 0 and "only with --engine ray" in result.output
    assert scripted_server.requests == []


def test_a_judge_that_decides_nothing_says_so(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url, examples=2)
    scripted_server.script([("say", "[[C]]")] * 2 * CALLS_PER_EXAMPLE)  # a tie every time
    out = tmp_path / "judged.jsonl"
    result = invoke(data, "--judge", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert all(r[JUDGE_FIELD]["decided"] == 0 and r["cmp_results"] is None for r in records(out))
    assert "no pair of its 1 examples with verdicts was decided by both" in result.output
    assert re.search(r"strong\s*│\s*2\s*│\s*2\.00\s*│\s*0\s*│\s*0\s*│\s*0\s*│\s*-", result.output), (
        result.output
    )
