"""Every converter on the real shared data, with its counts checked."""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

import pytest

from llmblend.data.sources import alpaca_eval, fastchat, hh_rlhf, hhh, vicuna80
from llmblend.errors import DataFormatError
from llmblend.types import Message


def test_alpaca_eval_scores_are_preference_minus_one(data_dir: Path) -> None:
    oracle = alpaca_eval.read_oracle_scores(data_dir)
    assert len(oracle) == 57 and "NullModel" not in oracle
    assert all(0.0 <= p <= 1.0 for by_id in oracle.values() for p in by_id.values())
    assert set(oracle["gpt4_1106_preview"].values()) == {0.5}  # the baseline against itself
    with lzma.open(data_dir / alpaca_eval.ANNOTATIONS, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["annotator"] == alpaca_eval.ORACLE_ANNOTATOR and record["generator_2"] == "alpaca-7b":
                assert oracle["alpaca-7b"][record["id"]] == pytest.approx(record["preference"] - 1)
                break


@pytest.mark.slow
def test_alpaca_eval_examples(data_dir: Path) -> None:
    examples = list(alpaca_eval.alpaca_eval_examples(data_dir, ["alpaca-7b", "phi-2"]))
    assert len(examples) == 600
    # phi-2 has no output on two instructions: those candidates are left out, nothing else
    assert sum(len(e.candidates) for e in examples) == 1198
    first = examples[0]
    assert first.id == "helpful_base/0"
    assert first.instruction.startswith("What are the names of some famous actors")
    rows = {r.index: r for r in alpaca_eval.iter_rows(data_dir, ["gpt4_1106_preview", "alpaca-7b"])}
    assert first.output == rows[0].outputs["gpt4_1106_preview"]
    assert first.candidate("alpaca-7b").text == rows[0].outputs["alpaca-7b"]
    assert set(first.candidate("alpaca-7b").scores) == {"gpt4_win"}


def test_alpaca_eval_refuses_null_model(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="NullModel"):
        next(alpaca_eval.alpaca_eval_examples(data_dir, ["alpaca-7b", "NullModel"]))


def test_alpaca_eval_names_unknown_models(data_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"no outputs of \['alpaca-8b'\]; choose from .*alpaca-7b"):
        next(alpaca_eval.alpaca_eval_examples(data_dir, ["alpaca-8b"]))


def test_mt_bench(data_dir: Path) -> None:
    examples = fastchat.mt_bench_examples(data_dir)
    assert len(examples) == 80
    assert all(len(e.candidates) == 32 for e in examples)
    assert sum(e.output is not None for e in examples) == 30  # GPT-4 references exist for 30
    assert not any(c.scores for e in examples for c in e.candidates)  # MT-bench ships no judgements
    first = examples[0]
    assert first.id == "mt_bench/81" and first.instruction.startswith("Compose an engaging travel blog")
    assert "vicuna-33b-v1.3" in first.models  # file stem, not the file's internal model_id


def test_arena_bench_scores_map_to_answer_files(data_dir: Path) -> None:
    examples = fastchat.arena_bench_examples(data_dir)
    assert len(examples) == 300 and all(len(e.candidates) == 17 for e in examples)
    assert all(e.output for e in examples)
    scored = {c.model for e in examples for c in e.candidates if c.scores}
    assert len(scored) == 15 and "Mistral-7B-Instruct-v0.1" in scored and "gpt-4-1106-preview" in scored
    assert sum(len(c.scores) for e in examples for c in e.candidates) == 4461  # 4500 minus unparsed
    values = [c.scores["gpt4_score"] for e in examples for c in e.candidates if c.scores]
    assert min(values) >= 1 and max(values) <= 10


def test_lima_test(data_dir: Path) -> None:
    examples = fastchat.lima_test_examples(data_dir)
    assert len(examples) == 300 and all(len(e.candidates) == 4 for e in examples)
    assert sum(len(c.scores) for e in examples for c in e.candidates) == 900
    assert not examples[0].candidate("alpaca-13b").scores


def test_vicuna80_reviews_become_cmp_results(data_dir: Path) -> None:
    examples = vicuna80.vicuna80_examples(data_dir)
    assert len(examples) == 80 and all(len(e.candidates) == 8 for e in examples)
    assert all(len(e.cmp_results or {}) == 13 for e in examples)
    assert examples[0].cmp_results["bard,vicuna-7b-20230322-fp16"] == "A is better"  # scores [9.0, 8.5]
    assert vicuna80.verdict(9, 9) == "Same good" and vicuna80.verdict(3, 3) == "Same bad"


def test_hh_rlhf_pairs(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    pairs = list(hh_rlhf.hh_rlhf_pairs(data_dir / hh_rlhf.HARMLESS_TEST))
    assert len(pairs) == 2307  # of 2312 lines; 5 diverge before the last turn
    assert "skipped 5 pair(s)" in caplog.text
    multi = [p for p in pairs if isinstance(p.prompt, list)]
    assert len(multi) == 1646
    assert multi[0].prompt[0] == Message("user", "what are some pranks with a pen i can do?")
    assert multi[0].prompt[-1].role == "user"
    assert all("\n\nHuman:" not in p.chosen and "\n\nAssistant:" not in p.rejected for p in pairs)


def test_hh_transcript_parsing() -> None:
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ciao"
    assert [m.role for m in hh_rlhf.parse_transcript(text)] == ["user", "assistant", "user", "assistant"]
    with pytest.raises(ValueError, match="does not start"):
        hh_rlhf.parse_transcript("garbage\n\nHuman: hi")


def test_hh_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "hh.jsonl"
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"chosen": 1}) + "\n")
    with pytest.raises(DataFormatError, match=r"hh.jsonl:2: chosen/rejected: expected two transcript"):
        list(hh_rlhf.hh_rlhf_pairs(path))


def test_hhh_pairs(data_dir: Path) -> None:
    pairs = hhh.hhh_pairs(data_dir / hhh.HHH_FILE)
    assert len(pairs) == 221
    by_source = {s: sum(p.source == s for p in pairs) for s in {p.source for p in pairs}}
    assert by_source == {"hhh/honest": 61, "hhh/helpful": 59, "hhh/harmless": 58, "hhh/other": 43}
    assert pairs[0].prompt.startswith("Can you tell me what kind of knife")
    assert not any(re.search(r"###|Score Rubrics", p.chosen + p.rejected) for p in pairs)
    assert all(p.chosen != p.rejected for p in pairs)
