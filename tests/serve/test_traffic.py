"""Traffic as data: blends logged as MixInstruct records, feedback as pairs and ratings, all read back
by llmblend's own readers (and by ``llmblend train pool`` / the ranker's pair loader)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.mixinstruct import read_mixinstruct
from llmblend.data.preferences import read_preferences
from llmblend.rank.pool import PoolModel
from llmblend.serve.traffic import (
    FUSED_MODEL,
    FeedbackLog,
    TrafficLog,
    blend_record,
    feedback_pairs,
    rotated_paths,
)
from llmblend.train.pairs import PREFERENCE_TASK, load_pairs
from llmblend.train.pool import JudgedData, PoolSettings, fit_pool_from
from llmblend.types import BlendCandidate, Message

MODELS = ("alpha", "beta", "gamma")


def candidates(
    scores: tuple[float, ...] = (0.9, 0.1, -0.5), *, failed: str | None = None
) -> list[BlendCandidate]:
    """One answered candidate per model of MODELS (ranked by ``scores``), plus a failed one."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    out = [
        BlendCandidate(
            m, "top_p_sampling", f"{m} répond : {'x' * (10 + 7 * i)}", score=s, rank=order.index(i) + 1
        )
        for i, (m, s) in enumerate(zip(MODELS, scores, strict=True))
    ]
    if failed is not None:
        out.insert(1, BlendCandidate(failed, "greedy", "", error="HTTP 503 from upstream"))
    return out


def record(completion_id: str = "chatcmpl-1", **kw) -> dict:
    cands = kw.pop("cands", None) or candidates(failed="delta")
    prompt = kw.pop("prompt", [Message("system", "Be brief."), Message("user", "Ça va ?")])
    top = min((c for c in cands if c.ok), key=lambda c: c.rank)
    settings = {"answer": top.text, "returned": "top", "profile": "blend", "created": 1_700_000_000} | kw
    return blend_record(completion_id, prompt, cands, **settings)


# ---------------------------------------------------------------- records


def test_logged_blends_read_back_as_mixinstruct_examples(tmp_path: Path) -> None:
    log = TrafficLog(tmp_path / "traffic" / "blends.jsonl")
    log.append(record("chatcmpl-1"))
    log.append(record("chatcmpl-2", prompt="Plain text?", answer="fused words", returned="fused"))
    assert "répond" in log.path.read_text(encoding="utf-8")  # UTF-8 as is, not \u escapes

    first, second = read_mixinstruct(log.path)
    assert first.id == "chatcmpl-1"
    assert first.instruction == [Message("system", "Be brief."), Message("user", "Ça va ?")]
    assert first.models == list(MODELS)  # the failed candidate is not a candidate
    assert [c.scores for c in first.candidates] == [{"ranker": 0.9}, {"ranker": 0.1}, {"ranker": -0.5}]
    assert {c.decoding_method for c in first.candidates} == {"top_p_sampling"}
    assert first.candidates[0].text.startswith("alpha répond")
    extra = first.extra
    assert extra["llmblend_answer"] == first.candidates[0].text and extra["llmblend_returned"] == "top"
    assert extra["llmblend_answer_model"] == "alpha"
    assert extra["llmblend_profile"] == "blend" and extra["llmblend_created"] == 1_700_000_000
    assert extra["llmblend_indices"] == [0, 2, 3]
    assert extra["llmblend_failed"] == [
        {"index": 1, "model": "delta", "decoding_method": "greedy", "error": "HTTP 503 from upstream"}
    ]
    assert second.instruction == "Plain text?" and second.extra["llmblend_answer_model"] is None
    assert second.extra["llmblend_failed"] == extra["llmblend_failed"]


def test_an_unranked_candidate_has_no_ranker_score() -> None:
    only = [BlendCandidate("alpha", "greedy", "hello"), BlendCandidate("beta", "greedy", "", error="down")]
    rec = blend_record("c", "hi", only, answer="hello", returned="only candidate", profile="blend")
    assert rec["candidates"] == [
        {"decoding_method": "greedy", "model": "alpha", "text": "hello", "scores": {}}
    ]
    assert rec["llmblend_answer_model"] == "alpha" and isinstance(rec["llmblend_created"], float)


def test_a_blend_without_any_answer_is_refused_rather_than_logged_unreadable() -> None:
    failed = [BlendCandidate("alpha", "greedy", "", error="down")]
    with pytest.raises(ValueError, match="candidates: empty"):
        blend_record("c", "hi", failed, answer="", returned="none", profile="blend")
    with pytest.raises(ValueError, match="instruction"):
        blend_record("c", [], candidates(), answer="x", returned="top", profile="blend")


# ---------------------------------------------------------------- rotation and concurrency


def test_eight_threads_never_split_a_line_and_rotation_loses_none(tmp_path: Path) -> None:
    log = TrafficLog(tmp_path / "blends.jsonl", max_bytes=16_000, backups=100)
    per_thread, threads = 60, 8

    def writer(t: int) -> None:
        for n in range(per_thread):
            log.append(record(f"chatcmpl-{t}-{n}", answer="é" * (n * 13 % 200)))

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    files = log.files
    assert len(files) > 5 and files[0] == log.path  # it rotated, several times
    assert all(p.stat().st_size <= 16_000 for p in files)
    oldest_first = [json.loads(line) for p in reversed(files) for line in p.read_text("utf-8").splitlines()]
    ids = [r["id"] for r in oldest_first]
    assert len(ids) == threads * per_thread and len(set(ids)) == len(ids)
    for t in range(threads):  # each thread's records appear in the order it wrote them, across files
        mine = [int(i.rsplit("-", 1)[1]) for i in ids if i.startswith(f"chatcmpl-{t}-")]
        assert mine == list(range(per_thread))
    for path in files:
        assert len(list(read_mixinstruct(path))) == len(path.read_text("utf-8").splitlines())


def test_rotation_keeps_backups_old_files_and_drops_the_oldest(tmp_path: Path) -> None:
    log = TrafficLog(tmp_path / "blends.jsonl", max_bytes=4096, backups=2)
    for n in range(60):
        log.append(record(f"chatcmpl-{n}"))
    assert log.files == [log.path, *rotated_paths(log.path, 2)]
    assert not Path(f"{log.path}.3").exists()
    kept = [json.loads(line)["id"] for p in reversed(log.files) for line in p.read_text().splitlines()]
    assert kept == [f"chatcmpl-{n}" for n in range(60 - len(kept), 60)]  # the newest, contiguous
    assert 3 <= len(kept) < 60


def test_without_backups_a_full_file_starts_over(tmp_path: Path) -> None:
    log = TrafficLog(tmp_path / "blends.jsonl", max_bytes=4096, backups=0)
    for n in range(30):
        log.append(record(f"chatcmpl-{n}"))
    assert log.files == [log.path]
    assert json.loads(log.path.read_text().splitlines()[-1])["id"] == "chatcmpl-29"


def test_a_record_larger_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    log = TrafficLog(tmp_path / "blends.jsonl", max_bytes=100, backups=3)
    log.append(record("chatcmpl-1"))
    log.append(record("chatcmpl-2"))
    assert [len(p.read_text().splitlines()) for p in log.files] == [1, 1]


# ---------------------------------------------------------------- lookup


def test_lookup_finds_recent_and_rotated_blends(tmp_path: Path) -> None:
    path = tmp_path / "blends.jsonl"
    log = TrafficLog(path, max_bytes=4096, backups=2, index_size=3)
    for n in range(40):
        log.append(record(f"chatcmpl-{n}"))
    assert len(log.files) == 3
    recent = log.lookup("chatcmpl-39")
    assert recent == json.loads(path.read_text().splitlines()[-1])
    recent["id"] = "changed"  # a fresh dict each time
    assert log.lookup("chatcmpl-39")["id"] == "chatcmpl-39"
    in_rotated = json.loads(log.files[-1].read_text().splitlines()[0])["id"]
    assert log.lookup(in_rotated)["id"] == in_rotated  # past the in-memory index: scanned
    reopened = TrafficLog(path, max_bytes=4096, backups=2)  # a restarted gateway: empty index
    assert reopened.lookup("chatcmpl-39")["candidates"] == recent["candidates"]
    assert reopened.lookup(in_rotated)["id"] == in_rotated
    assert reopened.lookup("chatcmpl-1") is None  # rotated away
    assert reopened.lookup("chatcmpl-nope") is None


def test_async_append_and_lookup(tmp_path: Path) -> None:
    log = TrafficLog(tmp_path / "blends.jsonl")

    async def main() -> dict | None:
        await asyncio.gather(*(log.aappend(record(f"chatcmpl-{n}")) for n in range(10)))
        return await log.alookup("chatcmpl-7")

    assert asyncio.run(main())["id"] == "chatcmpl-7"
    assert len(log.path.read_text().splitlines()) == 10


# ---------------------------------------------------------------- feedback


def test_a_preference_writes_one_pair_per_other_candidate(tmp_path: Path) -> None:
    feedback = FeedbackLog(tmp_path / "fb" / "feedback.jsonl")
    logged = record("chatcmpl-9")  # blend indices 0, 2, 3 answered; 1 failed
    assert feedback.add_preference(logged, 2) == 2  # beta, by the index the blend gave it
    assert feedback.add_preference(logged, "gamma") == 2
    pairs = list(read_preferences(feedback.path))
    assert [(p.chosen_model, p.rejected_model) for p in pairs] == [
        ("beta", "alpha"), ("beta", "gamma"), ("gamma", "alpha"), ("gamma", "beta"),
    ]  # fmt: skip
    texts = {c["model"]: c["text"] for c in logged["candidates"]}
    assert all(p.chosen == texts[p.chosen_model] and p.rejected == texts[p.rejected_model] for p in pairs)
    assert {p.source for p in pairs} == {"feedback"} and {p.example_id for p in pairs} == {"chatcmpl-9"}
    assert pairs[0].prompt == [Message("system", "Be brief."), Message("user", "Ça va ?")]


def test_a_candidate_identical_to_the_preferred_one_gives_no_pair() -> None:
    cands = candidates()
    cands[2].text = cands[0].text
    assert len(feedback_pairs(record(cands=cands), "alpha")) == 1


@pytest.mark.parametrize(
    ("preferred", "says"),
    [
        (7, r"no candidate 7; choose an index in \[0, 2, 3\] or a model in \['alpha', 'beta', 'gamma'\]"),
        (1, r"candidate 1 \(delta\) of blend 'chatcmpl-1' failed \(HTTP 503 from upstream\)"),
        ("omega", r"no candidate from model 'omega'; choose an index in \[0, 2, 3\]"),
        (True, r"preferred True is neither"),
    ],
)
def test_a_bad_choice_names_the_value_and_the_choices(tmp_path: Path, preferred, says: str) -> None:
    feedback = FeedbackLog(tmp_path / "feedback.jsonl")
    with pytest.raises(ValueError, match=says):
        feedback.add_preference(record(), preferred)
    assert not feedback.path.exists() or feedback.path.read_text() == ""


def test_an_ambiguous_model_asks_for_an_index() -> None:
    cands = [*candidates(), BlendCandidate("alpha", "greedy", "another alpha", score=0.0, rank=4)]
    with pytest.raises(ValueError, match=r"model 'alpha' wrote 2 candidates .* by index, \[0, 3\]"):
        feedback_pairs(record(cands=cands), "alpha")


def test_ratings_go_to_a_sibling_mixinstruct_file(tmp_path: Path) -> None:
    feedback = FeedbackLog(tmp_path / "feedback.jsonl")
    feedback.add_rating(record("chatcmpl-1"), 0.75)
    feedback.add_rating(record("chatcmpl-1"), 1)  # rated twice: two records with distinct ids
    feedback.add_rating(record("chatcmpl-2", answer="fused words", returned="fused"), 0.0)
    assert feedback.ratings_path == tmp_path / "ratings.jsonl" and not feedback.path.exists()
    first, again, fused = read_mixinstruct(feedback.ratings_path)
    assert first.id != again.id and first.extra["llmblend_completion_id"] == "chatcmpl-1"
    (answer,) = first.candidates
    assert (answer.model, answer.decoding_method, answer.scores) == (
        "alpha",
        "top_p_sampling",
        {"user_rating": 0.75},
    )
    assert again.candidates[0].scores == {"user_rating": 1.0}
    assert (fused.candidates[0].model, fused.candidates[0].text) == (FUSED_MODEL, "fused words")
    for bad in (1.5, -0.1, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="not a number in \\[0, 1\\]"):
            feedback.add_rating(record(), bad)
    with pytest.raises(ValueError, match="also the ratings file"):
        FeedbackLog(tmp_path / "ratings.jsonl")


def test_feedback_on_a_record_that_is_not_a_blend_says_why(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a MixInstruct record of a blend: candidates"):
        FeedbackLog(tmp_path / "f.jsonl").add_preference({"id": "x", "instruction": "hi"}, 0)


# ---------------------------------------------------------------- the training readers take it


#: Every order of the three models, twice: the ranker's scores favour no model overall.
ORDERS = list(itertools.permutations(range(3))) * 2


@pytest.fixture
def logged_feedback(tmp_path: Path) -> tuple[Path, Path]:
    """12 logged blends of alpha, beta, gamma; users prefer alpha 8 times, beta 4, gamma never."""
    traffic = TrafficLog(tmp_path / "blends.jsonl")
    feedback = FeedbackLog(tmp_path / "feedback.jsonl")
    for n, order in enumerate(ORDERS):
        scores = tuple(float(2 - order.index(i)) for i in range(3))
        traffic.append(record(f"chatcmpl-{n}", cands=candidates(scores), prompt=f"question {n}?"))
    for n in range(len(ORDERS)):
        logged = traffic.lookup(f"chatcmpl-{n}")
        assert feedback.add_preference(logged, "alpha" if n < 8 else "beta") == 2
    return traffic.path, feedback.path


def test_feedback_pairs_fit_the_pool_in_the_order_users_preferred(logged_feedback) -> None:
    _, feedback = logged_feedback
    pool = fit_pool_from(JudgedData.read([feedback]), PoolSettings(oracle=None))  # what the CLI fits first
    assert pool.fitted_on["pairs"] == 24
    assert sorted(pool.strengths, key=pool.strengths.get, reverse=True) == ["alpha", "beta", "gamma"]


def test_llmblend_train_pool_takes_the_feedback_with_the_traffic_log(logged_feedback, tmp_path: Path) -> None:
    traffic, feedback = logged_feedback
    out = tmp_path / "pool.json"
    args = ["train", "pool", feedback, traffic, "--oracle", "ranker", "--terms", "pool,length,rel_length"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--out", out]])
    assert result.exit_code == 0, result.output
    pool = PoolModel.load(out)
    assert pool.fitted_on["pairs"] == 24 and pool.fitted_on["examples"] == len(ORDERS)
    # the ranker's scores are balanced across the blends, so the users' preferences set the order
    assert sorted(pool.strengths, key=pool.strengths.get, reverse=True) == ["alpha", "beta", "gamma"]


def test_the_ranker_training_reader_takes_the_feedback(logged_feedback) -> None:
    traffic, feedback = logged_feedback
    pair_set = load_pairs(feedback)
    assert pair_set.task_names == (PREFERENCE_TASK,) and len(pair_set.pairs) == 24
    by_id = {ex.id: ex for ex in read_mixinstruct(traffic)}
    first = pair_set.pairs[0]
    assert first.labels == (1,) and first.query.source == "question 0?"
    assert first.query.first == by_id["chatcmpl-0"].candidate("alpha").text


def test_llmblend_train_pool_takes_the_feedback_alone_and_ranks_by_strength(
    logged_feedback, tmp_path
) -> None:
    from llmblend.rank.pool_ranker import PoolRanker
    from llmblend.types import Candidate, Example

    _, feedback = logged_feedback
    out = tmp_path / "pool.json"
    result = CliRunner().invoke(app, ["train", "pool", str(feedback), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "strengths alone" in result.output
    ranker = PoolRanker(PoolModel.load(out), lambda: pytest.fail("no PairRanker is needed"))
    example = Example(
        "q", "Which metal?", candidates=[Candidate(m, f"{m} says tin.") for m in ("gamma", "alpha", "beta")]
    )
    (ranking,) = ranker.rank([example])
    assert [example.candidates[i].model for i in ranking.order] == ["alpha", "beta", "gamma"]
    refused = CliRunner().invoke(
        app, ["train", "pool", str(feedback), "--terms", "pool,length", "--out", str(out)]
    )
    assert refused.exit_code != 0 and "--oracle" in refused.output
