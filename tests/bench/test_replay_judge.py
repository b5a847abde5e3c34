"""The replay judge (bench/replay_judge.py): the Vicuna-80 loader's counts and reference rankings, and
the HTTP judge answering the project's real judge prompts with GPT-4's recorded verdicts."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from llmblend.backends.base import GenerationParams, as_messages
from llmblend.backends.openai_http import OpenAIBackend
from llmblend.data.sources.vicuna80 import vicuna80_examples
from llmblend.eval.judge import TEMPLATES, JudgeItem, PairVerdict, PairwiseJudge
from replay_judge import (
    OTHER_TIE_LOGIT,
    ReplayData,
    ReplayJudge,
    ReplayQuestion,
    load_replay,
    reply_tokens,
    verdict_logprobs,
)

VICUNAS = ("vicuna-13b", "vicuna-13b-20230322-new-hp-fp16", "vicuna-7b-20230322-fp16")
OTHERS = ("alpaca-13b", "bard", "gpt35", "llama-13b")


@pytest.fixture(scope="module")
def data(data_dir: Path) -> ReplayData:
    return load_replay(data_dir)


@pytest.fixture(scope="module")
def judge(data: ReplayData) -> Iterator[ReplayJudge]:
    with ReplayJudge(data) as server:
        yield server


@pytest.fixture(scope="module")
def strict_judge(data: ReplayData) -> Iterator[ReplayJudge]:
    with ReplayJudge(data, recorded_only=True) as server:
        yield server


def raw_reviews(data_dir: Path, question_id: int) -> list[tuple[str, str, float, float]]:
    """(model of answer 1, model of answer 2, score 1, score 2) of a question's reviews, read directly."""
    folder = data_dir / "vicuna80"
    model_of = {}
    for path in (folder / "answer").glob("answer_*.jsonl"):
        model = path.name.removeprefix("answer_").removesuffix(".jsonl")
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            model_of[record["answer_id"]] = model
    found = []
    for path in (folder / "review").glob("*/review_*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["question_id"] == question_id:
                found.append((model_of[r["answer1_id"]], model_of[r["answer2_id"]], *map(float, r["score"])))
    return found


def body_for(
    question: ReplayQuestion, first: str, second: str, prompt: str = "mt-bench", **extra: object
) -> dict[str, object]:
    """A chat-completion body with the project's real judge prompt, ``first``'s answer shown as A."""
    item = JudgeItem(
        question.text,
        "",
        question.answers[question.index(first)],
        question.answers[question.index(second)],
        first,
        second,
    )
    messages = as_messages(TEMPLATES[prompt].build(item, item.answer_a, item.answer_b))
    return {"model": "judge", "messages": [{"role": m.role, "content": m.content} for m in messages], **extra}


def ask(server: ReplayJudge, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=10)


def reply_text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def first_pair(data: ReplayData, *, tie: bool, good: bool = True) -> tuple[ReplayQuestion, str, str]:
    """A recorded pair (in the review's order) with different scores, or equal ones (≥ 5 when ``good``)."""
    for q in data:
        for p in q.recorded_pairs():
            equal = p.score_a == p.score_b
            if equal == tie and (not tie or (p.score_a >= 5) == good):
                return q, p.model_a, p.model_b
    raise AssertionError("no such pair in the data")


# ---------------------------------------------------------------- the loader


def test_loader_counts(data: ReplayData) -> None:
    assert len(data) == 80
    assert [q.question_id for q in data] == list(range(1, 81))
    assert data.unreviewed_models == ("gpt-4",)
    assert set(data.models) == set(VICUNAS + OTHERS)
    expected = {frozenset((v, o)) for v in VICUNAS for o in OTHERS} | {frozenset(("llama-13b", "alpaca-13b"))}
    for q in data:
        assert len(q.models) == 7 and len(q.answers) == 7
        assert q.recorded_mask.sum() == 2 * 13  # 13 unordered pairs, both entries
        assert q.imputed_mask.sum() == 2 * 8  # the other 8 of the 21
        assert {frozenset((p.model_a, p.model_b)) for p in q.recorded_pairs()} == expected
        assert len(q.imputed_pairs()) == 8 and all(p.imputed for p in q.imputed_pairs())


def test_loader_scores_match_the_review_files(data: ReplayData, data_dir: Path) -> None:
    q = data.question(7)
    reviews = raw_reviews(data_dir, 7)
    assert len(reviews) == 13
    for first, second, s1, s2 in reviews:
        p = q.pair(first, second)
        assert (p.score_a, p.score_b, p.imputed, p.reviewed_first) == (s1, s2, False, first)
        flipped = q.pair(second, first)
        assert (flipped.score_a, flipped.score_b, flipped.reviewed_first) == (s2, s1, first)
    # an unrecorded pair is imputed from each answer's mean over the reviews it appears in
    mean = {m: np.mean([s1 if a == m else s2 for a, b, s1, s2 in reviews if m in (a, b)]) for m in q.models}
    imputed = q.pair("vicuna-13b", "vicuna-7b-20230322-fp16")
    assert imputed.imputed and imputed.review_id is None
    assert imputed.score_a == pytest.approx(mean["vicuna-13b"])
    assert imputed.score_b == pytest.approx(mean["vicuna-7b-20230322-fp16"])
    i, j = q.index("vicuna-13b"), q.index("vicuna-7b-20230322-fp16")
    assert q.margins(completed=True)[i, j] == pytest.approx(imputed.score_a - imputed.score_b)
    assert np.isnan(q.margins()[i, j])
    unrecorded = "no recorded GPT-4 review of vicuna-13b vs vicuna-7b-20230322-fp16 on question 7"
    with pytest.raises(LookupError, match=unrecorded):
        q.pair("vicuna-13b", "vicuna-7b-20230322-fp16", recorded_only=True)


def test_loader_agrees_with_the_vicuna80_source(data: ReplayData, data_dir: Path) -> None:
    """The project's own converter reads the same verdicts from the same reviews."""
    for example in vicuna80_examples(data_dir):
        ours = data.question(int(example.id.split("/")[1])).example()
        assert ours.id == example.id and ours.instruction == example.instruction
        assert ours.cmp_results == example.cmp_results
        assert {c.model: c.text for c in ours.candidates} == {
            c.model: c.text for c in example.candidates if c.model != "gpt-4"
        }


def test_reference_rankings(data: ReplayData) -> None:
    for q in data:
        recorded, completed = q.margins(), q.margins(completed=True)
        assert np.isnan(recorded).sum() == 7 + 16  # the diagonal and the unrecorded pairs
        off = ~np.eye(7, dtype=bool)
        assert not np.isnan(completed[off]).any()
        np.testing.assert_array_equal(completed[off], -completed.T[off])
        for flag in (False, True):
            scores = q.reference_scores(completed=flag)
            assert scores.shape == (7,) and abs(scores.sum()) < 1e-9
            ranking = q.reference_ranking(completed=flag)
            assert sorted(ranking) == sorted(q.models)
            in_order = [scores[q.index(m)] for m in ranking]
            np.testing.assert_allclose(in_order, sorted(scores, reverse=True), atol=1e-9)
    # question 1 by hand: bard's and gpt35's answers win 9 : 8.5 against every vicuna; alpaca's lose all
    q = data.question(1)
    assert q.reference_ranking()[:2] == ("bard", "gpt35") and q.reference_ranking()[-1] == "alpaca-13b"


# ---------------------------------------------------------------- the server


def test_recorded_winner_in_both_orders(data: ReplayData, judge: ReplayJudge) -> None:
    q = data.question(1)  # GPT-4's review: alpaca-13b 8, vicuna-13b 9 (alpaca shown first)
    p = q.pair("alpaca-13b", "vicuna-13b")
    assert (p.score_a, p.score_b, p.imputed, p.reviewed_first) == (8.0, 9.0, False, "alpaca-13b")
    forward = reply_text(ask(judge, body_for(q, "alpaca-13b", "vicuna-13b")))
    backward = reply_text(ask(judge, body_for(q, "vicuna-13b", "alpaca-13b")))
    assert forward.endswith("Assistant A scored 8 and Assistant B scored 9, so Assistant B is better. [[B]]")
    assert backward.endswith("Assistant A scored 9 and Assistant B scored 8, so Assistant A is better. [[A]]")
    assert reply_text(ask(judge, body_for(q, "alpaca-13b", "vicuna-13b", "gpt-rank"))) == "2. B is better"
    assert reply_text(ask(judge, body_for(q, "vicuna-13b", "alpaca-13b", "gpt-rank"))) == "1. A is better"


def test_equal_scores_are_a_tie(data: ReplayData, judge: ReplayJudge) -> None:
    q, a, b = first_pair(data, tie=True, good=True)
    for first, second in ((a, b), (b, a)):
        assert reply_text(ask(judge, body_for(q, first, second))).endswith("[[C]]")
        assert reply_text(ask(judge, body_for(q, first, second, "gpt-rank"))) == "3. Same good"
    q, a, b = first_pair(data, tie=True, good=False)  # e.g. question 68: llama-13b 1, alpaca-13b 1
    assert reply_text(ask(judge, body_for(q, b, a, "gpt-rank"))) == "4. Same bad"


def test_answers_are_matched_with_whitespace_stripped_whatever_the_question(
    data: ReplayData, judge: ReplayJudge
) -> None:
    q, a, b = first_pair(data, tie=False)
    item = JudgeItem(
        "a question in other words", "", f"\n  {q.answers[q.index(a)]}  \n", q.answers[q.index(b)], a, b
    )
    prompt = TEMPLATES["mt-bench"].build(item, item.answer_a, item.answer_b)
    messages = [{"role": m.role, "content": m.content} for m in as_messages(prompt)]
    before = len(judge.served)
    reply_text(ask(judge, {"messages": messages}))
    served = judge.served[before]
    assert (served.question_id, served.model_a, served.model_b, served.imputed) == (
        q.question_id,
        a,
        b,
        False,
    )


def test_unknown_answers_are_a_clear_400(data: ReplayData, judge: ReplayJudge) -> None:
    q = data.question(3)
    body = body_for(q, "bard", "gpt35")
    body["messages"][-1]["content"] = body["messages"][-1]["content"].replace(  # type: ignore[index]
        q.answers[q.index("gpt35")], "An answer nobody wrote."
    )
    errors = judge.errors
    response = ask(judge, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "answer_not_found"
    assert "answer shown as B is not a reviewed Vicuna-80 answer" in error["message"]
    assert "An answer nobody wrote." in error["message"]
    assert judge.errors == errors + 1
    # two real answers of different questions
    other = data.question(4)
    item = JudgeItem("q", "", q.answers[0], other.answers[1], "x", "y")
    messages = as_messages(TEMPLATES["gpt-rank"].build(item, item.answer_a, item.answer_b))
    response = ask(judge, {"messages": [{"role": m.role, "content": m.content} for m in messages]})
    assert response.status_code == 400
    assert "answer different questions" in response.json()["error"]["message"]
    assert "on question 3" in response.json()["error"]["message"]
    # not a judge prompt at all
    response = ask(judge, {"messages": [{"role": "user", "content": "hello"}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_a_judge_prompt"


def test_recorded_only_refuses_imputed_pairs(data: ReplayData, strict_judge: ReplayJudge) -> None:
    q = data.question(5)
    response = ask(strict_judge, body_for(q, "vicuna-13b", "vicuna-7b-20230322-fp16"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "pair_not_recorded"
    assert "no recorded GPT-4 review of vicuna-13b vs vicuna-7b-20230322-fp16 on question 5" in response.text
    assert reply_text(ask(strict_judge, body_for(q, "vicuna-13b", "bard", "gpt-rank")))  # recorded: answered
    with ReplayJudge(strict_judge.data, recorded_only=True, refusal_status=422) as other:
        response = ask(other, body_for(q, "vicuna-13b", "vicuna-7b-20230322-fp16"))
        assert response.status_code == 422 and response.json()["error"]["code"] == "pair_not_recorded"
        assert ask(other, {"messages": []}).status_code == 400  # a malformed request stays a 400
    with pytest.raises(ValueError, match="refusal_status"):
        ReplayJudge(strict_judge.data, refusal_status=429)


def test_usage_and_call_counts(data: ReplayData, data_dir: Path) -> None:
    q = data.question(2)
    with ReplayJudge(data) as server:
        response = ask(server, body_for(q, "gpt35", "vicuna-13b"))
        usage = response.json()["usage"]
        words = sum(len(m["content"].split()) for m in body_for(q, "gpt35", "vicuna-13b")["messages"])  # type: ignore[union-attr]
        assert usage["prompt_tokens"] == words > 100
        assert usage["completion_tokens"] == len(reply_tokens(reply_text(response))) > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert ask(server, {"messages": []}).status_code == 400
        assert (server.calls, server.errors, len(server.served)) == (2, 1, 1)
        assert server.prompt_tokens == usage["prompt_tokens"]
        # max_tokens cuts the reply as a real server does
        cut = ask(server, body_for(q, "gpt35", "vicuna-13b", max_tokens=3)).json()
        assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3
        models = httpx.get(f"{server.base_url}/models", timeout=10).json()
        assert models["data"][0]["id"] == "gpt-4-replay"
        assert httpx.post(f"{server.base_url}/completions", json={}, timeout=10).status_code == 404
        server.reset()
        assert (server.calls, server.errors, server.served) == (0, 0, [])


def test_logprobs_shape(data: ReplayData, judge: ReplayJudge) -> None:
    q, a, b = first_pair(data, tie=False)
    p = q.pair(a, b)
    d = (p.score_a - p.score_b) / 2
    response = ask(judge, body_for(q, a, b, logprobs=True, top_logprobs=3)).json()
    choice = response["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == response["usage"]["completion_tokens"]
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    for entry in content:
        assert set(entry) >= {"token", "logprob", "top_logprobs"}
        assert all(set(alt) >= {"token", "logprob"} for alt in entry["top_logprobs"])
    verdict = content[-2]  # ..., " [[", "A", "]]"
    assert content[-3]["token"].strip() == "[[" and verdict["token"] == ("A" if d > 0 else "B")
    alts = {alt["token"]: alt["logprob"] for alt in verdict["top_logprobs"]}
    assert set(alts) == {"A", "B", "C"}
    total = math.exp(d) + math.exp(-d) + 1
    assert alts["A"] == pytest.approx(d - math.log(total)) and alts["C"] == pytest.approx(-math.log(total))
    assert verdict["top_logprobs"][0]["token"] == verdict["token"]
    assert sum(math.exp(v) for v in alts.values()) == pytest.approx(1.0)
    # GPT-Rank: the leading digit carries the distribution; two alternatives asked
    ranked = ask(judge, body_for(q, b, a, "gpt-rank", logprobs=True, top_logprobs=2)).json()
    first = ranked["choices"][0]["logprobs"]["content"][0]
    assert first["token"] == ("2" if d > 0 else "1") and len(first["top_logprobs"]) == 2
    assert first["logprob"] == pytest.approx(
        verdict_logprobs("gpt-rank", p.score_b, p.score_a)[first["token"]]
    )
    # no logprobs unless asked; bad top_logprobs refused
    assert ask(judge, body_for(q, a, b)).json()["choices"][0]["logprobs"] is None
    assert ask(judge, body_for(q, a, b, logprobs=True, top_logprobs=50)).status_code == 400


def test_gpt_rank_tie_logprobs_favour_the_stated_quality() -> None:
    good, bad = verdict_logprobs("gpt-rank", 8, 8), verdict_logprobs("gpt-rank", 2, 2)
    assert good["3"] == pytest.approx(good["1"]) and good["4"] - good["3"] == pytest.approx(OTHER_TIE_LOGIT)
    assert bad["4"] == pytest.approx(bad["1"]) and bad["3"] - bad["4"] == pytest.approx(OTHER_TIE_LOGIT)


# ---------------------------------------------------------------- the real backend and judge


def expected_winner(q: ReplayQuestion, a: str, b: str) -> str:
    p = q.pair(a, b)
    return "a" if p.score_a > p.score_b else "b" if p.score_b > p.score_a else "tie"


@pytest.mark.parametrize("prompt", ["mt-bench", "gpt-rank"])
def test_pairwise_judge_through_openai_backend(data: ReplayData, prompt: str) -> None:
    q = data.question(10)
    items = [
        JudgeItem(q.text, "", q.answers[i], q.answers[j], q.models[i], q.models[j], q.example_id)
        for i in range(7)
        for j in range(i + 1, 7)
    ]

    async def judged(server: ReplayJudge) -> tuple[list[PairVerdict], PairwiseJudge]:
        backend = OpenAIBackend(name="gpt-4-replay", base_url=server.base_url, max_retries=0)
        pairwise = PairwiseJudge(backend, prompt)  # type: ignore[arg-type]
        try:
            return await pairwise.judge_pairs(items), pairwise
        finally:
            await backend.aclose()

    with ReplayJudge(data) as server:
        verdicts, pairwise = asyncio.run(judged(server))
        assert server.calls == 42 and server.errors == 0  # 21 pairs, both orders
        assert sum(s.imputed for s in server.served) == 16
    assert [v.winner for v in verdicts] == [expected_winner(q, it.model_a, it.model_b) for it in items]
    assert all(v.consistent for v in verdicts)  # a replayed review never flips with the order
    assert pairwise.usage.calls == 42 and pairwise.usage.failures == 0
    assert pairwise.usage.prompt_tokens > 42 * 100 and pairwise.usage.completion_tokens >= 42 * 4

    with ReplayJudge(data, recorded_only=True) as strict:
        verdicts, pairwise = asyncio.run(judged(strict))
    errors = [v for v in verdicts if v.winner == "error"]
    assert len(errors) == 8 and pairwise.usage.failures == 16
    assert all("no recorded GPT-4 review" in (v.error or "") for v in errors)
    assert {frozenset((v.model_a, v.model_b)) for v in errors} == {
        frozenset((p.model_a, p.model_b)) for p in q.imputed_pairs()
    }


def test_pairwise_judge_cuts_a_short_budget(data: ReplayData, judge: ReplayJudge) -> None:
    """A judge given too few tokens for MT-bench's explanation gets no verdict: an error, not a tie."""
    q = data.question(11)
    item = JudgeItem(q.text, "", q.answers[0], q.answers[4], q.models[0], q.models[4])

    async def judged() -> PairVerdict:
        backend = OpenAIBackend(name="gpt-4-replay", base_url=judge.base_url, max_retries=0)
        try:
            return (
                await PairwiseJudge(backend, "mt-bench", GenerationParams(max_tokens=5)).judge_pairs([item])
            )[0]
        finally:
            await backend.aclose()

    assert asyncio.run(judged()).winner == "error"
