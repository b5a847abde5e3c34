"""ONNX Runtime path of PairRanker: parity with torch, int8, fusion, the disk cache (tiny random BERT)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.rank import onnx_runtime  # noqa: E402
from llmblend.rank.base import PairQuery  # noqa: E402
from llmblend.rank.onnx_runtime import VARIANTS, cache_key, onnx_module  # noqa: E402
from llmblend.rank.pairranker import PairRanker  # noqa: E402

QUERIES = [
    PairQuery("what is the capital of france", "paris", "the capital of france is paris, the best city"),
    PairQuery("give a number", "four", "no"),
    PairQuery("a", "yes", "no"),
    PairQuery("write python code", "print('one two three')", "it is not code"),
    PairQuery("explain why", "because it is good", "the answer is this one, which is better and longer"),
]


def build(folder: Path, **settings) -> PairRanker:
    torch.manual_seed(0)
    return PairRanker.from_backbone(
        str(folder), device="cpu", source_max_length=16, candidate_max_length=16, **settings
    )


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "length-feature"])
def ranker(request: pytest.FixtureRequest, tiny_bert: Path) -> PairRanker:
    return build(tiny_bert, length_feature=request.param)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def torch_outputs(
    ranker: PairRanker, queries=QUERIES
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    batch = ranker.encode_pairs(queries)
    with torch.inference_mode():
        left, right = ranker.module(**batch)
    return {k: v.numpy() for k, v in batch.items()}, left.numpy(), right.numpy()


def test_fp32_graph_is_fused_and_matches_torch(ranker: PairRanker, cache: Path) -> None:
    batch, left, right = torch_outputs(ranker)
    assert len(set(batch["attention_mask"].sum(axis=1))) > 2, "the batch must be padded to different lengths"
    module = onnx_module(ranker, "onnx", cache_dir=cache, threads=1)
    assert module.ops["Attention"] == 2 and module.ops["SkipLayerNormalization"] == 4
    assert module.ops["EmbedLayerNormalization"] == 1
    onnx_left, onnx_right = module(**batch)
    assert onnx_left.dtype == np.float32 and onnx_left.shape == (len(QUERIES), 1)
    np.testing.assert_allclose(onnx_left, left, atol=1e-4)
    np.testing.assert_allclose(onnx_right, right, atol=1e-4)
    # batch and sequence axes are dynamic: one short pair alone gives the same as in the batch
    one = {k: v[2:3, : int(batch["attention_mask"][2].sum())] for k, v in batch.items() if k != "lengths"}
    if "lengths" in batch:
        one["lengths"] = batch["lengths"][2:3]
    np.testing.assert_allclose(module(**one)[0], left[2:3], atol=1e-4)


def test_int8_is_close_and_keeps_signs(ranker: PairRanker, cache: Path) -> None:
    batch, left, right = torch_outputs(ranker)
    module = onnx_module(ranker, "onnx-int8", cache_dir=cache, threads=1)
    assert module.ops["QAttention"] == 2 and module.ops["MatMulInteger"] == 6  # encoder weights int8
    assert module.ops["MatMul"] >= 4  # the head (and length layer) stay fp32
    onnx_left, onnx_right = module(**batch)
    # a random tiny model's margins are ~0.1; int8 moves them by ~1e-4
    margin, onnx_margin = (left - right).ravel(), (onnx_left - onnx_right).ravel()
    np.testing.assert_allclose(onnx_margin, margin, atol=1e-2)
    clear = np.abs(margin) > 0.02
    assert clear.sum() >= 3 and np.array_equal(np.sign(onnx_margin[clear]), np.sign(margin[clear]))


def test_length_input_is_checked(ranker: PairRanker, cache: Path) -> None:
    batch, _, _ = torch_outputs(ranker)
    module = onnx_module(ranker, "onnx", cache_dir=cache, threads=1)
    if ranker.config.length_feature:
        with pytest.raises(ValueError, match="pass lengths"):
            module(batch["input_ids"], batch["attention_mask"])
    else:
        with pytest.raises(ValueError, match="no length feature"):
            module(batch["input_ids"], batch["attention_mask"], np.zeros((len(QUERIES), 2), np.float32))


def test_export_leaves_the_callers_module_alone(tiny_bert: Path, tmp_path: Path) -> None:
    ranker = build(tiny_bert)
    ranker.module.train()
    before = ranker.module.pretrained_model.config._attn_implementation
    onnx_module(ranker, "onnx", cache_dir=tmp_path, threads=1)
    assert ranker.module.pretrained_model.config._attn_implementation == before
    assert ranker.module.training


def test_second_call_hits_the_cache(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranker = build(tiny_bert)
    first = onnx_module(ranker, "onnx-int8", cache_dir=tmp_path, threads=1)
    assert not first.cached and first.path.is_file()
    assert first.path.parent.parent == tmp_path / "onnx"
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [first.path.parent.name]  # no staging left

    def no_export(*args, **kwargs):
        raise AssertionError("exported again instead of using the cache")

    monkeypatch.setattr(onnx_runtime, "_build", no_export)
    mtime = first.path.stat().st_mtime_ns
    second = onnx_module(ranker, "onnx-int8", cache_dir=tmp_path, threads=1)
    assert second.cached and second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert second.ops == first.ops


def test_cache_dir_defaults_to_llmblend_cache(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMBLEND_CACHE", str(tmp_path))
    module = onnx_module(build(tiny_bert), "onnx", threads=1)
    assert module.path.is_relative_to(tmp_path / "onnx")


def test_a_failed_build_leaves_nothing_loadable(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranker = build(tiny_bert)

    def crash(source: Path, target: Path) -> None:
        target.write_bytes(b"half a model")
        raise RuntimeError("killed")

    monkeypatch.setattr(onnx_runtime, "_quantize", crash)
    with pytest.raises(RuntimeError, match="killed"):
        onnx_module(ranker, "onnx-int8", cache_dir=tmp_path, threads=1)
    assert not list((tmp_path / "onnx").rglob("*.onnx"))


def test_key_depends_on_weights_and_variant(tiny_bert: Path) -> None:
    ranker = build(tiny_bert)
    key = cache_key(ranker, "onnx")
    assert cache_key(ranker, "onnx") == key
    assert cache_key(ranker, "onnx-int8") != key
    weight = ranker.module.head_layer[1].bias
    with torch.no_grad():
        weight[0] += 1e-3
    assert cache_key(ranker, "onnx") != key
    assert cache_key(build(tiny_bert, length_feature=True), "onnx") not in (key, cache_key(ranker, "onnx"))


def test_deberta_falls_back_to_the_unfused_graph(
    tiny_deberta: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ranker = build(tiny_deberta)
    batch, left, _ = torch_outputs(ranker)
    with caplog.at_level(logging.WARNING, logger="llmblend.rank.onnx_runtime"):
        module = onnx_module(ranker, "onnx", cache_dir=tmp_path, threads=1)
    assert "cannot fuse 'deberta-v2'" in caplog.text
    assert "Attention" not in module.ops
    np.testing.assert_allclose(module(**batch)[0], left, atol=1e-4)


def test_bad_variant_and_missing_onnxruntime(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranker = build(tiny_bert)
    with pytest.raises(ValueError, match="onnx, onnx-int8"):
        onnx_module(ranker, "tensorrt", cache_dir=tmp_path)
    assert VARIANTS == ("onnx", "onnx-int8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    with pytest.raises(LlmblendError, match=r"pip install 'llmblend\[ml\]'"):
        onnx_module(ranker, "onnx", cache_dir=tmp_path)
