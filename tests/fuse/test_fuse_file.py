"""``fuse_file``: every example ranked (or its ranking reused), fused, guarded, written resumably."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from llmblend.blender import Blender
from llmblend.data.mixinstruct import load_mixinstruct, write_mixinstruct
from llmblend.eval.report import fused_in_file
from llmblend.fuse.base import Fused, FuseItem
from llmblend.fuse.fuse_file import fuse_file, ranking_from_record
from llmblend.fuse.guard import FusionGuard
from llmblend.rank.baselines import LongestRanker
from llmblend.types import Candidate, Example, Ranking


class CountingLongest(LongestRanker):
    def __init__(self) -> None:
        self.ranked: list[str] = []

    def rank(self, examples, *, strategy=None, top_k=None):
        self.ranked += [ex.id for ex in examples]
        return super().rank(examples, strategy=strategy, top_k=top_k)


class JoinFuser:
    """Joins the candidates; fails on instructions that contain "fail"."""

    name = "join"

    def __init__(self) -> None:
        self.items: list[FuseItem] = []

    def fuse(self, items: Sequence[FuseItem]) -> list[Fused]:
        self.items += items
        return [
            Fused("", self.name, error="boom")
            if "fail" in item.instruction
            else Fused(" | ".join(item.candidates), self.name)
            for item in items
        ]


class ParityComparer:
    """Margin +0.5 for even-numbered questions (the fused answer wins), -0.5 for odd ones."""

    def compare(self, instructions, a, b) -> np.ndarray:
        return np.array([0.5 if int(q.split()[-1]) % 2 == 0 else -0.5 for q in instructions])


def examples(n: int) -> list[Example]:
    out = []
    for i in range(n):
        texts = ["word " * (1 + (i + j) % 4) + f"m{j}" for j in range(4)]
        instruction = "please fail" if i == 3 else f"question {i}"
        out.append(
            Example(f"ex/{i}", instruction, candidates=[Candidate(f"m{j}", t) for j, t in enumerate(texts)])
        )
    out.append(Example("single", "one model", candidates=[Candidate("m0", "alone")]))
    return out


def make_blender() -> Blender:
    return Blender([], CountingLongest(), JoinFuser(), top_k=2, guard=FusionGuard(ParityComparer()))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    write_mixinstruct(examples(9), path)
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_example_gets_a_fused_field_and_a_ranking(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with make_blender() as blender:
        report = fuse_file(blender, source, out, chunk_size=4)
    records = read(out)
    assert [r["id"] for r in records] == [f"ex/{i}" for i in range(9)] + ["single"]
    assert (report.fused, report.already_done, report.only_candidate, report.fusion_errors) == (10, 0, 1, 1)
    # even questions 0 2 4 6 8 keep the fused answer; odd 1 5 7 lose it; 3 ("please fail") failed fusing
    assert (report.returned_fused, report.returned_top, report.failed) == (5, 4, 0)
    for record in records[:9]:
        fused, ranking = record["fused"], record["ranking"]
        lengths = [len(c["text"].split()) for c in record["candidates"]]
        assert lengths[ranking["order"][0]] == max(lengths) and ranking["ranker"] == "longest"
        assert fused["top_k"] == ranking["order"][:2] and fused["fuser"] == "join"
        top = record["candidates"][fused["top_k"][0]]["text"]
        if fused["returned"] == "fused":
            assert fused["text"] == fused["fused_text"] and fused["margin"] == 0.5
        else:
            assert fused["text"] == top and fused["margin"] in (-0.5, None)
    failed = records[3]["fused"]
    assert (failed["returned"], failed["error"], failed["margin"], failed["fused_text"]) == (
        "top",
        "boom",
        None,
        None,
    )
    assert records[-1]["fused"]["returned"] == "only candidate" and records[-1]["fused"]["text"] == "alone"
    # `llmblend eval report` reads the fusion (fused_text) and what the guard returned (text)
    methods = fused_in_file(load_mixinstruct(out))
    assert list(methods) == ["fused (join), no guard", "fused (join) + guard"]
    assert methods["fused (join) + guard"][-1] == "alone" and methods["fused (join), no guard"][-1] is None


def test_a_kill_mid_line_then_rerun_gives_the_same_bytes(source: Path, tmp_path: Path) -> None:
    whole_path = tmp_path / "whole.jsonl"
    with make_blender() as blender:
        fuse_file(blender, source, whole_path, chunk_size=3)
    whole = whole_path.read_text(encoding="utf-8")

    out = tmp_path / "out.jsonl"
    lines = whole.splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:50], encoding="utf-8")  # killed while writing line 6
    with make_blender() as blender:
        report = fuse_file(blender, source, out, chunk_size=3)
    assert (report.already_done, report.fused) == (5, 5)
    assert blender.ranker.ranked == [
        "ex/5",
        "ex/6",
        "ex/7",
        "ex/8",
    ]  # nothing done twice ("single": 1 candidate)
    assert out.read_text(encoding="utf-8") == whole
    with make_blender() as blender:
        again = fuse_file(blender, source, out)
    assert again.fused == 0 and out.read_text(encoding="utf-8") == whole


def test_a_ranking_field_is_reused_and_kept(tmp_path: Path) -> None:
    items = examples(3)[:3]
    items[0].extra["ranking"] = {
        "ranker": "gpt4",
        "order": [3, 2, 1, 0],
        "scores": [0, 1, 2, 3],
        "n_forward": 12,
    }
    items[1].extra["ranking"] = {"ranker": "x", "order": [], "scores": [], "error": "ranker crashed"}
    source = tmp_path / "ranked.jsonl"
    write_mixinstruct(items, source)
    with make_blender() as blender:
        fuse_file(blender, source, tmp_path / "out.jsonl", chunk_size=8)
    records = read(tmp_path / "out.jsonl")
    assert blender.ranker.ranked == ["ex/1", "ex/2"]  # ex/0's ranking was reused
    assert records[0]["ranking"]["ranker"] == "gpt4" and records[0]["fused"]["top_k"] == [3, 2]
    assert blender.fuser.items[0].candidates == (items[0].candidates[3].text, items[0].candidates[2].text)
    assert records[1]["ranking"]["error"] == "ranker crashed"  # the input record is kept as it was
    assert "not usable (it failed (ranker crashed)); ranked again" in records[1]["fused"]["notes"][0]


def test_ranking_from_record() -> None:
    assert ranking_from_record(None) is None
    assert ranking_from_record({"order": [1, 0], "scores": [0.5, 2]}) == Ranking((0.5, 2.0), (1, 0))
    assert not ranking_from_record({"order": "1,0"}).ok
    assert ranking_from_record({"order": [0], "error": "x"}).error == "x"


def test_a_ranker_fuser_pair_and_a_missing_fuser(source: Path, tmp_path: Path) -> None:
    report = fuse_file((LongestRanker(), JoinFuser()), source, tmp_path / "o.jsonl", limit=2)
    assert report.fused == 2 and report.returned_fused == 2  # no compare on LongestRanker: no guard
    with pytest.raises(ValueError, match="needs a fuser"):
        fuse_file(Blender([], LongestRanker()), source, tmp_path / "p.jsonl")
