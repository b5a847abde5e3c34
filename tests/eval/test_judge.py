"""Pairwise LLM judging (LLM-Blender §5 GPT-Rank; MT-bench's pairwise judge): parsing, both orders,
the cache, GPT-Rank aggregation, and one slow run against the packaged SmolLM2 through llama.cpp."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from llmblend.backends.base import Backend, Generation, GenerationParams
from llmblend.data.mixinstruct import parse_cmp_results
from llmblend.data.sources import locate_data_dir
from llmblend.errors import BackendResponseError
from llmblend.eval.judge import (
    GPT_RANK_TEMPLATE,
    MT_BENCH_PAIR_SYSTEM,
    MT_BENCH_PAIR_TEMPLATE,
    POSITION_VERDICTS,
    TIE,
    JudgeItem,
    Judgement,
    PairVerdict,
    PairwiseJudge,
    all_pairs,
    cmp_results,
    combine_orderings,
    gpt_rank,
    pair_verdict,
    parse_gpt_rank,
    parse_mt_bench,
    to_battles,
)
from llmblend.eval.ratings import Battle
from llmblend.types import CMP_VERDICTS, Candidate, Example, Message, Prompt, prompt_text

# ---------------------------------------------------------------- a scripted judge backend

_GPT_RANK_ANSWERS = re.compile(r"Candidate A: \n(.*?)\n\nCandidate B: \n(.*?)\n\nGiven the instruction", re.S)
_MT_BENCH_ANSWERS = re.compile(
    r"Assistant A's Answer\]\n(.*?)\n\[The End.*?Assistant B's Answer\]\n(.*?)\n\[The End", re.S
)


def shown_answers(prompt: Prompt) -> tuple[str, str]:
    """The (A, B) answers a judge prompt shows, from either template."""
    text = prompt_text(prompt)
    match = _GPT_RANK_ANSWERS.search(text) or _MT_BENCH_ANSWERS.search(text)
    assert match, f"not a judge prompt: {text[:200]!r}"
    return match.group(1), match.group(2)


class ScriptedJudge(Backend):
    """A judge whose reply is ``reply(answer shown as A, answer shown as B)``; counts what it is asked.

    ``fail(a, b)`` true makes that call fail (a 500, returned as data by ``Backend.generate``).
    """

    def __init__(
        self,
        reply: Callable[[str, str], str],
        *,
        fail: Callable[[str, str], bool] | None = None,
        concurrency: int = 3,
        delay: float = 0.0,
    ) -> None:
        self.name = "scripted-judge"
        self.concurrency = concurrency
        self.reply = reply
        self.fail = fail
        self.delay = delay
        self.asked: list[tuple[str, str]] = []
        self.prompts: list[Prompt] = []
        self.in_flight = self.max_in_flight = 0

    async def _generate(self, prompt: Prompt, params: GenerationParams) -> Generation:
        shown = shown_answers(prompt)
        self.asked.append(shown)
        self.prompts.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.fail is not None and self.fail(*shown):
            raise BackendResponseError("scripted server error (500)", retryable=True, status=500)
        text = self.reply(*shown)
        return Generation(
            text, self.name, prompt_tokens=len(prompt_text(prompt).split()), completion_tokens=3
        )


def always(text: str) -> Callable[[str, str], str]:
    return lambda a, b: text


def prefers_longer(a: str, b: str) -> str:
    return "1. A is better" if len(a) > len(b) else "2. B is better"


def mt_prefers_longer(a: str, b: str) -> str:
    return f"A is longer, so {'[[A]]' if len(a) > len(b) else '[[B]]'}"


ITEMS = [
    JudgeItem("Name a colour.", "", "Red.", "Blue is a colour of the sky.", "m1", "m2", "ex1"),
    JudgeItem("Add.", "2 + 2", "It is 4, because two and two make four.", "5", "m1", "m3", "ex2"),
    JudgeItem("Greet.", "", "Hi", "Hello there, nice to meet you!", "m2", "m3", "ex3"),
]


def judge_all(judge: PairwiseJudge, items: list[JudgeItem] = ITEMS) -> list[PairVerdict]:
    return asyncio.run(judge.judge_pairs(items))


# ---------------------------------------------------------------- templates


def test_mt_bench_prompt_is_the_one_in_the_shared_judge_prompts_file() -> None:
    path = locate_data_dir() / "mt_bench" / "judge_prompts.jsonl"
    records = {r["name"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    assert records["pair-v2"]["system_prompt"] == MT_BENCH_PAIR_SYSTEM
    assert records["pair-v2"]["prompt_template"] == MT_BENCH_PAIR_TEMPLATE


def test_gpt_rank_prompt_offers_the_four_mixinstruct_verdicts_numbered() -> None:
    for number, verdict in enumerate(CMP_VERDICTS, start=1):
        assert f"please output: {number}. {verdict}\n" in GPT_RANK_TEMPLATE
    assert "Do not output anything else except the 4 choices above." in GPT_RANK_TEMPLATE


def test_prompts_show_the_answers_in_the_order_asked_and_keep_dollars_and_braces() -> None:
    item = JudgeItem("Price {x}?", "in $USD", "costs $5 {a}", "${free}", "m1", "m2")
    backend = ScriptedJudge(always("1. A is better"))
    verdict = judge_all(PairwiseJudge(backend), [item])[0]
    assert verdict.winner == "tie"  # "A" both times: position bias, no winner
    assert sorted(backend.asked) == sorted([("costs $5 {a}", "${free}"), ("${free}", "costs $5 {a}")])
    assert "Instruction: \nPrice {x}?\n\nInput: \nin $USD\n\n" in backend.prompts[0]
    mt = ScriptedJudge(always("[[C]]"))
    judge_all(PairwiseJudge(mt, prompt="mt-bench"), [item])
    system, user = mt.prompts[0]
    assert system == Message("system", MT_BENCH_PAIR_SYSTEM)
    assert user.role == "user" and user.content.startswith("[User Question]\nPrice {x}?\n\nin $USD\n\n")


# ---------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. A is better", "A is better"),
        ("2. B is better", "B is better"),
        ("3. Same good", "Same good"),
        ("4. Same bad", "Same bad"),
        ("A is better.", "A is better"),
        ("  b   IS better  ", "B is better"),
        ("same good", "Same good"),
        ("Same bad\n", "Same bad"),
        ("3", "Same good"),
        ("4.", "Same bad"),
        ("(1)", "A is better"),
        ("Choice: 2", "B is better"),
        ("Output: 1. A is better", "A is better"),
        ("Candidate B is better than candidate A.", "B is better"),
        ("1. A is better\n", "A is better"),
        ("", None),
        ("I cannot decide.", None),
        ("Both answers are fine.", None),
        ("1. B is better", None),  # number and phrase disagree
        ("A is better. Actually, B is better.", None),
        ("1. A is better\n2. B is better\n3. Same good\n4. Same bad", None),  # an echo of the choices
        ("The data is better organised in B", None),  # "a is better" only inside a word
        ("10 reasons why", None),
    ],
)
def test_parse_gpt_rank(text: str, expected: str | None) -> None:
    assert parse_gpt_rank(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Assistant A explains the steps. [[A]]", "A is better"),
        ("Final verdict: [[B]]", "B is better"),
        ("Both are equally good. [[C]]", TIE),
        ("[[ b ]]", "B is better"),
        ("[[a]]", "A is better"),
        ("My verdict is [[A]]. Again: [[A]]", "A is better"),
        ("A is better", None),
        ("[A]", None),
        ("[[A]] or [[B]], hard to say", None),
        ("", None),
    ],
)
def test_parse_mt_bench(text: str, expected: str | None) -> None:
    assert parse_mt_bench(text) == expected


# ---------------------------------------------------------------- combining the two orders


@pytest.mark.parametrize(
    ("forward", "backward", "expected"),
    [
        ("A is better", "B is better", ("a", "A is better", True)),  # model_a won in both positions
        ("B is better", "A is better", ("b", "B is better", True)),
        ("A is better", "A is better", ("tie", None, False)),  # position bias: flips with the order
        ("B is better", "B is better", ("tie", None, False)),
        ("Same good", "Same good", ("tie", "Same good", True)),
        ("Same bad", "Same bad", ("tie", "Same bad", True)),
        ("Same good", "Same bad", ("tie", None, True)),
        (TIE, TIE, ("tie", None, True)),
        ("A is better", "Same good", ("tie", None, False)),  # a win one way, a tie the other
        ("Same bad", "A is better", ("tie", None, False)),
    ],
)
def test_combine_orderings(forward: str, backward: str, expected: tuple) -> None:
    assert combine_orderings(forward, backward) == expected


def test_pair_verdict_errors_are_errors_not_ties() -> None:
    item = ITEMS[0]
    good = Judgement("A is better", "1. A is better")
    unreadable = Judgement(None, "I like both")
    failed = Judgement(None, "", error="bad_response: scripted")
    verdict = pair_verdict(item, good, unreadable)
    assert (verdict.winner, verdict.verdict, verdict.consistent) == ("error", None, False)
    assert "backward" in verdict.error and "I like both" in verdict.error
    assert verdict.backward.text == "I like both"  # the raw reply is kept
    assert "forward ordering failed" in pair_verdict(item, failed, good).error
    assert pair_verdict(item, good, Judgement("B is better", "2")).winner == "a"


# ---------------------------------------------------------------- the judge, both orders


def test_a_judge_that_always_says_a_gives_only_ties() -> None:
    backend = ScriptedJudge(always("1. A is better"))
    judge = PairwiseJudge(backend)
    verdicts = judge_all(judge)
    assert [v.winner for v in verdicts] == ["tie"] * 3
    assert not any(v.consistent for v in verdicts)
    assert len(backend.asked) == 6  # every pair in both orders
    for item in ITEMS:
        assert (item.answer_a, item.answer_b) in backend.asked
        assert (item.answer_b, item.answer_a) in backend.asked


@pytest.mark.parametrize(("prompt", "reply"), [("gpt-rank", prefers_longer), ("mt-bench", mt_prefers_longer)])
def test_a_judge_that_prefers_the_longer_answer_gives_consistent_wins(prompt: str, reply: Callable) -> None:
    judge = PairwiseJudge(ScriptedJudge(reply), prompt=prompt)
    verdicts = judge_all(judge)
    assert [v.winner for v in verdicts] == ["b", "a", "b"]
    assert [v.verdict for v in verdicts] == ["B is better", "A is better", "B is better"]
    assert all(v.consistent for v in verdicts)
    assert judge.usage.calls == 6 and judge.usage.completion_tokens == 18 and judge.usage.prompt_tokens > 0


def test_unreadable_replies_are_counted_errors_with_the_text_kept() -> None:
    judge = PairwiseJudge(ScriptedJudge(lambda a, b: "Hmm." if a == "Red." else prefers_longer(a, b)))
    verdicts = judge_all(judge)
    assert [v.winner for v in verdicts] == ["error", "a", "b"]
    assert verdicts[0].forward.text == "Hmm." and verdicts[0].forward.verdict is None
    assert judge.usage.unparsed == 1 and judge.usage.failures == 0


def test_calls_run_concurrently_within_the_backend_concurrency() -> None:
    backend = ScriptedJudge(prefers_longer, concurrency=2, delay=0.02)
    judge_all(PairwiseJudge(backend))
    assert backend.max_in_flight == 2


# ---------------------------------------------------------------- the cache


def cache_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_rerun_with_the_cache_asks_nothing_and_gives_the_same_verdicts(tmp_path: Path) -> None:
    cache = tmp_path / "runs" / "judge.jsonl"  # the folder is made on the first append
    first = PairwiseJudge(ScriptedJudge(prefers_longer), cache_path=cache)
    verdicts = judge_all(first)
    assert first.usage.calls == 6 and len(cache_lines(cache)) == 6
    backend = ScriptedJudge(prefers_longer)
    again = PairwiseJudge(backend, cache_path=cache)
    assert [(v.winner, v.verdict) for v in judge_all(again)] == [(v.winner, v.verdict) for v in verdicts]
    assert backend.asked == [] and again.usage.calls == 0 and again.usage.cached == 6
    assert all(v.forward.cached and v.backward.cached for v in judge_all(again))


def test_a_torn_last_line_is_dropped_and_only_that_ordering_asked_again(tmp_path: Path) -> None:
    cache = tmp_path / "judge.jsonl"
    verdicts = judge_all(PairwiseJudge(ScriptedJudge(prefers_longer), cache_path=cache))
    data = cache.read_bytes()
    cache.write_bytes(data[:-25])  # a kill during the last append
    lost = json.loads(data.splitlines()[-1])
    backend = ScriptedJudge(prefers_longer)
    resumed = judge_all(PairwiseJudge(backend, cache_path=cache))
    assert len(backend.asked) == 1
    assert [v.winner for v in resumed] == [v.winner for v in verdicts]
    assert len(cache_lines(cache)) == 6 and cache_lines(cache)[-1]["key"] == lost["key"]


def test_backend_failures_are_returned_as_data_and_not_cached(tmp_path: Path) -> None:
    cache = tmp_path / "judge.jsonl"
    flaky = ScriptedJudge(prefers_longer, fail=lambda a, b: a == "5")
    judge = PairwiseJudge(flaky, cache_path=cache)
    verdicts = judge_all(judge)
    assert [v.winner for v in verdicts] == ["b", "error", "b"]
    assert "scripted server error" in verdicts[1].error and verdicts[1].backward.error
    assert judge.usage.failures == 1 and judge.usage.calls == 6 and len(cache_lines(cache)) == 5
    healthy = ScriptedJudge(prefers_longer)
    retried = judge_all(PairwiseJudge(healthy, cache_path=cache))
    assert healthy.asked == [("5", ITEMS[1].answer_a)]
    assert [v.winner for v in retried] == ["b", "a", "b"]


def test_the_cache_key_covers_backend_prompt_params_and_order(tmp_path: Path) -> None:
    backend = ScriptedJudge(prefers_longer)
    judge = PairwiseJudge(backend)
    item = ITEMS[0]
    key = judge.cache_key(item, item.answer_a, item.answer_b)
    assert key != judge.cache_key(item, item.answer_b, item.answer_a)
    assert key != PairwiseJudge(backend, prompt="mt-bench").cache_key(item, item.answer_a, item.answer_b)
    other_params = PairwiseJudge(backend, params=GenerationParams(max_tokens=8))
    assert key != other_params.cache_key(item, item.answer_a, item.answer_b)
    assert key == PairwiseJudge(backend).cache_key(item, item.answer_a, item.answer_b)


def test_unknown_prompt_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="gpt-rank"):
        PairwiseJudge(ScriptedJudge(prefers_longer), prompt="pairwise")  # type: ignore[arg-type]


# ---------------------------------------------------------------- GPT-Rank aggregation


def verdict(model_a: str, model_b: str, winner: str, cmp: str | None = None) -> PairVerdict:
    item = JudgeItem("q", "", "x", "y", model_a, model_b, "ex")
    judged = Judgement(None, "") if winner == "error" else Judgement("Same good", "3")
    return PairVerdict(item, winner, cmp, True, judged, judged)  # type: ignore[arg-type]


def test_gpt_rank_scores_wins_minus_losses_and_shares_tied_ranks() -> None:
    verdicts = [
        verdict("m1", "m2", "a", "A is better"),
        verdict("m3", "m1", "b", "B is better"),
        verdict("m1", "m4", "a", "A is better"),
        verdict("m2", "m3", "tie", "Same good"),
        verdict("m2", "m4", "a", "A is better"),
        verdict("m4", "m3", "b", "B is better"),
        verdict("m4", "m3", "error"),
    ]
    result = gpt_rank(["m1", "m2", "m3", "m4"], verdicts)
    assert result.scores == {"m1": 3, "m2": 0, "m3": 0, "m4": -3}
    assert result.ranks == {"m1": 1.0, "m2": 2.5, "m3": 2.5, "m4": 4.0}
    assert result.wins["m1"] == 3 and result.losses["m4"] == 3 and result.errors == 1


def test_gpt_rank_of_all_ties_shares_one_rank_and_rejects_strangers() -> None:
    result = gpt_rank(["x", "y", "z"], [verdict("x", "y", "tie"), verdict("y", "z", "tie")])
    assert result.ranks == {"x": 2.0, "y": 2.0, "z": 2.0}
    with pytest.raises(ValueError, match="'w'"):
        gpt_rank(["x", "y"], [verdict("x", "w", "a")])


def test_all_pairs_then_judge_then_gpt_rank_and_cmp_results() -> None:
    example = Example(
        "ex9",
        [Message("user", "Say something.")],
        candidates=[
            Candidate("short", "Hi"),
            Candidate("long", "Hello, how are you today?"),
            Candidate("mid", "Hello!"),
        ],
    )
    items = all_pairs(example)
    assert [(i.model_a, i.model_b) for i in items] == [("short", "long"), ("short", "mid"), ("long", "mid")]
    assert items[0].instruction == "Say something." and items[0].example_id == "ex9"
    verdicts = judge_all(PairwiseJudge(ScriptedJudge(prefers_longer)), items)
    assert gpt_rank(example.models, verdicts).ranks == {"short": 3.0, "long": 1.0, "mid": 2.0}
    results = cmp_results(verdicts)
    assert results == {"short,long": "B is better", "short,mid": "B is better", "long,mid": "A is better"}
    assert parse_cmp_results(json.dumps(results)) == results  # the MixInstruct on-disk form reads back
    assert to_battles(verdicts) == [
        Battle("short", "long", "b"),
        Battle("short", "mid", "b"),
        Battle("long", "mid", "a"),
    ]


def test_cmp_results_leaves_out_errors_and_ties_of_no_stated_quality() -> None:
    verdicts = [verdict("a", "b", "tie", "Same bad"), verdict("a", "c", "tie"), verdict("b", "c", "error")]
    assert cmp_results(verdicts) == {"a,b": "Same bad"}
    assert to_battles(verdicts) == [Battle("a", "b", "tie"), Battle("a", "c", "tie")]


# ---------------------------------------------------------------- the real packaged SmolLM2 (slow)


@pytest.mark.slow
def test_gpt_rank_judge_with_the_packaged_smollm2(tmp_path: Path) -> None:
    """The judge over real HTTP: SmolLM2 behind a llama_cpp.server on 127.0.0.1."""
    pytest.importorskip("llama_cpp")
    from llmblend.backends.llama_server import LlamaServerBackend

    items = [
        JudgeItem("What is the capital of France?", "", "Paris.", "Berlin.", "good", "bad", "q1"),
        JudgeItem("Add the numbers.", "2 + 3", "5", "The answer is 7.", "good", "bad", "q2"),
    ]
    backend = LlamaServerBackend("local:smollm2-135m", threads=2)
    judge = PairwiseJudge(backend, params=GenerationParams(max_tokens=12), cache_path=tmp_path / "c.jsonl")

    async def judged():
        try:
            return await judge.judge_pairs(items), backend.base_url
        finally:
            await backend.aclose()

    verdicts, base_url = asyncio.run(judged())
    assert base_url.startswith("http://127.0.0.1:")
    assert judge.usage.calls == 4 and judge.usage.failures == 0
    assert judge.usage.prompt_tokens > 100 and judge.usage.completion_tokens > 0
    for v in verdicts:
        assert v.winner in ("a", "b", "tie", "error")
        for one in (v.forward, v.backward):
            assert one.text  # the raw reply is kept whatever it says
            assert one.verdict is None or one.verdict in POSITION_VERDICTS
        if v.winner == "error":
            assert v.error and "no readable verdict" in v.error
    again = PairwiseJudge(backend, params=GenerationParams(max_tokens=12), cache_path=tmp_path / "c.jsonl")
    assert [v.winner for v in asyncio.run(again.judge_pairs(items))] == [v.winner for v in verdicts]
    assert again.usage.calls == 0
