"""llmblend inside TRL: pairwise and rank judges, and a GRPOTrainer reward function (a real run)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmblend.integrations import trl as integration
from llmblend.integrations.trl import (
    LlmblendPairwiseJudge,
    LlmblendRankJudge,
    LlmblendReward,
    llmblend_reward_func,
)
from llmblend.rank.reward import group_rewards, reference_rewards


class LengthRanker:
    """P(a beats b) = sigmoid((len(a) − len(b)) / 4); records the instructions it was asked about."""

    def __init__(self) -> None:
        self.instructions: list[str] = []

    def probability(self, instructions, a, b) -> np.ndarray:
        self.instructions += list(instructions)
        margins = np.array([len(x) - len(y) for x, y in zip(a, b, strict=True)], dtype=np.float64) / 4
        return 1.0 / (1.0 + np.exp(-margins))


TIPS = "Give three tips for staying healthy."
GOOD_TIPS = (
    "1. Eat a balanced diet with plenty of fruits and vegetables.\n2. Exercise regularly, at least 30 "
    "minutes a day.\n3. Get enough sleep, seven to nine hours each night."
)
CODE = "Write a Python function that returns the sum of two numbers."
GOOD_CODE = "Here is a function:\n\ndef add(a, b):\n    return a + b\n\nIt returns the sum of a and b."
OFF_TOPIC = "The moon orbits the earth."


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("torch")
    from llmblend.rank.pairranker import PairRanker

    return PairRanker.default(runtime="onnx-int8")


def test_importing_the_integration_loads_neither_torch_nor_trl() -> None:
    code = (
        "import sys, llmblend.integrations.trl as t; f = t.llmblend_reward_func(); "
        "t.LlmblendPairwiseJudge(); t.LlmblendRankJudge(); "
        "print(','.join(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


# ---- judges, with the shipped ranker -------------------------------------------------------------


@pytest.mark.parametrize("shuffle_order", [True, False])
def test_pairwise_judge_picks_the_better_answer_in_either_slot(shipped, shuffle_order: bool) -> None:
    judge = LlmblendPairwiseJudge(shipped, seed=1)
    prompts = [TIPS, TIPS, CODE, CODE]
    completions = [
        [GOOD_TIPS, OFF_TOPIC],
        [OFF_TOPIC, GOOD_TIPS],
        [GOOD_CODE, "I don't know."],
        ["I don't know.", GOOD_CODE],
    ]
    assert judge.judge(prompts, completions, shuffle_order=shuffle_order) == [0, 1, 0, 1]
    scores = judge.judge(prompts, completions, shuffle_order=shuffle_order, return_scores=True)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.5 and scores[2] > 0.5
    np.testing.assert_allclose([scores[0] + scores[1], scores[2] + scores[3]], 1.0, atol=1e-12)


def test_shuffling_never_changes_the_pairwise_answer(shipped) -> None:
    judge = LlmblendPairwiseJudge(shipped)
    prompts = [TIPS] * 6
    completions = [[GOOD_TIPS, OFF_TOPIC], ["Drink water.", GOOD_TIPS], [OFF_TOPIC, "Drink water."]] * 2
    plain = judge.judge(prompts, completions, shuffle_order=False, return_scores=True)
    for _ in range(3):  # a new seeded draw of flips each call
        shuffled = judge.judge(prompts, completions, shuffle_order=True, return_scores=True)
        np.testing.assert_allclose(shuffled, plain, atol=1e-12)


def test_pairwise_judge_accepts_conversational_completions_and_checks_pairs() -> None:
    judge = LlmblendPairwiseJudge(LengthRanker())
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TIPS}]
    pair = [[{"role": "assistant", "content": "Sleep."}], [{"role": "assistant", "content": GOOD_TIPS}]]
    assert judge.judge([conversation], [pair]) == [1]
    assert judge.ranker.instructions == [f"system: Be brief.\n\nuser: {TIPS}"]  # as prompt_text flattens
    with pytest.raises(ValueError, match=r"exactly 2 completions per prompt; completions\[0\] has 3"):
        judge.judge([TIPS], [["a", "b", "c"]])
    with pytest.raises(ValueError, match="1 prompts but 2 completion pairs"):
        judge.judge([TIPS], [["a", "b"], ["c", "d"]])
    assert judge.judge([], []) == []


@pytest.mark.parametrize("shuffle_order", [True, False])
def test_rank_judge_puts_the_good_answer_first(shipped, shuffle_order: bool) -> None:
    judge = LlmblendRankJudge(shipped, seed=3)
    completions = [[OFF_TOPIC, GOOD_TIPS, "Drink water."], ["I don't know.", GOOD_CODE], ["Only one."]]
    rankings = judge.judge([TIPS, CODE, CODE], completions, shuffle_order=shuffle_order)
    assert [sorted(r) for r in rankings] == [[0, 1, 2], [0, 1], [0]]
    assert rankings[0][0] == 1 and rankings[1] == [1, 0] and rankings[2] == [0]
    assert judge.judge([TIPS, CODE, CODE], completions, shuffle_order=not shuffle_order) == rankings


# ---- the reward function ---------------------------------------------------------------------


def test_reward_function_reads_standard_and_conversational_batches_alike() -> None:
    reward = llmblend_reward_func(LengthRanker())
    assert reward.__name__ == "llmblend_reward"
    prompts = [TIPS, TIPS, TIPS, CODE, CODE]
    texts = [GOOD_TIPS, "Sleep.", OFF_TOPIC, GOOD_CODE, "No."]
    standard = reward(prompts=prompts, completions=texts, completion_ids=[[1]] * 5, trainer_state=None)
    chat_prompts = [[{"role": "user", "content": p}] for p in prompts]
    chat_completions = [[{"role": "assistant", "content": t}] for t in texts]
    conversational = reward(prompts=chat_prompts, completions=chat_completions, completion_ids=[[1]] * 5)
    assert standard == conversational == group_rewards(LengthRanker(), prompts, texts).tolist()
    assert all(isinstance(r, float) for r in standard)


def test_reward_function_against_a_reference() -> None:
    prompts, texts = [TIPS] * 3, [GOOD_TIPS, "Sleep.", OFF_TOPIC]
    by_mode = llmblend_reward_func(LengthRanker(), reference="longest")(prompts, texts)
    assert by_mode == reference_rewards(LengthRanker(), prompts, texts, reference="longest").tolist()
    assert by_mode[0] == 0.5
    column = LlmblendReward(LengthRanker(), reference_column="solution")
    given = column(prompts, texts, solution=["Sleep."] * 3, trainer_state=None)
    assert given[1] == 0.5 and given[0] > 0.5 > given[1] - 0.5
    with pytest.raises(
        ValueError, match=r"'answer' is not among the dataset columns the trainer passed: \['solution'\]"
    ):
        LlmblendReward(LengthRanker(), reference_column="answer")(
            prompts, texts, solution=["x"] * 3, trainer_state=None
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference": "best"}, "unknown reference mode 'best'; known modes: longest, shortest"),
        ({"reference": ["a", "b"]}, "reference_column="),
        ({"reference": "first", "reference_column": "x"}, "not both"),
    ],
)
def test_reward_function_options_are_checked_when_built(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        llmblend_reward_func(LengthRanker(), **kwargs)


def test_default_ranker_is_built_on_the_first_call_only_and_not_pickled(monkeypatch) -> None:
    built: list[LengthRanker] = []

    def fake_default() -> LengthRanker:
        built.append(LengthRanker())
        return built[-1]

    monkeypatch.setattr(integration, "default_ranker", fake_default)
    reward = llmblend_reward_func()
    assert built == []
    reward([TIPS, TIPS], ["a", "bb"])
    reward([TIPS, TIPS], ["a", "bb"])
    assert len(built) == 1
    copy = pickle.loads(pickle.dumps(reward))
    assert copy._ranker is None and copy.__name__ == "llmblend_reward"


# ---- a real GRPOTrainer run --------------------------------------------------------------------


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_grpo_trainer_trains_a_tiny_lm_on_llmblend_rewards(
    shipped, conversational: bool, tiny_causal_lm: Path, tiny_causal_lm_plain: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_causal_lm if conversational else tiny_causal_lm_plain
    questions = ["What is the capital of France?", TIPS]
    if conversational:
        prompts = [
            [{"role": "user", "content": questions[0]}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": questions[1]}],
        ]
    else:
        prompts = questions
    reward = llmblend_reward_func(shipped)
    calls: list[tuple[list, list, list[float]]] = []

    def recorded(prompts, completions, **kwargs):
        rewards = reward(prompts, completions, **kwargs)
        calls.append((prompts, completions, rewards))
        return rewards

    recorded.__name__ = reward.__name__
    model = AutoModelForCausalLM.from_pretrained(folder)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    args = trl.GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        learning_rate=1e-2,
        use_cpu=True,
        bf16=False,
        fp16=False,
        use_vllm=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=recorded,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=AutoTokenizer.from_pretrained(folder),
    )
    trainer.train()

    assert len(calls) == 2  # one generation batch per step: one prompt, four completions
    for seen_prompts, completions, rewards in calls:
        assert len(seen_prompts) == len(completions) == len(rewards) == 4
        assert seen_prompts[0] in prompts and all(p == seen_prompts[0] for p in seen_prompts)
        if conversational:
            assert all(c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in completions)
        else:
            assert all(isinstance(c, str) for c in completions)
        assert all(0.0 <= r <= 1.0 for r in rewards) and sum(rewards) == pytest.approx(2.0)
    logged = [entry for entry in trainer.state.log_history if "rewards/llmblend_reward/mean" in entry]
    assert len(logged) == 2
    unchanged = [
        name for name, p in model.named_parameters() if p.requires_grad and torch.equal(before[name], p)
    ]
    assert unchanged == []
