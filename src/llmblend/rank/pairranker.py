"""PairRanker: the pairwise cross-encoder of LLM-Blender (§3).

The encoder reads ``<|source|> x <|candidate1|> y_i <|candidate2|> y_j`` in one sequence. The last
hidden states at the three special tokens (h_x, h_1, h_2) go through one shared head,
``Dropout → Linear(2H, H) → Tanh → Dropout → Linear(H, n_tasks)``: ``left = head([h_x; h_1])``,
``right = head([h_x; h_2])``, and the comparison logit is ``mean_over_tasks(left − right)`` (> 0:
candidate 1 is better). Each task is one metric the ranker learnt to compare by (§3.1).

With ``length_feature`` (our addition, off in PairRM checkpoints) each candidate also gets
``length_layer([h_x; φ(n)])`` added to its head output, where ``n`` is the candidate's token count
before truncation and ``φ(n) = log(1 + n) / 7``: the encoder only sees the first tokens of a long
answer, yet judges such as GPT-4 weigh how complete (long) an answer is. The layer reads the
instruction, so how much length matters can depend on what was asked.

Saved folders use the layout of the official ``llm-blender/PairRM-hf`` checkpoint (backbone under
``pretrained_model.*``, head under ``head_layer.*``, its config fields), plus an ``llmblend``
section in config.json; :meth:`PairRanker.from_pretrained` reads both.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmblend.errors import LlmblendError
from llmblend.hf_loading import pick_device
from llmblend.rank import hf
from llmblend.rank.base import CONFIG_KEY, PairQuery, RankItem, rank_items
from llmblend.rank.compact import load_weights, weight_files
from llmblend.rank.encoding import TokenCache, load_encoder, to_device
from llmblend.rank.onnx_runtime import (
    VARIANTS,
    cache_key,
    cached_graph_key,
    folder_key,
    onnx_module,
    remember_folder,
)
from llmblend.rank.tokenizer_file import TOKENIZER_FILE, TokenizerFile
from llmblend.types import (
    Example,
    Message,
    Ranking,
    is_flattened_conversation,
    prompt_text,
    split_conversations,
)

log = logging.getLogger(__name__)

SOURCE_TOKEN = "<|source|>"
CANDIDATE1_TOKEN = "<|candidate1|>"
CANDIDATE2_TOKEN = "<|candidate2|>"
CANDIDATE_TOKEN = "<|candidate|>"
SPECIAL_TOKENS = (SOURCE_TOKEN, CANDIDATE1_TOKEN, CANDIDATE2_TOKEN, CANDIDATE_TOKEN)
ARCHITECTURE = "pair-ranker"
#: How the forward pass runs at inference: torch fp32, torch with bf16 autocast, ONNX Runtime with
#: fused attention (fp32), or the same with int8 per-channel weights. Training always uses torch; an
#: ONNX graph is built from the weights at its first use, so change weights only on an fp32 ranker.
RUNTIMES = ("fp32", "bf16", "onnx", "onnx-int8")
#: The ranker that ships inside the package (see MODEL_CARD.md there) and the runtime it uses by
#: default: the fastest that loses at most 0.5 point of dev pairwise accuracy (bench_ranker_runtimes.py).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "pairranker-minilm"
DEFAULT_RUNTIME = "onnx-int8"
#: Runtimes whose result for a pair depends on its batch-mates: dynamic int8 quantization computes
#: one activation scale per tensor, i.e. over the whole batch (the same pair alone and in a batch of
#: three differed by up to 0.47 in logit). They score one pair per forward, so a pair's score never
#: depends on which batch, chunk, resume or worker it lands in.
PER_PAIR_RUNTIMES = frozenset({"onnx-int8"})
#: φ(n) = log(1 + n) / LENGTH_SCALE keeps the length feature of answers up to ~1,000 tokens in [0, 1].
LENGTH_SCALE = 7.0

#: Lengths of the official PairRM checkpoint (its model card's ``tokenize_pair``).
PAIRRM_LENGTHS = {"source_max_length": 1224, "candidate_max_length": 412, "max_length": 2048}


@dataclass(frozen=True, slots=True)
class PairRankerSettings:
    """What a PairRanker needs besides weights; stored under config.json's ``llmblend`` key.

    ``max_length`` (default ``source + 2 × candidate``) bounds the whole sequence: each candidate
    gets ``(max_length − len(source tokens)) // 2`` tokens, so source budget left unused goes to
    the candidates (§3.1). ``task_names`` name the head's outputs (one per training metric).
    ``length_feature`` adds the untruncated length of each candidate as an input (module docstring).
    ``temperature`` calibrates :meth:`PairRanker.probability`: P(a better) = sigmoid(margin / T),
    fitted on held-out pairs by ``llmblend train calibrate`` (1.0: the raw logit).
    """

    source_max_length: int = 128
    candidate_max_length: int = 128
    max_length: int | None = None
    n_tasks: int = 1
    dropout: float = 0.05
    task_names: tuple[str, ...] = ("preference",)
    token_ids: dict[str, int] = field(default_factory=dict)
    length_feature: bool = False
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number above 0, got {self.temperature}")
        for name in ("source_max_length", "candidate_max_length", "n_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length is None:
            object.__setattr__(self, "max_length", self.source_max_length + 2 * self.candidate_max_length)
        if len(self.task_names) != self.n_tasks:
            raise ValueError(f"task_names {list(self.task_names)} must name all {self.n_tasks} head outputs")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PairRankerSettings:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "task_names" in known:
            known["task_names"] = tuple(known["task_names"])
        return cls(**known)


def default_task_names(n_tasks: int) -> tuple[str, ...]:
    """Names for head outputs that were not named: one "preference", or task0, task1, ..."""
    return ("preference",) if n_tasks == 1 else tuple(f"task{i}" for i in range(n_tasks))


def _module_class():
    """The nn.Module class, defined on first use so that importing this file needs no torch."""
    import torch
    from torch import nn

    class PairRankerModule(nn.Module):
        """Encoder + shared head (§3.1); ``forward`` returns ``(left, right)``, each [B, n_tasks]."""

        def __init__(
            self,
            encoder: nn.Module,
            n_tasks: int,
            dropout: float,
            token_ids: Sequence[int],
            length_feature: bool = False,
        ):
            super().__init__()
            hidden = encoder.config.hidden_size
            self.pretrained_model = encoder
            self.head_layer = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(2 * hidden, hidden),
                nn.Tanh(),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_tasks),
            )
            self.length_layer = (
                nn.Sequential(nn.Linear(hidden + 1, 64), nn.Tanh(), nn.Linear(64, n_tasks))
                if length_feature
                else None
            )
            self.source_id, self.candidate1_id, self.candidate2_id = token_ids

        def _states_at(self, states: torch.Tensor, input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
            """Hidden state at the first occurrence of ``token_id`` in each row: [B, H]."""
            first = (input_ids == token_id).int().argmax(dim=1)
            return states[torch.arange(states.shape[0], device=states.device), first]

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """``lengths``: [B, 2] φ(token count) of both candidates, needed iff ``length_feature``."""
            states = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask)[0]
            h_x = self._states_at(states, input_ids, self.source_id)
            h_1 = self._states_at(states, input_ids, self.candidate1_id)
            h_2 = self._states_at(states, input_ids, self.candidate2_id)
            left = self.head_layer(torch.cat([h_x, h_1], dim=-1))
            right = self.head_layer(torch.cat([h_x, h_2], dim=-1))
            if self.length_layer is not None:
                lengths = lengths.to(h_x.dtype)
                left = left + self.length_layer(torch.cat([h_x, lengths[:, :1]], dim=-1))
                right = right + self.length_layer(torch.cat([h_x, lengths[:, 1:]], dim=-1))
            return left, right

    return PairRankerModule


def _strip_special(text: str) -> str:
    """Remove our marker strings from user text, so a marker only ever appears where we put it."""
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "")
    return text


class PairRanker:
    """The pairwise ranker: score ordered pairs, compare two answers, rank N candidates (§3).

    Build one with :meth:`from_backbone` (a fresh head on any HF encoder) or
    :meth:`from_pretrained` (an llmblend folder, the PairRM-hf layout, or a hub id).
    """

    name = "pairranker"

    def __init__(
        self,
        module,
        tokenizer,
        settings: PairRankerSettings,
        *,
        device: str | None = None,
        batch_size: int = 16,
        runtime: str = "fp32",
        strategy: str = "max-logits",
        load_parts: Callable[[], tuple[Any, Any]] | None = None,
        onnx_key: str | None = None,
    ) -> None:
        """``module`` None defers it to ``load_parts()`` (``(module, tokenizer)``, called on the
        first use of :attr:`module`); ``onnx_key`` names the cached ONNX graph of these weights."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        if module is None and load_parts is None:
            raise ValueError("PairRanker needs a module or load_parts to build one")
        self.tokenizer = tokenizer
        self.config = settings
        self._device_name = device
        self._device = None
        self._module = None
        self._load_parts = load_parts
        if module is not None:
            self._place(module)
        self.batch_size = batch_size
        self.runtime = runtime
        self.strategy = strategy
        self._onnx = None  # built on first use by an ONNX runtime
        self._onnx_key = onnx_key
        #: Token ids of sources and candidates already seen (strategies' rounds repeat texts).
        self.token_cache = TokenCache()

    @property
    def device(self):
        """The torch device of the module (picked on first use: a ranker on ONNX needs none)."""
        if self._device is None:
            self._device = pick_device(self._device_name)
        return self._device

    @property
    def module(self):
        """The torch module; a ranker loaded for a cached ONNX graph builds it (and takes the
        transformers tokenizer, which gives the same ids) only when something needs it."""
        if self._module is None:
            module, self.tokenizer = self._load_parts()
            self._place(module)
        return self._module

    def _place(self, module) -> None:
        self._module = module.to(self.device)
        self._module.eval()

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        backbone: str | Path,
        *,
        device: str | None = None,
        options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> PairRanker:
        """A new ranker: the pretrained encoder ``backbone`` with special tokens and a random head.

        ``settings`` are :class:`PairRankerSettings` fields; ``options`` the runtime ones
        (``batch_size``, ``runtime``, ``strategy``).
        """
        hf.require_torch("PairRanker")
        folder = hf.resolve_model_dir(backbone)
        tokenizer = hf.load_tokenizer(folder)
        encoder = load_encoder(folder)
        token_ids = hf.add_special_tokens(tokenizer, encoder, SPECIAL_TOKENS)
        n_tasks = settings.pop("n_tasks", 1)
        task_names = tuple(settings.pop("task_names", None) or default_task_names(n_tasks))
        config = PairRankerSettings(n_tasks=n_tasks, task_names=task_names, token_ids=token_ids, **settings)
        module = cls._build_module(encoder, config)
        return cls(module, tokenizer, config, device=device, **(options or {}))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str | None = None, **options: Any
    ) -> PairRanker:
        """Load an llmblend PairRanker folder, a PairRM-hf layout folder, or a hub id of either.

        With an ONNX runtime whose graph of these files is already cached, the ranker scores
        without torch or transformers (a start in about a second instead of six): the graph comes
        from the cache, the tokens from ``tokenizer.json``, and the torch module is built only if
        something asks for it. Otherwise the folder's files are recorded with the graph's key, so
        the next load starts that way."""
        folder = hf.resolve_model_dir(name_or_path)
        settings = cls._settings_from_config(folder, hf.read_config(folder))
        runtime = options.get("runtime", "fp32")
        files_key = folder_key(weight_files(folder), runtime) if runtime in VARIANTS else None
        graph_key = cached_graph_key(files_key) if files_key else None
        if graph_key and (folder / TOKENIZER_FILE).is_file():
            tokenizer = TokenizerFile(folder)
            cls._check_tokens(folder, tokenizer, settings)
            parts = lambda: cls._load_parts(folder, settings)  # noqa: E731
            return cls(
                None, tokenizer, settings, device=device, load_parts=parts, onnx_key=graph_key, **options
            )
        ranker = cls(*cls._load_parts(folder, settings), settings, device=device, **options)
        if files_key:  # the weights were just read: their graph key serves the first forward too
            ranker._onnx_key = cache_key(ranker, runtime)
            remember_folder(files_key, ranker._onnx_key)
        return ranker

    @classmethod
    def _load_parts(cls, folder: Path, settings: PairRankerSettings) -> tuple[Any, Any]:
        """The torch module with the folder's weights, and its transformers tokenizer."""
        hf.require_torch("PairRanker")
        from transformers import AutoConfig

        encoder = load_encoder(folder, config=AutoConfig.from_pretrained(str(folder)))
        module = cls._build_module(encoder, settings)
        state = load_weights(folder)
        hf.load_into(module.pretrained_model, hf.split_state_dict(state, "pretrained_model"), str(folder))
        hf.load_into(module.head_layer, hf.split_state_dict(state, "head_layer"), str(folder))
        if module.length_layer is not None:
            hf.load_into(module.length_layer, hf.split_state_dict(state, "length_layer"), str(folder))
        tokenizer = hf.load_tokenizer(folder)
        cls._check_tokens(folder, tokenizer, settings)
        return module, tokenizer

    @classmethod
    def default(cls, *, device: str | None = None, **options: Any) -> PairRanker:
        """The ranker that ships with llmblend: MiniLM-L6 trained on alpaca-blend, offline (MODEL_CARD.md).

        ``options`` as for :meth:`from_pretrained`; ``runtime`` defaults to :data:`DEFAULT_RUNTIME`
        and ``strategy`` to ``sparse-refine`` (full-matrix quality on dev with 66 instead of 110
        forwards for 11 candidates).
        """
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise LlmblendError(
                f"the packaged default ranker is missing from {DEFAULT_MODEL_DIR}; reinstall llmblend "
                "(pip install --force-reinstall llmblend) or name a model folder"
            )
        options.setdefault("runtime", DEFAULT_RUNTIME)
        options.setdefault("strategy", "sparse-refine")
        return cls.from_pretrained(DEFAULT_MODEL_DIR, device=device, **options)

    @staticmethod
    def _settings_from_config(folder: Path, config: dict[str, Any]) -> PairRankerSettings:
        if CONFIG_KEY in config:
            return PairRankerSettings.from_dict(hf.read_settings(folder, ARCHITECTURE))
        if "source_prefix_id" in config:  # the official llm-blender/PairRM-hf layout
            n_tasks = int(config.get("n_tasks", 1))
            token_ids = {
                SOURCE_TOKEN: config["source_prefix_id"],
                CANDIDATE1_TOKEN: config["cand1_prefix_id"],
                CANDIDATE2_TOKEN: config["cand2_prefix_id"],
            }
            if "cand_prefix_id" in config:
                token_ids[CANDIDATE_TOKEN] = config["cand_prefix_id"]
            return PairRankerSettings(
                **PAIRRM_LENGTHS,
                n_tasks=n_tasks,
                dropout=float(config.get("drop_out", 0.05)),
                task_names=default_task_names(n_tasks),
                token_ids=token_ids,
            )
        raise LlmblendError(
            f"{folder} is not a PairRanker: config.json has neither an '{CONFIG_KEY}' section nor PairRM's "
            "'source_prefix_id'. To start from a plain encoder use PairRanker.from_backbone()."
        )

    @classmethod
    def _build_module(cls, encoder, settings: PairRankerSettings):
        marker_ids = cls._marker_ids(settings)
        return _module_class()(
            encoder, settings.n_tasks, settings.dropout, marker_ids, settings.length_feature
        )

    @staticmethod
    def _marker_ids(settings: PairRankerSettings) -> tuple[int, int, int]:
        ids = settings.token_ids
        return ids[SOURCE_TOKEN], ids[CANDIDATE1_TOKEN], ids[CANDIDATE2_TOKEN]

    @staticmethod
    def _check_tokens(folder: Path, tokenizer, settings: PairRankerSettings) -> None:
        for token, expected in settings.token_ids.items():
            actual = tokenizer.convert_tokens_to_ids(token)
            if actual != expected:
                raise LlmblendError(
                    f"{folder}: the tokenizer maps {token} to id {actual}, the config says {expected}; "
                    "the tokenizer files do not belong to these weights"
                )

    # ---- saving --------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        values = asdict(self.config)
        values["task_names"] = list(self.config.task_names)
        return {"architecture": ARCHITECTURE, **values}

    @property
    def n_tasks(self) -> int:
        return self.config.n_tasks

    def folder_config(self) -> dict[str, Any]:
        """config.json's body: the backbone's config plus the PairRM-hf fields."""
        ids = self.config.token_ids
        config = self.module.pretrained_model.config.to_dict()
        config.update(
            source_prefix_id=ids[SOURCE_TOKEN],
            cand1_prefix_id=ids[CANDIDATE1_TOKEN],
            cand2_prefix_id=ids[CANDIDATE2_TOKEN],
            cand_prefix_id=ids.get(CANDIDATE_TOKEN),
            n_tasks=self.config.n_tasks,
            drop_out=self.config.dropout,
        )
        return config

    def save_pretrained(self, path: str | Path) -> None:
        """Write a self-describing HF folder in the PairRM-hf layout (config, tokenizer, safetensors)."""
        state = self.module.state_dict()  # first: a lazily loaded module brings its tokenizer
        hf.save_model_folder(
            path,
            backbone_config=self.folder_config(),
            settings=self.settings(),
            tokenizer=self.tokenizer,
            state=state,
        )

    # ---- encoding and scoring ------------------------------------------------------------------

    def _encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(texts, max_length=max_length, truncation=True)["input_ids"]

    def _source_ids(self, source: str) -> list[int]:
        """The source's tokens (§3.1), cut to ``source_max_length``; see :meth:`_cut`."""
        budget = self.config.source_max_length
        key = (SOURCE_TOKEN, budget, source)
        return self.token_cache.ids([key], lambda _: [self._cut(SOURCE_TOKEN, source, budget)])[0]

    def _encode_candidates(self, marker: str, texts: list[str], budget: int) -> list[list[int]]:
        """Each text's tokens within ``budget``, from the token cache where it has them."""
        keys = [(marker, budget, text) for text in texts]
        return self.token_cache.ids(
            keys, lambda missing: self._tokenize_candidates(marker, [k[2] for k in missing], budget)
        )

    def _tokenize_candidates(self, marker: str, texts: list[str], budget: int) -> list[list[int]]:
        """Each text's tokens within ``budget`` (plain texts in one batched call)."""
        turns = {i for i, text in enumerate(texts) if is_flattened_conversation(text)}
        plain = [i for i in range(len(texts)) if i not in turns]
        ids = {i: self._cut(marker, texts[i], budget) for i in turns}
        encoded = self._encode([marker + _strip_special(texts[i]) for i in plain], budget) if plain else []
        ids.update(zip(plain, encoded, strict=True))
        return [ids[i] for i in range(len(texts))]

    def _cut(self, marker: str, text: str, budget: int) -> list[int]:
        """``marker + text`` as tokens within ``budget``: plain text keeps its start; a conversation
        (:func:`~llmblend.types.is_flattened_conversation`) keeps its latest turns, cut from the
        left at a token boundary (LLM-Blender's ``compare_conversations``), the marker kept first."""
        marked = marker + _strip_special(text)
        if not is_flattened_conversation(text):
            return self._encode([marked], budget)[0]
        plain = self.tokenizer(marked, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(marked, add_special_tokens=True)["input_ids"]
        if len(full) <= budget:
            return full
        start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
        head, tail = full[:start], full[start + len(plain) :]
        keep = max(budget - len(head) - len(tail) - 1, 1)
        return head + plain[:1] + plain[1:][-keep:] + tail

    def _pair_ids(self, queries: Sequence[PairQuery]) -> list[list[int]]:
        """Token ids of each pair, tokenising every distinct text once per source (§3.1 input)."""
        config = self.config
        by_source: dict[str, list[int]] = {}
        for index, query in enumerate(queries):
            by_source.setdefault(query.source, []).append(index)
        ids: list[list[int]] = [[] for _ in queries]
        for source, indices in by_source.items():
            source_ids = self._source_ids(source)
            budget = max((config.max_length - len(source_ids)) // 2, 4)
            texts = sorted({t for i in indices for t in (queries[i].first, queries[i].second)})
            first = dict(zip(texts, self._encode_candidates(CANDIDATE1_TOKEN, texts, budget), strict=True))
            second = dict(zip(texts, self._encode_candidates(CANDIDATE2_TOKEN, texts, budget), strict=True))
            for i in indices:
                ids[i] = source_ids + first[queries[i].first] + second[queries[i].second]
        return ids

    def _pair_lengths(self, queries: Sequence[PairQuery]) -> np.ndarray | None:
        """φ(untruncated token count) of both candidates of each pair: [Q, 2], or None if unused."""
        if not self.config.length_feature:
            return None
        texts = sorted({t for q in queries for t in (q.first, q.second)})
        counts = self.tokenizer(texts, add_special_tokens=False, return_length=True, verbose=False)["length"]
        phi = dict(zip(texts, np.log1p(np.asarray(counts, dtype=np.float64)) / LENGTH_SCALE, strict=True))
        return np.array([[phi[q.first], phi[q.second]] for q in queries], dtype=np.float32).reshape(-1, 2)

    def encode_pairs(self, queries: Sequence[PairQuery]) -> dict[str, Any]:
        """Padded ``input_ids``, ``attention_mask`` (and ``lengths``) as CPU tensors, for the module."""
        import torch

        batch = self._pad(self._pair_ids(queries), self._pair_lengths(queries))
        return {key: torch.from_numpy(value) for key, value in batch.items()}

    def _pad(self, ids: list[list[int]], lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The pairs padded on the right to the longest, as numpy arrays (int64 ids and mask)."""
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if lengths is not None:
            batch["lengths"] = lengths
        return batch

    def pair_logits(self, queries: Sequence[PairQuery], *, tasks: bool = False) -> np.ndarray:
        """Raw single-order logits f(first, second): float64 [Q], or [Q, n_tasks] with ``tasks``.

        One forward per batch of ``batch_size`` pairs (one pair per forward for the runtimes in
        :data:`PER_PAIR_RUNTIMES`); pairs are sorted by length first so a batch holds similar
        lengths and little padding. A pair's logit does not depend on the other queries.
        """
        ids, lengths = self._pair_ids(queries), self._pair_lengths(queries)
        out = np.zeros((len(ids), self.config.n_tasks), dtype=np.float64)
        by_length = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        batch_size = 1 if self.runtime in PER_PAIR_RUNTIMES else self.batch_size
        with self._inference():
            for chunk in hf.chunks(by_length, batch_size):
                rows = list(chunk)
                out[rows] = self._forward(
                    self._pad([ids[i] for i in rows], None if lengths is None else lengths[rows])
                )
        return out if tasks else out.mean(axis=1)

    def _inference(self):
        if self.runtime.startswith("onnx"):
            return contextlib.nullcontext()
        return hf.inference(self.module, bf16=self.runtime == "bf16", device=self.device)

    def _forward(self, batch: dict[str, Any]) -> np.ndarray:
        """``left − right`` of one padded batch with the chosen runtime: [B, n_tasks]."""
        if self.runtime.startswith("onnx"):
            if self._onnx is None:
                self._onnx = onnx_module(self, self.runtime, key=self._onnx_key)
            left, right = self._onnx(**batch)
            return left - right
        import torch

        tensors = {key: torch.from_numpy(value) for key, value in batch.items()}
        left, right = self.module(**to_device(tensors, self.device))
        return (left - right).float().cpu().numpy()

    def compare_pairs(self, queries: Sequence[PairQuery]) -> np.ndarray:
        """Position-debiased comparisons ``(f(a, b) − f(b, a)) / 2`` (§3.2); > 0 means ``first`` wins.

        Both orders are scored in the same call. Each pair is evaluated in one canonical order of
        its two texts and the sign flipped for the other, so ``compare(a, b) == −compare(b, a)``
        exactly, whatever batch a pair lands in.
        """
        canonical = [q if q.first <= q.second else PairQuery(q.source, q.second, q.first) for q in queries]
        swapped = [PairQuery(q.source, q.second, q.first) for q in canonical]
        logits = self.pair_logits(canonical + swapped)
        half = (logits[: len(queries)] - logits[len(queries) :]) / 2
        sign = np.array([1.0 if q.first <= q.second else -1.0 for q in queries])
        return half * sign

    def compare_conversations(
        self, a: Sequence[Sequence[Message]], b: Sequence[Sequence[Message]]
    ) -> np.ndarray:
        """:meth:`compare` for pairs of conversations: the turns they share are the source (latest
        kept), what follows are the candidates (:func:`~llmblend.types.split_conversations`)."""
        if len(a) != len(b):
            raise ValueError(f"compare_conversations needs equal lengths, got {len(a)} and {len(b)}")
        split = [split_conversations(x, y) for x, y in zip(a, b, strict=True)]
        return self.compare(
            [prompt_text(s) for s, _, _ in split], [x for _, x, _ in split], [y for _, _, y in split]
        )

    def probability(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """P(``a[i]`` is better than ``b[i]``): sigmoid(compare / temperature), float64; calibrated
        when the settings carry a fitted temperature. Depends on the pair alone, never on other
        candidates, and ``probability(a, b) == 1 − probability(b, a)``."""
        margins = self.compare(instructions, a, b) / self.config.temperature
        return 1.0 / (1.0 + np.exp(-margins))

    def compare(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Debiased margins for answers ``a[i]`` vs ``b[i]`` to ``instructions[i]``; > 0: ``a`` better."""
        if not len(instructions) == len(a) == len(b):
            raise ValueError(f"compare needs equal lengths, got {len(instructions)}, {len(a)}, {len(b)}")
        return self.compare_pairs([PairQuery(*triple) for triple in zip(instructions, a, b, strict=True)])

    # ---- ranking -------------------------------------------------------------------------------

    def rank(
        self, examples: Sequence[Example], *, strategy: str | None = None, top_k: int | None = None
    ) -> list[Ranking]:
        """One ranking per example, all examples' pairs batched together (§3.2 strategies)."""
        from llmblend.rank.strategies import run_strategy

        return run_strategy(strategy or self.strategy, rank_items(examples), self.pair_logits, top_k=top_k)

    def best_of_n(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[str]], *, strategy: str | None = None
    ) -> list[int | None]:
        """The index of the best candidate for each instruction (None where there is none)."""
        if len(instructions) != len(candidates):
            raise ValueError(f"{len(instructions)} instructions but {len(candidates)} candidate lists")
        from llmblend.rank.strategies import run_strategy

        items = [RankItem(s, list(c)) for s, c in zip(instructions, candidates, strict=True)]
        rankings = run_strategy(strategy or self.strategy, items, self.pair_logits, top_k=1)
        return [r.best for r in rankings]
