"""A replay judge: GPT-4's recorded Vicuna-80 pairwise reviews, served as an OpenAI-compatible judge.

A measurement device for LLM-judge ranking strategies (LLM-Blender §3.2 strategies driven by
:class:`~llmblend.eval.judge.PairwiseJudge` / :class:`~llmblend.rank.judge_ranker.JudgeRanker`):
instead of a live LLM, a local HTTP server answers each judge request with the verdict GPT-4 gave
that pair, so a strategy's calls, tokens and ranking quality can be measured offline, exactly and
repeatably, through the project's real HTTP backend and real judge prompts.

The data (``shared/data/vicuna80``): 80 questions, answers of 8 answer sets, and 13 review files of
GPT-4 reviews ``{question_id, answer1_id, answer2_id, score: [s1, s2]}``. Seven answer sets have
reviews (gpt-4's answers have none). Per question 13 of the 21 pairs of those 7 are recorded: each of
the three vicunas against alpaca-13b, bard, gpt35 and llama-13b, plus llama-13b against alpaca-13b.

* :func:`load_replay` reads them into :class:`ReplayData`: one :class:`ReplayQuestion` per question
  with the 7 candidate answers and ``scores[i, j]``, the score GPT-4 gave answer ``i`` in its review
  against ``j`` (NaN: not recorded). The *imputed* completion fills an unrecorded pair with the two
  answers' mean recorded scores on that question (each answer is scored in 3 or 4 reviews); every
  figure can be had from the recorded pairs only or from the completed matrix (``completed=True``).
  Reference scores are :func:`~llmblend.rank.aggregate.least_squares` over the score margins.
* :class:`ReplayJudge` serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 (a free
  port, a background thread). It reads the last user message, recognises MT-bench ``pair-v2`` or
  GPT-Rank (LLM-Blender §5), finds the two answers by exact text (whitespace stripped) among all
  reviewed answers, and replies with the pair's verdict in the order shown: ``[[A]]``/``[[B]]``/
  ``[[C]]`` (equal scores) or ``1. A is better``/``2. B is better``/``3. Same good``/``4. Same bad``.
  Unknown answers, answers of different questions, and (with ``recorded_only=True``) unrecorded
  pairs get an OpenAI-shaped 400 that names the problem.

The replayed judge is perfectly position-consistent (a review's score pair is the same whichever
answer is shown first); position bias must be studied elsewhere. With ``"logprobs": true`` the server
returns chat-shaped logprobs whose verdict token carries **synthetic** probabilities (see
:func:`verdict_logprobs`): they are a smooth function of the score difference, not GPT-4's.

    .venv/bin/python bench/replay_judge.py            # counts and a summary of the data
    .venv/bin/python bench/replay_judge.py --check    # start the server, ask a few pairs both ways
    .venv/bin/python bench/replay_judge.py --serve    # serve until Ctrl-C (prints the base URL)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import numpy as np

from llmblend.data.jsonl import read_jsonl
from llmblend.data.sources import locate_data_dir, require_file
from llmblend.data.sources.vicuna80 import GOOD_SCORE, verdict
from llmblend.rank.aggregate import least_squares
from llmblend.types import Candidate, Example

JudgePrompt = Literal["mt-bench", "gpt-rank"]

#: The model id the server lists and answers as (a request may name any model).
DEFAULT_MODEL: Final = "gpt-4-replay"
#: The logit of GPT-Rank's *other* tie digit ("4" when the tie is "Same good", "3" when "Same bad").
OTHER_TIE_LOGIT: Final = -5.0
#: OpenAI's bound on ``top_logprobs``.
MAX_TOP_LOGPROBS: Final = 20

_MT_BENCH_ANSWERS: Final = re.compile(
    r"\[The Start of Assistant A's Answer\]\n(.*)\n\[The End of Assistant A's Answer\]\n\n"
    r"\[The Start of Assistant B's Answer\]\n(.*)\n\[The End of Assistant B's Answer\]",
    re.S,
)
_GPT_RANK_ANSWERS: Final = re.compile(
    r"Candidate A: \n(.*)\n\nCandidate B: \n(.*)\n\n"
    r"Given the instruction and input above, please compare the two candidates\.",
    re.S,
)
#: Reply tokens (for usage and logprobs): optional leading whitespace, then ``[[``, ``]]``, a word or
#: one punctuation character. "... [[A]]" → ..., " [[", "A", "]]"; "1. A is better" → "1", ".", " A", ...
_TOKEN: Final = re.compile(r"\s*(?:\[\[|\]\]|\w+|[^\w\s])")


# ---------------------------------------------------------------- the data


@dataclass(frozen=True, slots=True)
class PairScores:
    """GPT-4's scores of two answers to one question, in the asked order (``model_a``'s first).

    ``imputed``: no review of the pair exists, the scores are the answers' mean recorded scores on the
    question (``review_id`` and ``reviewed_first`` are then None). ``reviewed_first`` is the model
    whose answer the review showed as "Assistant 1".
    """

    question_id: int
    model_a: str
    model_b: str
    score_a: float
    score_b: float
    imputed: bool
    review_id: str | None = None
    reviewed_first: str | None = None

    @property
    def margin(self) -> float:
        """``score_a − score_b``: > 0 when ``model_a``'s answer is better."""
        return self.score_a - self.score_b

    @property
    def verdict(self) -> str:
        """The MixInstruct verdict about (``model_a``, ``model_b``), as the Vicuna-80 source gives it."""
        return verdict(self.score_a, self.score_b)


@dataclass(frozen=True, eq=False)
class ReplayQuestion:
    """One Vicuna-80 question: its reviewed candidates and GPT-4's recorded scores of their pairs.

    ``models[i]`` wrote ``answers[i]`` (answers as stored; prompts may strip them). ``scores`` is
    float64 ``[N, N]`` (read-only): ``scores[i, j]`` is the score GPT-4 gave answer ``i`` in the review
    of ``i`` vs ``j``; NaN where that pair has no review, and on the diagonal. ``reviews`` maps
    ``(first, second)`` — answer indices in the review's order — to the review id.
    """

    question_id: int
    text: str
    category: str
    models: tuple[str, ...]
    answers: tuple[str, ...]
    scores: np.ndarray
    reviews: Mapping[tuple[int, int], str]

    @property
    def example_id(self) -> str:
        """The id :func:`~llmblend.data.sources.vicuna80.vicuna80_examples` gives this question."""
        return f"vicuna80/{self.question_id}"

    def index(self, model: str) -> int:
        """The position of ``model`` in :attr:`models`; ValueError listing them when it is not there."""
        try:
            return self.models.index(model)
        except ValueError:
            raise ValueError(
                f"question {self.question_id} has no answer of {model!r}; models: {list(self.models)}"
            ) from None

    @property
    def recorded_mask(self) -> np.ndarray:
        """bool ``[N, N]``: True where the pair has a review (symmetric, False on the diagonal)."""
        return ~np.isnan(self.scores)

    @property
    def imputed_mask(self) -> np.ndarray:
        """bool ``[N, N]``: True off the diagonal where the pair has no review (filled by the completion)."""
        return ~self.recorded_mask & ~np.eye(len(self.models), dtype=bool)

    @property
    def mean_scores(self) -> np.ndarray:
        """float64 ``[N]``: each answer's mean recorded score over the reviews it appears in."""
        return np.nanmean(self.scores, axis=1)

    def completed_scores(self) -> np.ndarray:
        """``scores`` with each unrecorded pair (i, j) filled by ``(mean_scores[i], mean_scores[j])``."""
        filled = self.scores.copy()
        mask = self.imputed_mask
        filled[mask] = np.broadcast_to(self.mean_scores[:, None], filled.shape)[mask]
        return filled

    def margins(self, completed: bool = False) -> np.ndarray:
        """The comparison matrix float64 ``[N, N]`` of :mod:`llmblend.rank.aggregate`:
        ``M[i, j] = score_i − score_j`` of the pair's review (antisymmetric); NaN where not scored
        (unrecorded pairs unless ``completed``) and on the diagonal."""
        s = self.completed_scores() if completed else self.scores
        return s - s.T

    def reference_scores(self, completed: bool = False) -> np.ndarray:
        """float64 ``[N]``, summing to 0: least squares over the score margins (recorded pairs only,
        or the completed matrix). The recorded pairs connect all 7 answers, so one scale."""
        return least_squares(self.margins(completed))

    def reference_ranking(self, completed: bool = False) -> tuple[str, ...]:
        """The models best first by :meth:`reference_scores` (equal scores keep the order of ``models``)."""
        scores = self.reference_scores(completed)
        order = sorted(range(len(self.models)), key=lambda i: -round(float(scores[i]), 9))
        return tuple(self.models[i] for i in order)

    def pair(self, model_a: str, model_b: str, *, recorded_only: bool = False) -> PairScores:
        """The scores of ``model_a`` vs ``model_b`` in that order; imputed when the pair has no review
        (a LookupError instead when ``recorded_only``)."""
        i, j = self.index(model_a), self.index(model_b)
        if i == j:
            raise ValueError(f"a pair needs two different models, got {model_a!r} twice")
        review = self.reviews.get((i, j)) or self.reviews.get((j, i))
        if review is not None:
            first = model_a if (i, j) in self.reviews else model_b
            return PairScores(
                self.question_id,
                model_a,
                model_b,
                float(self.scores[i, j]),
                float(self.scores[j, i]),
                False,
                review,
                first,
            )
        if recorded_only:
            raise LookupError(
                f"no recorded GPT-4 review of {model_a} vs {model_b} on question {self.question_id}"
            )
        means = self.mean_scores
        return PairScores(self.question_id, model_a, model_b, float(means[i]), float(means[j]), True)

    def recorded_pairs(self) -> list[PairScores]:
        """Every recorded pair, in the review's order (answer 1 as ``model_a``)."""
        return [self.pair(self.models[i], self.models[j]) for i, j in sorted(self.reviews)]

    def imputed_pairs(self) -> list[PairScores]:
        """Every unrecorded pair (i < j in :attr:`models` order), with imputed scores."""
        mask = self.imputed_mask
        n = len(self.models)
        return [
            self.pair(self.models[i], self.models[j]) for i in range(n) for j in range(i + 1, n) if mask[i, j]
        ]

    def example(self) -> Example:
        """The question as an :class:`~llmblend.types.Example`: the 7 candidates (score ``gpt4_mean``)
        and the recorded verdicts as ``cmp_results`` ("model1,model2" in the review's order)."""
        means = self.mean_scores
        candidates = [
            Candidate(model, text, {"gpt4_mean": float(means[i])})
            for i, (model, text) in enumerate(zip(self.models, self.answers, strict=True))
        ]
        cmp = {f"{p.model_a},{p.model_b}": p.verdict for p in self.recorded_pairs()}
        return Example(
            self.example_id,
            self.text,
            candidates=candidates,
            cmp_results=cmp,
            extra={"category": self.category},
        )


@dataclass(frozen=True, eq=False)
class ReplayData:
    """All questions (by ``question_id`` order), the reviewed ``models`` and the answer sets left out
    for having no reviews (``unreviewed_models``: gpt-4)."""

    questions: tuple[ReplayQuestion, ...]
    models: tuple[str, ...]
    unreviewed_models: tuple[str, ...]
    _by_id: dict[int, ReplayQuestion] = field(init=False, repr=False)
    _by_text: dict[str, list[tuple[ReplayQuestion, int]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_text: dict[str, list[tuple[ReplayQuestion, int]]] = {}
        for q in self.questions:
            for i, text in enumerate(q.answers):
                by_text.setdefault(text.strip(), []).append((q, i))
        object.__setattr__(self, "_by_id", {q.question_id: q for q in self.questions})
        object.__setattr__(self, "_by_text", by_text)

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Iterator[ReplayQuestion]:
        return iter(self.questions)

    def question(self, question_id: int) -> ReplayQuestion:
        """The question with that id; KeyError naming the id range otherwise."""
        try:
            return self._by_id[question_id]
        except KeyError:
            ids = sorted(self._by_id)
            raise KeyError(f"no Vicuna-80 question {question_id!r}; ids run {ids[0]}..{ids[-1]}") from None

    def locate(self, answer: str) -> list[tuple[ReplayQuestion, int]]:
        """The (question, answer index) pairs whose answer text equals ``answer`` (both stripped)."""
        return list(self._by_text.get(answer.strip(), ()))

    def examples(self) -> list[Example]:
        """Every question as an :class:`~llmblend.types.Example` (see :meth:`ReplayQuestion.example`)."""
        return [q.example() for q in self.questions]


def load_replay(data_dir: str | Path | None = None) -> ReplayData:
    """Vicuna-80's questions, reviewed answers and GPT-4 review scores from the shared data folder.

    ``data_dir`` is the shared data folder (default :func:`~llmblend.data.sources.locate_data_dir`).
    Model names are the answer files' stems (``answer_gpt35.jsonl`` → ``gpt35``), as in
    :mod:`llmblend.data.sources.vicuna80`; reviews name answers by ``answer_id``. A review naming an
    unknown answer, answers of another question, or a pair reviewed twice is a ValueError.
    """
    folder = require_file(locate_data_dir(data_dir), "vicuna80")
    texts: dict[str, dict[int, str]] = {}
    answer_of: dict[str, tuple[str, int]] = {}  # answer_id → (model, question_id)
    for path in sorted((folder / "answer").glob("answer_*.jsonl")):
        model = path.name.removeprefix("answer_").removesuffix(".jsonl")
        for record in read_jsonl(path):
            texts.setdefault(model, {})[record["question_id"]] = record["text"]
            answer_of[record["answer_id"]] = (model, record["question_id"])
    reviews: dict[int, dict[tuple[str, str], tuple[float, float, str]]] = {}
    for path in sorted((folder / "review").glob("*/review_*.jsonl")):
        for record in read_jsonl(path):
            qid = record["question_id"]
            pair = []
            for key in ("answer1_id", "answer2_id"):
                if record[key] not in answer_of:
                    raise ValueError(
                        f"{path}: review {record.get('review_id')} names unknown answer {record[key]!r}"
                    )
                model, answer_qid = answer_of[record[key]]
                if answer_qid != qid:
                    raise ValueError(
                        f"{path}: review {record.get('review_id')} of question {qid} names an answer "
                        f"to question {answer_qid}"
                    )
                pair.append(model)
            first, second = pair
            by_pair = reviews.setdefault(qid, {})
            if (first, second) in by_pair or (second, first) in by_pair:
                raise ValueError(f"{path}: question {qid} has a second review of {first} vs {second}")
            s1, s2 = (float(s) for s in record["score"])
            by_pair[(first, second)] = (s1, s2, str(record.get("review_id", "")))
    reviewed = sorted({m for by_pair in reviews.values() for pair in by_pair for m in pair})
    unreviewed = tuple(sorted(set(texts) - set(reviewed)))
    questions = []
    for record in read_jsonl(folder / "question.jsonl"):
        qid = record["question_id"]
        models = tuple(m for m in reviewed if qid in texts[m])
        n = len(models)
        scores = np.full((n, n), np.nan)
        ids: dict[tuple[int, int], str] = {}
        for (first, second), (s1, s2, review_id) in reviews.get(qid, {}).items():
            i, j = models.index(first), models.index(second)
            scores[i, j], scores[j, i] = s1, s2
            ids[(i, j)] = review_id
        scores.setflags(write=False)
        questions.append(
            ReplayQuestion(
                qid,
                record["text"],
                str(record.get("category", "")),
                models,
                tuple(texts[m][qid] for m in models),
                scores,
                ids,
            )
        )
    questions.sort(key=lambda q: q.question_id)
    return ReplayData(tuple(questions), tuple(reviewed), unreviewed)


# ---------------------------------------------------------------- replies


def _softmax_logprobs(logits: Mapping[str, float]) -> dict[str, float]:
    top = max(logits.values())
    log_total = top + math.log(sum(math.exp(v - top) for v in logits.values()))
    return {token: value - log_total for token, value in logits.items()}


def verdict_logprobs(prompt: JudgePrompt, score_a: float, score_b: float) -> dict[str, float]:
    """**Synthetic** log-probabilities of the verdict token, from the score difference alone.

    With ``d = (score_a − score_b) / 2``: MT-bench's token after ``[[`` is a softmax over
    ``{A: d, B: −d, C: 0}``; GPT-Rank's leading digit over ``{1: d, 2: −d, t: 0, o: OTHER_TIE_LOGIT}``
    where ``t`` is the tie digit the scores give ("3" Same good when the shared mean is at least
    ``GOOD_SCORE``, else "4" Same bad) and ``o`` the other. The replayed verdict is always among the
    most probable tokens (all three share the top at d = 0). GPT-4 gave no such probabilities: use
    these to exercise logprob code paths and soft-vote strategies, not as a model of GPT-4.
    """
    d = (score_a - score_b) / 2
    if prompt == "mt-bench":
        return _softmax_logprobs({"A": d, "B": -d, "C": 0.0})
    good = (score_a + score_b) / 2 >= GOOD_SCORE
    tie, other = ("3", "4") if good else ("4", "3")
    return _softmax_logprobs({"1": d, "2": -d, tie: 0.0, other: OTHER_TIE_LOGIT})


_GPT_RANK_REPLIES: Final = {
    "A is better": "1. A is better",
    "B is better": "2. B is better",
    "Same good": "3. Same good",
    "Same bad": "4. Same bad",
}


def judge_reply(prompt: JudgePrompt, pair: PairScores) -> str:
    """The judge's reply about ``pair`` shown as (A, B) = (``model_a``, ``model_b``)."""
    position = verdict(pair.score_a, pair.score_b)
    if prompt == "gpt-rank":
        return _GPT_RANK_REPLIES[position]
    source = "Imputed from GPT-4's mean scores" if pair.imputed else "Replayed GPT-4 review"
    said = f"{source}: Assistant A scored {pair.score_a:g} and Assistant B scored {pair.score_b:g}"
    if position == "A is better":
        return f"{said}, so Assistant A is better. [[A]]"
    if position == "B is better":
        return f"{said}, so Assistant B is better. [[B]]"
    return f"{said}, so it is a tie. [[C]]"


def reply_tokens(text: str) -> list[str]:
    """The reply split into tokens (what usage counts and logprobs list); they join back to ``text``."""
    return _TOKEN.findall(text)


def _verdict_index(prompt: JudgePrompt, tokens: Sequence[str]) -> int | None:
    if prompt == "gpt-rank":
        return 0 if tokens else None
    marks = [k for k, t in enumerate(tokens) if t.strip() == "[["]
    return marks[-1] + 1 if marks and marks[-1] + 1 < len(tokens) else None


def _logprob_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(prompt: JudgePrompt, pair: PairScores, tokens: Sequence[str], top: int) -> dict[str, Any]:
    """``choices[0].logprobs`` of the OpenAI chat API for ``tokens``: every token certain (logprob 0)
    except the verdict token, which gets :func:`verdict_logprobs`; ``top`` alternatives each, best first."""
    verdict_at = _verdict_index(prompt, tokens)
    content = []
    for k, token in enumerate(tokens):
        if k == verdict_at:
            dist = verdict_logprobs(prompt, pair.score_a, pair.score_b)
            chosen = token.strip()
            ranked = sorted(dist, key=lambda t: (-dist[t], t != chosen))
            entry = _logprob_entry(token, dist[chosen])
            entry["top_logprobs"] = [_logprob_entry(t, dist[t]) for t in ranked[:top]]
        else:
            entry = _logprob_entry(token, 0.0)
            entry["top_logprobs"] = [_logprob_entry(token, 0.0)][:top]
        content.append(entry)
    return {"content": content, "refusal": None}


# ---------------------------------------------------------------- the server


@dataclass(frozen=True, slots=True)
class ServedJudgement:
    """One judge request answered: which answers were shown as A and B, and the positional verdict."""

    question_id: int
    model_a: str
    model_b: str
    prompt: JudgePrompt
    verdict: str
    imputed: bool


class JudgeRequestError(ValueError):
    """A request the replay judge cannot answer; becomes an OpenAI-shaped 400 (or ``status``)."""

    def __init__(self, message: str, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _snippet(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "…")


class ReplayJudge:
    """GPT-4's recorded Vicuna-80 verdicts behind an OpenAI-compatible HTTP judge on 127.0.0.1.

    ``data`` is a :class:`ReplayData` or the shared data folder (None: found as usual).
    ``recorded_only``: refuse pairs without a review instead of answering from the imputed
    completion. ``refusal_status`` is the HTTP status of a request about a pair the judge cannot
    answer (an unknown answer, answers of two questions, an unrecorded pair under ``recorded_only``):
    400 by default, as OpenAI answers a bad request; malformed requests are always 400. A judge with
    soft verdicts that takes any 400 to a logprobs request as "this server refuses logprobs" (the
    fallback of ``PairwiseJudge(soft=True)``) stops asking for them after the first refused pair:
    give such a run ``refusal_status=422``. Use as a context manager (or :meth:`start` / :meth:`stop`)::

        with ReplayJudge(data_dir) as judge:
            backend = OpenAIBackend(name="gpt-4-replay", base_url=judge.base_url)

    Counters (thread-safe; :meth:`reset` zeroes them): ``calls`` — chat-completion requests answered,
    refusals included; ``errors`` — those refused; ``served`` — a :class:`ServedJudgement` per
    answered verdict; ``prompt_tokens`` / ``completion_tokens`` — the usage reported.
    :meth:`respond` is the request → reply function itself, usable without HTTP.
    """

    def __init__(
        self,
        data: ReplayData | str | Path | None = None,
        *,
        recorded_only: bool = False,
        refusal_status: int = 400,
        model: str = DEFAULT_MODEL,
    ) -> None:
        if isinstance(refusal_status, bool) or not isinstance(refusal_status, int):
            raise ValueError(f"refusal_status must be an HTTP status (400..499), got {refusal_status!r}")
        if not 400 <= refusal_status <= 499 or refusal_status in (401, 403, 408, 429):
            raise ValueError(
                f"refusal_status must be a client error that clients do not retry or take for an auth "
                f"failure (400, 404, 422, ...), got {refusal_status}"
            )
        self.data = data if isinstance(data, ReplayData) else load_replay(data)
        self.recorded_only = recorded_only
        self.refusal_status = refusal_status
        self.model = model
        self._lock = threading.Lock()
        self.calls = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.served: list[ServedJudgement] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        where = self.base_url if self.port is not None else "not started"
        return f"ReplayJudge({where}, questions={len(self.data)}, recorded_only={self.recorded_only})"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` once started."""
        if self.port is None:
            raise RuntimeError("the replay judge is not started: use `with ReplayJudge(...)` or .start()")
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- lifecycle ----

    def start(self) -> ReplayJudge:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.judge = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-judge", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None
        self.port = None

    def __enter__(self) -> ReplayJudge:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Zero the counters (between two strategies measured on one server)."""
        with self._lock:
            self.calls = self.errors = self.prompt_tokens = self.completion_tokens = 0
            self.served = []

    # ---- answering ----

    def models_list(self) -> dict[str, Any]:
        """The body of ``GET /v1/models``."""
        return {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "replay"}],
        }

    def respond(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``(status, JSON body)`` for a chat-completion request body; counts the call."""
        try:
            status, reply = 200, self._completion(body)
        except JudgeRequestError as exc:
            status, reply = (
                exc.status,
                {
                    "error": {
                        "message": str(exc),
                        "type": "invalid_request_error",
                        "param": None,
                        "code": exc.code,
                    }
                },
            )
        with self._lock:
            self.calls += 1
            if status != 200:
                self.errors += 1
            else:
                self.prompt_tokens += reply["usage"]["prompt_tokens"]
                self.completion_tokens += reply["usage"]["completion_tokens"]
        return status, reply

    def find_pair(self, first: str, second: str) -> tuple[ReplayQuestion, int, int]:
        """The question and answer indices of the answers shown as A (``first``) and B (``second``)."""
        shown = {}
        for slot, text in (("A", first), ("B", second)):
            found = self.data.locate(text)
            if not found:
                raise JudgeRequestError(
                    f"answer shown as {slot} is not a reviewed Vicuna-80 answer (exact text, whitespace "
                    f"stripped; {len(self.data.models)} answer sets, gpt-4's are not reviewed): "
                    f"{_snippet(text)}",
                    "answer_not_found",
                )
            shown[slot] = found
        common = {q.question_id for q, _ in shown["A"]} & {q.question_id for q, _ in shown["B"]}
        if not common:
            where = {
                slot: ", ".join(f"{q.models[i]} on question {q.question_id}" for q, i in found)
                for slot, found in shown.items()
            }
            raise JudgeRequestError(
                f"the answers shown as A ({where['A']}) and B ({where['B']}) answer different questions",
                "question_not_found",
            )
        qid = min(common)
        question = self.data.question(qid)
        i = next(k for q, k in shown["A"] if q.question_id == qid)
        j = next(k for q, k in shown["B"] if q.question_id == qid)
        if i == j:
            raise JudgeRequestError(
                f"the same answer ({question.models[i]} on question {qid}) is shown as both A and B",
                "same_answer",
            )
        return question, i, j

    def _completion(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise JudgeRequestError("the request body must be a JSON object", "invalid_body")
        if body.get("stream"):
            raise JudgeRequestError(
                "the replay judge does not stream; send stream=false", "stream_unsupported"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise JudgeRequestError("the request needs a non-empty 'messages' list", "invalid_messages")
        top = self._top_logprobs(body)
        texts = [_content_text(m.get("content")) for m in messages if isinstance(m, dict)]
        users = [
            _content_text(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        prompt_kind, first, second = _shown_answers(users[-1] if users else "")
        try:
            question, i, j = self.find_pair(first, second)
            pair = self._pair(question, i, j)
        except JudgeRequestError as exc:
            exc.status = self.refusal_status
            raise
        text = judge_reply(prompt_kind, pair)
        tokens = reply_tokens(text)
        limit = body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(tokens):
            tokens, finish = tokens[:limit], "length"
            text = "".join(tokens)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None if top is None else chat_logprobs(prompt_kind, pair, tokens, top),
        }
        usage = {"prompt_tokens": sum(len(t.split()) for t in texts), "completion_tokens": len(tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self._lock:
            served = ServedJudgement(
                question.question_id, pair.model_a, pair.model_b, prompt_kind, pair.verdict, pair.imputed
            )
            self.served.append(served)
            number = len(self.served)
        return {
            "id": f"chatcmpl-replay-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or self.model),
            "choices": [choice],
            "usage": usage,
        }

    def _pair(self, question: ReplayQuestion, i: int, j: int) -> PairScores:
        try:
            return question.pair(question.models[i], question.models[j], recorded_only=self.recorded_only)
        except LookupError:
            raise JudgeRequestError(
                f"no recorded GPT-4 review of {question.models[i]} vs {question.models[j]} on question "
                f"{question.question_id} (recorded_only=True refuses the imputed pairs)",
                "pair_not_recorded",
            ) from None

    @staticmethod
    def _top_logprobs(body: dict[str, Any]) -> int | None:
        """None without ``logprobs``; else the number of alternatives asked (``top_logprobs``, 0..20)."""
        if not body.get("logprobs"):
            if body.get("top_logprobs") is not None:
                raise JudgeRequestError("top_logprobs needs logprobs=true", "invalid_logprobs")
            return None
        top = body.get("top_logprobs", 0)
        if top is None:
            return 0
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise JudgeRequestError(
                f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {top!r}",
                "invalid_logprobs",
            )
        return top


def _shown_answers(user: str) -> tuple[JudgePrompt, str, str]:
    """(prompt kind, answer shown as A, answer shown as B) from the judge's user message."""
    match = _MT_BENCH_ANSWERS.search(user)
    if match:
        return "mt-bench", match.group(1), match.group(2)
    match = _GPT_RANK_ANSWERS.search(user)
    if match:
        return "gpt-rank", match.group(1), match.group(2)
    raise JudgeRequestError(
        "not a judge prompt the replay judge reads: the last user message has neither MT-bench pair-v2's "
        '"[The Start of Assistant A\'s Answer]" … B sections nor GPT-Rank\'s "Candidate A: " / '
        f'"Candidate B: " sections; it starts {_snippet(user)}',
        "not_a_judge_prompt",
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    judge: ReplayJudge

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up are not the server's problem: no tracebacks on stderr."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: a benchmark's thousands of calls reuse connections

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: access lines are noise in benchmark output."""

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, self.server.judge.models_list())
        else:
            self._not_found()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._not_found()
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        self._send_json(*self.server.judge.respond(body))

    def _not_found(self) -> None:
        message = f"no route {self.command} {self.path}; the replay judge serves POST /v1/chat/completions"
        self._send_json(
            404, {"error": {"message": message, "type": "invalid_request_error", "code": "not_found"}}
        )

    def _send_json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


# ---------------------------------------------------------------- the command line


def summary(data: ReplayData) -> list[str]:
    """Lines describing the data: counts, ties, and how often the completion changes the top answer."""
    recorded = [p for q in data for p in q.recorded_pairs()]
    imputed = [p for q in data for p in q.imputed_pairs()]
    ties = sum(p.score_a == p.score_b for p in recorded)
    imputed_ties = sum(p.score_a == p.score_b for p in imputed)
    same_top = sum(q.reference_ranking()[0] == q.reference_ranking(completed=True)[0] for q in data)
    spread = [np.nanmax(q.scores[i]) - np.nanmin(q.scores[i]) for q in data for i in range(len(q.models))]
    return [
        f"{len(data)} questions; reviewed models ({len(data.models)}): {', '.join(data.models)}; "
        f"unreviewed: {', '.join(data.unreviewed_models) or 'none'}",
        f"recorded pairs: {len(recorded)} ({len(recorded) / len(data):g} per question), "
        f"{ties} with equal scores; imputed pairs: {len(imputed)}, {imputed_ties} with equal means",
        f"one answer's scores across its reviews differ by {np.mean(spread):.2f} on average "
        f"(max {np.max(spread):g})",
        f"least-squares top answer the same recorded-only and completed on {same_top}/{len(data)} questions",
    ]


def _check(data: ReplayData, question_id: int) -> None:
    import httpx

    from llmblend.backends.base import as_messages
    from llmblend.eval.judge import TEMPLATES, JudgeItem

    q = data.question(question_id)
    recorded = q.recorded_pairs()
    shown = [
        recorded[0],
        next((p for p in recorded if p.score_a == p.score_b), recorded[1]),
        q.imputed_pairs()[0],
    ]
    with ReplayJudge(data) as judge, httpx.Client(timeout=10) as client:
        listed = client.get(judge.base_url + "/models").json()["data"]
        print(f"replay judge at {judge.base_url}; models: {[m['id'] for m in listed]}")
        print(f"question {q.question_id} ({q.category}): {q.text}")
        for pair in shown:
            kind = "imputed" if pair.imputed else f"review {pair.review_id}"
            print(f"\n{pair.model_a} {pair.score_a:g} vs {pair.model_b} {pair.score_b:g} ({kind})")
            for prompt in ("mt-bench", "gpt-rank"):
                for a, b in ((pair.model_a, pair.model_b), (pair.model_b, pair.model_a)):
                    item = JudgeItem(q.text, "", q.answers[q.index(a)], q.answers[q.index(b)], a, b)
                    messages = as_messages(TEMPLATES[prompt].build(item, item.answer_a, item.answer_b))
                    body = {
                        "model": "judge",
                        "messages": [{"role": m.role, "content": m.content} for m in messages],
                    }
                    reply = client.post(judge.base_url + "/chat/completions", json=body).json()
                    usage = reply["usage"]
                    print(
                        f"  {prompt:8} A={a:32} B={b:32} → {reply['choices'][0]['message']['content']!r} "
                        f"({usage['prompt_tokens']} + {usage['completion_tokens']} tokens)"
                    )
        print(f"\nreference (recorded): {q.reference_ranking()}")
        print(f"reference (completed): {q.reference_ranking(completed=True)}")
        print(f"{judge.calls} calls, {judge.errors} refused")
    with ReplayJudge(data, recorded_only=True) as strict, httpx.Client(timeout=10) as client:
        pair = q.imputed_pairs()[0]
        item = JudgeItem(
            q.text, "", q.answers[q.index(pair.model_a)], q.answers[q.index(pair.model_b)], "a", "b"
        )
        messages = as_messages(TEMPLATES["mt-bench"].build(item, item.answer_a, item.answer_b))
        body = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
        response = client.post(strict.base_url + "/chat/completions", json=body)
        print(f"recorded_only, imputed pair → {response.status_code}: {response.json()['error']['message']}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="the shared data folder")
    parser.add_argument("--check", action="store_true", help="start the server and ask a few pairs both ways")
    parser.add_argument("--question", type=int, default=1, help="the question --check asks about")
    parser.add_argument("--serve", action="store_true", help="serve until Ctrl-C")
    parser.add_argument("--recorded-only", action="store_true", help="with --serve: refuse unrecorded pairs")
    args = parser.parse_args(argv)
    data = load_replay(args.data_dir)
    for line in summary(data):
        print(line)
    if args.check:
        print()
        _check(data, args.question)
    if args.serve:
        with ReplayJudge(data, recorded_only=args.recorded_only) as judge:
            print(f"serving at {judge.base_url} (Ctrl-C stops)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()


if __name__ == "__main__":
    main()
