"""SmolLM2-135M as an LLM judge on human-labelled pairs: accuracy, position consistency, calls, time.

The judge is the packaged SmolLM2-135M-Instruct behind its own ``llama_cpp.server`` on 127.0.0.1,
asked with LLM-Blender's GPT-Rank prompt (a one-token choice, so its logprobs give a soft margin),
every pair in both orders. Label sets: ``hhh`` (221 HHH-alignment pairs, human preference) and
``vicuna80-human`` (80 gpt-3.5 vs vicuna-13b pairs, FairEval's human labels; ties left out of the
accuracy). For each: accuracy of the hard verdict (MT-bench's both-orders rule: a flip is a tie)
and of the soft margin (both orders' margins averaged), how often the two orders agree, how often
slot A wins, and "the longer answer wins" for scale. A 135M judge is expected to be weak: the
point is the machinery and its cost. Judgements are cached, so a rerun resumes.

    .venv/bin/python bench/judge_smollm2.py --out build/bench-judge-smollm2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llmblend.backends.llama_server import LlamaServerBackend
from llmblend.blend.aio import LoopRunner
from llmblend.data.sources import locate_data_dir
from llmblend.eval.agreement import LabelledPair, agreement, load_labels
from llmblend.eval.judge import TEMPLATES, JudgeItem, PairVerdict, PairwiseJudge
from llmblend.types import prompt_text

PROMPT = "gpt-rank"


def items_of(pairs: list[LabelledPair]) -> list[JudgeItem]:
    return [
        JudgeItem(prompt_text(p.instruction), "", p.answer_a, p.answer_b, "a", "b", p.example_id or str(k))
        for k, p in enumerate(pairs)
    ]


def soft_side(verdict: PairVerdict) -> str:
    """The side the two orders' soft margins favour together (forward shows a as A, backward b)."""
    forward, backward = verdict.forward.margin, verdict.backward.margin
    if forward is None or backward is None:
        return verdict.winner
    margin = (forward - backward) / 2
    return "a" if margin > 0 else "b" if margin < 0 else "tie"


def measure(name: str, pairs: list[LabelledPair], judge: PairwiseJudge, loop: LoopRunner) -> dict:
    before = (judge.usage.calls, judge.usage.prompt_tokens, judge.usage.completion_tokens)
    started = time.perf_counter()
    verdicts = loop.run(judge.judge_pairs(items_of(pairs)))
    seconds = time.perf_counter() - started
    calls = judge.usage.calls - before[0]
    usable = [v for v in verdicts if v.winner != "error"]
    orderings = [j for v in verdicts for j in (v.forward, v.backward) if j.verdict is not None]
    longer = ["a" if len(p.answer_a) > len(p.answer_b) else "b" for p in pairs]
    return {
        "labels": name,
        "pairs": len(pairs),
        "hard": agreement(name, "smollm2 hard", pairs, [v.winner for v in verdicts]).as_dict(),
        "soft": agreement(name, "smollm2 soft", pairs, [soft_side(v) for v in verdicts]).as_dict(),
        "longer_wins": agreement(name, "longer", pairs, longer).as_dict(),
        "position_consistency": float(np.mean([v.consistent for v in usable])) if usable else None,
        "slot_a_rate": float(np.mean([j.verdict == "A is better" for j in orderings])) if orderings else None,
        "soft_margins": sum(v.forward.margin is not None and v.backward.margin is not None for v in verdicts),
        "errors": len(verdicts) - len(usable),
        "calls": calls,
        "prompt_tokens": judge.usage.prompt_tokens - before[1],
        "completion_tokens": judge.usage.completion_tokens - before[2],
        "seconds": round(seconds, 1),
        "seconds_per_call": round(seconds / calls, 3) if calls else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", default="hhh,vicuna80-human")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each label set")
    parser.add_argument("--cache", type=Path, default=Path("build/judge-smollm2-cache.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("build/bench-judge-smollm2.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    data_dir = locate_data_dir()
    backend = LlamaServerBackend("local:smollm2-135m", name="smollm2-judge", threads=args.threads, n_ctx=4096)
    params = TEMPLATES[PROMPT].default_params
    judge = PairwiseJudge(backend, PROMPT, params, cache_path=args.cache, soft=True)
    results = []
    loop = LoopRunner("bench", "")
    try:
        for name in args.labels.split(","):
            pairs = load_labels(name, data_dir)[: args.limit]
            results.append(measure(name, pairs, judge, loop))
            print(json.dumps(results[-1], indent=1), flush=True)
    finally:
        loop.run(backend.aclose())
        loop.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"judge": "smollm2-135m", "prompt": PROMPT, "results": results}, indent=1))


if __name__ == "__main__":
    main()
