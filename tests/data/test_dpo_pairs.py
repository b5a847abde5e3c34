"""DPO preference pairs from ranked or oracle-scored files: modes, margins, ties, provenance, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.dpo_pairs import PairsConfig, iter_dpo_pairs, write_dpo_pairs
from llmblend.data.preferences import read_preferences
from llmblend.errors import DataFormatError


def candidate(model: str, text: str, **scores: float) -> dict[str, Any]:
    return {"decoding_method": f"{model}-sampling", "model": model, "text": text, "scores": scores}


def record(
    id: str,
    scores: list[float | None] | None,
    *,
    instruction: Any = "Say something.",
    texts: list[str] | None = None,
    error: str | None = None,
    oracle: list[float] | None = None,
) -> dict[str, Any]:
    """A ranked record with one candidate per score (model m0, m1, ...)."""
    n = len(texts or scores or oracle or [])
    texts = texts or [f"answer {i} to {id}" for i in range(n)]
    candidates = [
        candidate(f"m{i}", texts[i], **({"gpt4_win": oracle[i]} if oracle else {})) for i in range(n)
    ]
    out: dict[str, Any] = {"id": id, "instruction": instruction, "input": "", "candidates": candidates}
    if scores is not None or error is not None:
        out["ranking"] = {
            "ranker": "pairranker",
            "strategy": "full",
            "order": [],
            "scores": [] if error else scores,
            "n_forward": 12,
            "error": error,
        }
    return out


def write(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def pairs_of(path: Path, **config: Any) -> list[tuple[str, str, float]]:
    """(chosen model, rejected model, margin) of each pair."""
    return [
        (p.pair.chosen_model, p.pair.rejected_model, p.pair.margin)  # type: ignore[misc]
        for p in iter_dpo_pairs(path, PairsConfig(**config))
    ]


@pytest.fixture
def ranked(tmp_path: Path) -> Path:
    """One example of four candidates; m1 and m3 tie for best (m1 has the lower index)."""
    return write(tmp_path / "ranked.jsonl", [record("ex/1", [0.2, 0.9, 0.5, 0.9])])


def test_each_mode_pairs_the_score_order_ties_by_index(ranked: Path) -> None:
    assert pairs_of(ranked, mode="best-worst") == [("m1", "m0", 0.7)]
    assert pairs_of(ranked, mode="top-vs-rest") == [("m1", "m3", 0.0), ("m1", "m2", 0.4), ("m1", "m0", 0.7)]
    assert pairs_of(ranked, mode="all") == [
        ("m1", "m3", 0.0),
        ("m1", "m2", 0.4),
        ("m1", "m0", 0.7),
        ("m3", "m2", 0.4),
        ("m3", "m0", 0.7),
        ("m2", "m0", 0.3),
    ]


def test_min_margin_and_identical_texts_drop_pairs(tmp_path: Path, ranked: Path) -> None:
    assert pairs_of(ranked, mode="all", min_margin=0.4) == [
        ("m1", "m2", 0.4),
        ("m1", "m0", 0.7),
        ("m3", "m2", 0.4),
        ("m3", "m0", 0.7),
    ]
    same = write(tmp_path / "same.jsonl", [record("ex/2", [0.9, 0.1, 0.6], texts=["x", "x", "y"])])
    out = tmp_path / "pairs.jsonl"
    summary = write_dpo_pairs(same, out, PairsConfig(mode="all", min_margin=0.45))
    assert (summary.pairs, dict(summary.dropped)) == (1, {"identical text": 1, "margin below 0.45": 1})
    assert summary.line() == (
        "1 examples read, 0 skipped; 1 pairs written; dropped: identical text: 1, margin below 0.45: 1"
    )


def test_by_an_oracle_score(tmp_path: Path) -> None:
    path = write(tmp_path / "oracle.jsonl", [record("ex/3", [0.9, 0.1, 0.5], oracle=[0.1, 0.8, 0.3])])
    assert pairs_of(path, mode="top-vs-rest", by="gpt4_win") == [("m1", "m2", 0.5), ("m1", "m0", 0.7)]
    (pair,) = iter_dpo_pairs(path, PairsConfig(by="gpt4_win"))
    assert (pair.ranker, pair.chosen_score, pair.rejected_score) == ("oracle:gpt4_win", 0.8, 0.1)


def test_records_carry_provenance_and_read_back(tmp_path: Path, ranked: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    write_dpo_pairs(ranked, out, PairsConfig(mode="best-worst"))
    (line,) = out.read_text().splitlines()
    assert json.loads(line) == {
        "prompt": "Say something.",
        "chosen": "answer 1 to ex/1",
        "rejected": "answer 0 to ex/1",
        "source": "ranked",
        "example_id": "ex/1",
        "chosen_model": "m1",
        "rejected_model": "m0",
        "margin": 0.7,
        "chosen_decoding_method": "m1-sampling",
        "rejected_decoding_method": "m0-sampling",
        "chosen_score": 0.9,
        "rejected_score": 0.2,
        "ranker": "pairranker",
    }
    (pair,) = read_preferences(out)
    assert (pair.chosen, pair.rejected, pair.margin) == ("answer 1 to ex/1", "answer 0 to ex/1", 0.7)


def test_a_conversation_gives_the_conversational_form(tmp_path: Path) -> None:
    turns = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    path = write(tmp_path / "chat.jsonl", [record("chat/1", [0.1, 0.6], instruction=turns)])
    out = tmp_path / "pairs.jsonl"
    write_dpo_pairs(path, out, PairsConfig())
    written = json.loads(out.read_text())
    assert written["prompt"] == turns
    assert written["chosen"] == [{"role": "assistant", "content": "answer 1 to chat/1"}]
    assert written["rejected"] == [{"role": "assistant", "content": "answer 0 to chat/1"}]
    (pair,) = read_preferences(out)  # TRL's conversational form reads back
    assert pair.chosen == "answer 1 to chat/1"


def test_trl_reads_the_forms_it_expects(tmp_path: Path, ranked: Path) -> None:
    data_utils = pytest.importorskip("trl.data_utils")
    turns = [{"role": "user", "content": "Hi."}]
    chat = write(tmp_path / "chat.jsonl", [record("chat/1", [0.1, 0.6], instruction=turns)])
    for path, conversational in ((chat, True), (ranked, False)):
        out = tmp_path / f"{path.stem}.pairs.jsonl"
        write_dpo_pairs(path, out, PairsConfig())
        assert data_utils.is_conversational(json.loads(out.read_text())) is conversational


def test_unusable_records_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mixed.jsonl",
        [
            record("ok", [0.1, 0.6]),
            record("unranked", None, texts=["a", "b"]),
            record("failed", None, texts=["a", "b"], error="model crashed"),
            record("lonely", [0.5, None]),
            record("nan", [float("nan"), 0.3, 0.1]),
            record("ok2", [0.7, 0.2]),
        ],
    )
    out = tmp_path / "pairs.jsonl"
    summary = write_dpo_pairs(path, out, PairsConfig())
    assert summary.examples == 6 and summary.pairs == 3
    assert dict(summary.skipped) == {"no ranking": 1, "ranking error": 1, "fewer than 2 scored candidates": 1}
    assert "3 skipped (fewer than 2 scored candidates: 1, no ranking: 1, ranking error: 1)" in summary.line()
    assert [json.loads(line)["chosen_model"] for line in out.read_text().splitlines()] == ["m1", "m1", "m0"]
    assert write_dpo_pairs(path, out, PairsConfig(limit=2)).examples == 2
    lacking = write(tmp_path / "lacking.jsonl", [record("x", None, oracle=[0.1, 0.2])])
    lacking_record = json.loads(lacking.read_text())
    del lacking_record["candidates"][1]["scores"]["gpt4_win"]
    write(lacking, [lacking_record])
    summary = write_dpo_pairs(lacking, out, PairsConfig(by="gpt4_win"))
    assert dict(summary.skipped) == {"a candidate lacks score gpt4_win": 1}


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", [record("ok", [0.1, 0.6]), record("short", [0.1], texts=["a", "b"])])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: ranking\.scores: has 1 score\(s\) for 2"):
        list(iter_dpo_pairs(path, PairsConfig()))
    (tmp_path / "broken.jsonl").write_text(json.dumps(record("ok", [0.1, 0.6])) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"broken\.jsonl:2: not valid JSON"):
        list(iter_dpo_pairs(tmp_path / "broken.jsonl", PairsConfig()))
    with pytest.raises(ValueError, match="unknown pair mode 'best'"):
        PairsConfig(mode="best")


def test_the_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    records = [record(f"ex/{k}", [0.3 * k % 1, 0.5, 0.5, 0.1 * k]) for k in range(6)]
    path = write(tmp_path / "ranked.jsonl", records)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_dpo_pairs(path, first, PairsConfig(mode="all"))
    write_dpo_pairs(path, second, PairsConfig(mode="all"))
    assert first.read_bytes() == second.read_bytes() and first.stat().st_size > 0


def test_cli_pairs(tmp_path: Path, ranked: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    args = ["data", "pairs", str(ranked), "--out", str(out), "--mode", "top-vs-rest", "--min-margin", "0.1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 examples read, 0 skipped; 2 pairs written; dropped: margin below 0.1: 1" in result.output
    assert len(out.read_text().splitlines()) == 2
    bad = write(tmp_path / "bad.jsonl", [record("short", [0.1], texts=["a", "b"])])
    failed = CliRunner().invoke(app, ["data", "pairs", str(bad), "--out", str(out)])
    assert failed.exit_code == 2 and "bad.jsonl:1" in failed.output
