"""PairRanker on a cached ONNX graph starts without torch: tokenizer.json alone gives the same ids as
transformers, a second load finds the graph from the folder's files, and the module is built only
when something asks for it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from llmblend.rank.base import PairQuery
from llmblend.rank.pairranker import DEFAULT_MODEL_DIR, PairRanker
from llmblend.rank.tokenizer_file import TokenizerFile

INSTRUCTIONS = ["what is the capital of france", "write python code", "a"]
FIRST = ["paris, of course", "print('one two three')", "yes"]
SECOND = ["the capital of france is paris, the best city in the world", "it is not code", "no"]


def sample_texts(data_dir: Path) -> list[str]:
    """AlpacaEval's instructions (long, short, any script) and awkward texts."""
    lines = (data_dir / "alpaca_eval" / "instructions.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["instruction"] for line in lines]
    return [*texts, "", "   ", "héllo 👋 世界", "a\nb\tc", "x " * 3000, "<|candidate1|>already marked"]


def test_tokenizer_file_gives_transformers_ids(data_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference, ours = AutoTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR)), TokenizerFile(DEFAULT_MODEL_DIR)
    texts = sample_texts(data_dir)
    for max_length in (4, 37, 128, 512):
        expected = reference(texts, max_length=max_length, truncation=True)["input_ids"]
        assert ours(texts, max_length=max_length, truncation=True)["input_ids"] == expected
    for special in (True, False):
        expected = reference(texts, add_special_tokens=special, verbose=False)["input_ids"]
        assert ours(texts, add_special_tokens=special)["input_ids"] == expected
        one = reference(texts[2], add_special_tokens=special)["input_ids"]
        assert ours(texts[2], add_special_tokens=special)["input_ids"] == one
    lengths = reference(texts, add_special_tokens=False, return_length=True, verbose=False)["length"]
    assert ours(texts, add_special_tokens=False, return_length=True)["length"] == lengths
    assert ours.pad_token_id == reference.pad_token_id
    for token in ("<|source|>", "<|candidate1|>", "<|candidate2|>", "[SEP]"):
        assert ours.convert_tokens_to_ids(token) == reference.convert_tokens_to_ids(token)


def test_second_load_scores_from_the_cache_without_the_module(
    tiny_ranker_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBLEND_CACHE", str(tmp_path / "cache"))
    conversation = "user: hi\n\nassistant: " + "hello there " * 20 + "\n\nuser: and then?"
    firsts, seconds = [*FIRST, conversation], [*SECOND, "no"]
    sources = [*INSTRUCTIONS, "greet"]
    queries = [PairQuery(*triple) for triple in zip(sources, firsts, seconds, strict=True)]
    for runtime in ("onnx", "onnx-int8"):
        first = PairRanker.from_pretrained(tiny_ranker_dir, runtime=runtime)
        assert first._module is not None  # nothing cached yet: the torch path, which builds the graph
        expected = first.compare(sources, firsts, seconds)
        again = PairRanker.from_pretrained(tiny_ranker_dir, runtime=runtime)
        assert again._module is None and isinstance(again.tokenizer, TokenizerFile)
        assert again._pair_ids(queries) == first._pair_ids(queries)  # the conversation is cut from the left
        np.testing.assert_array_equal(again.compare(sources, firsts, seconds), expected)
        assert again._module is None, "scoring on a cached graph must not build the torch module"


def test_the_module_is_built_when_asked_for(
    tiny_ranker_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBLEND_CACHE", str(tmp_path / "cache"))
    expected = PairRanker.from_pretrained(tiny_ranker_dir, runtime="onnx").compare(
        INSTRUCTIONS, FIRST, SECOND
    )
    lazy = PairRanker.from_pretrained(tiny_ranker_dir, runtime="onnx")
    assert lazy._module is None
    lazy.save_pretrained(tmp_path / "saved")  # needs the module and transformers' tokenizer
    assert lazy._module is not None and not isinstance(lazy.tokenizer, TokenizerFile)
    lazy.runtime = "fp32"
    np.testing.assert_allclose(lazy.compare(INSTRUCTIONS, FIRST, SECOND), expected, atol=1e-4)
    reloaded = PairRanker.from_pretrained(tmp_path / "saved", runtime="onnx")
    np.testing.assert_allclose(reloaded.compare(INSTRUCTIONS, FIRST, SECOND), expected, atol=1e-6)


def test_changed_weights_are_not_served_an_old_graph(
    tiny_ranker_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBLEND_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_ranker_dir, folder)
    before = PairRanker.from_pretrained(folder, runtime="onnx").compare(INSTRUCTIONS, FIRST, SECOND)
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    name = next(key for key in state if key.startswith("head_layer") and key.endswith("weight"))
    state[name] = state[name] * -1.0
    save_file(state, folder / "model.safetensors")
    changed = PairRanker.from_pretrained(folder, runtime="onnx")
    assert changed._module is not None, "new files must not find the old files' graph"
    after = changed.compare(INSTRUCTIONS, FIRST, SECOND)
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_array_equal(
        PairRanker.from_pretrained(folder, runtime="onnx").compare(INSTRUCTIONS, FIRST, SECOND), after
    )


SCRIPT = """
import sys
from llmblend.rank.pairranker import PairRanker
ranker = PairRanker.default()
print(float(ranker.compare(["Name a colour."], ["Red."], ["I like turtles."])[0]))
print("torch" in sys.modules, "transformers" in sys.modules)
"""


def test_the_default_ranker_scores_without_importing_torch(tmp_path: Path) -> None:
    env = {**os.environ, "LLMBLEND_CACHE": str(tmp_path / "cache")}
    runs = [
        subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env) for _ in "12"
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    (first_score, first_imports), (second_score, second_imports) = (
        run.stdout.split("\n")[:2] for run in runs
    )
    assert first_imports == "True True"  # the first run builds the graph with torch
    assert second_imports == "False False"
    assert float(second_score) == float(first_score)


def test_a_files_digest_is_read_once_and_a_rewrite_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from llmblend.rank import onnx_runtime

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights one")
    old = weights.stat().st_mtime_ns - 10**10
    os.utime(weights, ns=(old, old))
    monkeypatch.setattr(onnx_runtime, "RACY_SECONDS", 0.0)  # remember even a file changed just now
    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(onnx_runtime.hashlib, "file_digest", lambda f, d: reads.append(1) or real(f, d))
    first = onnx_runtime.file_digest(weights, tmp_path / "cache")
    assert first == hashlib.sha256(b"weights one").digest()
    assert onnx_runtime.file_digest(weights, tmp_path / "cache") == first and len(reads) == 1
    # the same size and modification time, other bytes: the change time tells
    weights.write_bytes(b"weights two")
    os.utime(weights, ns=(old, old))
    assert onnx_runtime.file_digest(weights, tmp_path / "cache") == hashlib.sha256(b"weights two").digest()
    # a file changed just now is hashed on every call (a rewrite within the clock's step keeps a stamp)
    monkeypatch.setattr(onnx_runtime, "RACY_SECONDS", 2.0)
    fresh = tmp_path / "fresh.safetensors"
    fresh.write_bytes(b"new")
    onnx_runtime.file_digest(fresh, tmp_path / "cache")
    onnx_runtime.file_digest(fresh, tmp_path / "cache")
    assert len(reads) == 4
