"""``llmblend train pool --judge``: strengths from an LLM judge's cached verdicts, asking nothing.

The judge is a real :class:`~llmblend.rank.judge_ranker.JudgeRanker` over the scripted HTTP server,
filled by a real ``llmblend rank -r judge:`` run; the server prefers the better answer by its text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.mixinstruct import write_mixinstruct
from llmblend.rank.pool import PoolModel, comparisons_from_judged_pairs
from llmblend.types import Candidate, Example

runner = CliRunner()
QUALITY = {"excellent": 3, "decent": 2, "poor": 1}


def judge_reply(prompt: str) -> str:
    """MT-bench's verdict for the answer whose quality word comes first in the prompt (A) or second."""
    first, second = re.findall("|".join(QUALITY), prompt)[-2:]  # the two answers come last
    return "[[A]]" if QUALITY[first] > QUALITY[second] else "[[B]]"


def write_files(tmp_path: Path, base_url: str, *, cache: bool = True) -> tuple[Path, Path]:
    judge = {"prompt": "mt-bench", "soft": False, "strategy": "full", "max_reply_tokens": 8}
    if cache:
        judge["cache"] = "judge.jsonl"
    config = tmp_path / "judge.yaml"
    backend = {"name": "judge", "model": "judge", "base_url": base_url, "max_retries": 0}
    config.write_text(yaml.safe_dump({"backends": [backend], "judge": judge}), encoding="utf-8")
    # the strong model answers well, the weak one poorly; "mid" in between
    answers = {"strong": "an excellent answer", "mid": "a decent answer", "weak": "a poor answer"}
    examples = [
        Example(f"q/{i}", f"question {i}", candidates=[Candidate(m, f"{t} {i}") for m, t in answers.items()])
        for i in range(4)
    ]
    data = tmp_path / "candidates.jsonl"
    write_mixinstruct(examples, data)
    return config, data


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def test_train_pool_reads_the_judges_cache_and_asks_nothing(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url)
    scripted_server.script([("reply", judge_reply)] * 24)  # 4 examples x 3 pairs x 2 orders
    result = invoke("rank", data, "-r", f"judge:{config}", "--out", tmp_path / "ranked.jsonl")
    assert result.exit_code == 0, result.output
    asked = len(scripted_server.requests)
    assert asked == 24 and (tmp_path / "judge.jsonl").is_file()

    pool_file = tmp_path / "pool.json"
    result = invoke("train", "pool", data, "--judge", config, "--out", pool_file)
    assert result.exit_code == 0, result.output
    assert "12 from the judge's cache" in result.output
    assert len(scripted_server.requests) == asked  # read from the cache only
    pool = PoolModel.load(pool_file)
    assert pool.strengths["strong"] > pool.strengths["mid"] > pool.strengths["weak"]
    assert pool.fitted_on["judged_pairs"] == 12

    ranked = tmp_path / "pool-ranked.jsonl"
    result = invoke("rank", data, "--pool", pool_file, "--out", ranked)
    assert result.exit_code == 0, result.output
    for line in ranked.read_text().splitlines():
        record = json.loads(line)
        assert record["candidates"][record["ranking"]["order"][0]]["model"] == "strong"


def test_judged_pairs_average_both_orders_and_skip_what_is_unknown() -> None:
    example = Example("e", "q", candidates=[Candidate("a", "x"), Candidate("b", "y"), Candidate("c", "z")])
    table = {("x", "y"): 1.0, ("y", "x"): 1.0, ("x", "z"): 0.6}  # a/b flips with the order: a tie

    def known(queries):
        return np.array([table.get((q.first, q.second), np.nan) for q in queries])

    comparisons = comparisons_from_judged_pairs([example], known)
    assert [(c.model_a, c.model_b, c.outcome) for c in comparisons] == [("a", "b", 0.5), ("a", "c", 0.8)]


def test_a_judge_without_a_cache_or_an_empty_one_is_a_clear_error(scripted_server, tmp_path: Path) -> None:
    config, data = write_files(tmp_path, scripted_server.base_url, cache=False)
    result = invoke("train", "pool", data, "--judge", config, "--out", tmp_path / "p.json")
    assert result.exit_code == 2 and "names no cache" in result.output
    config, data = write_files(tmp_path, scripted_server.base_url)
    result = invoke("train", "pool", data, "--judge", config, "--out", tmp_path / "p.json")
    assert result.exit_code == 2 and "does not exist yet" in result.output
    assert not scripted_server.requests and not (tmp_path / "p.json").exists()


def test_known_scores_are_asked_once_per_distinct_pair() -> None:
    from llmblend.rank.base import PairQuery
    from llmblend.train.pool import remembered

    asked = []

    def known(queries):
        asked.extend(queries)
        return np.arange(len(queries), dtype=float)

    lookup = remembered(known)
    x, y = PairQuery("q", "x", "y"), PairQuery("q", "y", "x")
    first = lookup([x, y, x])
    again = lookup([y, x])
    assert asked == [x, y] and first.tolist() == [0.0, 1.0, 0.0] and again.tolist() == [1.0, 0.0]
