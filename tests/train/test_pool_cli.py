"""``llmblend train pool`` and ``llmblend rank --pool`` end to end, on real alpaca-blend files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.data.mixinstruct import load_mixinstruct, write_mixinstruct
from llmblend.rank.pool import PoolModel

runner = CliRunner()


@pytest.fixture(scope="module")
def files(alpaca_blend, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder, _ = alpaca_blend
    out = tmp_path_factory.mktemp("pool-files")
    train = load_mixinstruct(folder / "train.jsonl")
    paths = {
        "train": folder / "train.jsonl",
        "calibration": out / "calibration.jsonl",
        "dev": out / "dev.jsonl",
    }
    write_mixinstruct(train[:5], paths["calibration"])  # the tiny ranker never trained on anything
    write_mixinstruct(load_mixinstruct(folder / "dev.jsonl")[:3], paths["dev"])
    return paths


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_train_pool_cross_fits_then_rank_uses_it(files: dict[str, Path], tmp_path: Path) -> None:
    pool_file = tmp_path / "pool.json"
    args = ["train", "pool", files["train"], "--oracle", "gpt4_win", "--out", pool_file]
    result = invoke(*args, "--terms", "pool,length,rel_length")
    assert result.exit_code == 0, result.output
    assert "cross-validated top-1" in result.output
    pool = PoolModel.load(pool_file)
    # the pool's favourite on AlpacaEval's train instructions is the best model of the pool
    assert max(pool.strengths, key=pool.strengths.get) == "OpenHermes-2.5-Mistral-7B"
    assert set(pool.length_stats) == set(pool.strengths)
    combination = pool.combination
    assert set(combination["weights"]) == {"pool", "length", "rel_length"}
    assert combination["weights"]["pool"] > 0 and combination["bias"] < 0  # the incumbent's edge
    fitted = combination["fitted_on"]
    assert fitted["examples"] == 480 and fitted["source"] == "cross-fitted on the training files"
    assert str(combination["threshold"]) in fitted["cv_top1_by_threshold"]
    best = max(fitted["cv_top1_by_threshold"].values())
    assert fitted["threshold_rule"] == "gated"  # the default; here switching pays beyond the noise
    assert fitted["cv_top1_by_threshold"][str(combination["threshold"])] == best

    conservative = tmp_path / "one-se.json"
    result = invoke(
        *args[:-1], conservative, "--terms", "pool,length,rel_length", "--threshold-rule", "one-se"
    )
    assert result.exit_code == 0, result.output
    chosen = PoolModel.load(conservative).combination
    assert (
        chosen["fitted_on"]["threshold_rule"] == "one-se" and chosen["threshold"] >= combination["threshold"]
    )
    # bad choices are named before anything is read (or minutes of embedding spent)
    absent = ["train", "pool", tmp_path / "absent.jsonl", "--oracle", "gpt4_win", "--out", pool_file]
    result = invoke(*absent, "--threshold-rule", "strict")
    assert result.exit_code != 0 and "unknown threshold rule 'strict'" in result.output
    result = invoke(*absent, "--terms", "pool,lenght")
    assert result.exit_code != 0 and "unknown term 'lenght'" in result.output

    ranked = tmp_path / "ranked.jsonl"
    result = invoke("rank", files["dev"], "--out", ranked, "--pool", pool_file)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in ranked.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        ranking = record["ranking"]
        n = len(record["candidates"])
        assert ranking["strategy"] == "pool-seeded" and ranking["n_forward"] == 0  # no ranker term
        assert set(ranking["terms"]) == {"pool", "length", "rel_length"}
        assert sorted(ranking["order"]) == list(range(n))


def test_train_pool_with_the_ranker_calibrates_on_held_out_examples(
    files: dict[str, Path], tiny_ranker_dir: Path, tmp_path: Path
) -> None:
    pool_file = tmp_path / "pool.json"
    result = invoke(
        "train", "pool", files["train"], "--oracle", "gpt4_win", "--out", pool_file,
        "--terms", "pool,length,consensus,pool_consensus,ranker",
        "--calibrate", files["calibration"], "--model", tiny_ranker_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    combination = PoolModel.load(pool_file).combination
    assert set(combination["weights"]) == {"pool", "length", "consensus", "pool_consensus", "ranker"}
    assert combination["fitted_on"]["examples"] == 5
    assert "ece_ranker_alone" in combination["calibration"]
    ranked = tmp_path / "ranked.jsonl"
    result = invoke("rank", files["dev"], "--out", ranked, "--pool", pool_file, "--model", tiny_ranker_dir)
    assert result.exit_code == 0, result.output
    for record in (json.loads(line) for line in ranked.read_text().splitlines()):
        assert record["ranking"]["n_forward"] == 2 * (len(record["candidates"]) - 1)
        assert "ranker" in record["ranking"]["terms"]


def test_the_ranker_term_needs_calibration_data(files, tmp_path: Path) -> None:
    args = ["train", "pool", files["calibration"], "--oracle", "gpt4_win", "--out", tmp_path / "p.json"]
    result = invoke(*args, "--terms", "pool,ranker")
    assert result.exit_code == 2 and "--calibrate" in result.output


def test_train_pool_names_a_missing_oracle_and_what_is_there(files, tmp_path: Path) -> None:
    result = invoke(
        "train", "pool", files["calibration"], "--oracle", "gpt5_win", "--out", tmp_path / "p.json"
    )
    assert result.exit_code == 2
    assert "gpt5_win" in result.output and "gpt4_win" in result.output
    assert not (tmp_path / "p.json").exists()


def test_rank_with_a_bad_pool_file_says_so(files, tmp_path: Path) -> None:
    bad = tmp_path / "pool.json"
    bad.write_text('{"strengths": {}, "judgements": {}, "colour": 1}')
    result = invoke("rank", files["dev"], "--out", tmp_path / "r.jsonl", "--pool", bad)
    assert result.exit_code == 2 and "unknown key 'colour'" in result.output


def test_data_held_out_writes_the_instructions_the_shipped_ranker_never_trained_on(
    alpaca_blend, tmp_path: Path
) -> None:
    """The stage-2 config holds out 10% of the train instructions (seed 0): 48 of 480."""
    import yaml

    from llmblend.train.config import build_config
    from llmblend.train.ranker import RankerTrainConfig, held_out_pairs, held_out_sources

    folder, _ = alpaca_blend
    settings = yaml.safe_load(Path("configs/pairranker-minilm-default.yaml").read_text())
    settings["train_file"] = str(folder / "pairs_train.jsonl")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    config = build_config(RankerTrainConfig, config_file)
    sources = held_out_sources(config)
    assert len(sources) == 48
    assert {p.query.source for p in held_out_pairs(config).pairs} <= sources  # the sampled pairs' ones
    out = tmp_path / "held_out.jsonl"
    result = invoke("data", "held-out", config_file, folder / "train.jsonl", "--out", out)
    assert result.exit_code == 0, result.output
    held = load_mixinstruct(out)
    assert len(held) == 48 and {ex.source for ex in held} == sources


def strong_weak_pool(path: Path) -> Path:
    """A pool that knows one strong and one weak model, with no ranker term (0 forwards)."""
    from llmblend.rank.combine import Combination

    PoolModel(strengths={"strong": 2.0, "weak": -2.0}, judgements={}).with_combination(
        Combination({"pool": 1.0}, threshold=0.5).to_dict()
    ).save(path)
    return path


def backends_yaml(path: Path, base_url: str, names: list[str]) -> Path:
    import yaml

    backends = [{"name": n, "model": n, "base_url": base_url, "max_retries": 0} for n in names]
    path.write_text(yaml.safe_dump({"defaults": {"max_tokens": 32}, "backends": backends}), encoding="utf-8")
    return path


def test_fuse_with_a_pool_fuses_the_pools_order(scripted_server, tiny_ranker_dir, tmp_path: Path) -> None:
    from llmblend.types import Candidate, Example

    source = tmp_path / "in.jsonl"
    texts = {"weak": "a long and rambling answer " * 5, "strong": "short", "unknown": "middling answer"}
    candidates = [Candidate(m, t) for m, t in texts.items()]
    write_mixinstruct([Example(f"q/{i}", f"question {i}", candidates=candidates) for i in range(3)], source)
    fuser = backends_yaml(tmp_path / "fuser.yaml", scripted_server.base_url, ["fuser-model"])
    out = tmp_path / "fused.jsonl"
    result = invoke(
        "fuse", source, "--out", out, "--pool", strong_weak_pool(tmp_path / "pool.json"),
        "--model", tiny_ranker_dir, "--fuser", f"prompted:{fuser}", "--top-k", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["q/0", "q/1", "q/2"]
    for record in records:
        assert record["ranking"]["strategy"] == "pool-seeded" and record["ranking"]["n_forward"] == 0
        # the pool's order (strong, then the unknown model at the prior, then weak), not the length's
        assert record["fused"]["top_k"] == [1, 2]
        assert record["fused"]["fused_text"] == f"echo: {record['instruction']}"
        assert record["fused"]["margin"] is not None  # the guard compared with the tiny base ranker
    prompts = [r.body["messages"][0]["content"] for r in scripted_server.requests_for("fuser-model")]
    assert len(prompts) == 3 and all("1. short" in p and "2. middling answer" in p for p in prompts)


def test_blend_with_a_pool_returns_the_strong_models_answer(
    scripted_server, tiny_ranker_dir, tmp_path
) -> None:
    scripted_server.script_for("strong", [("say", "the strong answer")])
    scripted_server.script_for("weak", [("say", "a weak answer that goes on and on and on")])
    config = backends_yaml(tmp_path / "models.yaml", scripted_server.base_url, ["weak", "strong"])
    result = invoke(
        "blend", "Name a metal.", "--backends", config, "--pool", strong_weak_pool(tmp_path / "pool.json"),
        "--model", tiny_ranker_dir, "--fuser", "none", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    texts = {c["model"]: c["text"] for c in record["candidates"]}
    assert texts == {"weak": "a weak answer that goes on and on and on", "strong": "the strong answer"}
    assert record["answer"] == "the strong answer" and record["returned"] == "top"
    assert record["ranker"].startswith("pool")


def test_the_threshold_switches_least_within_one_standard_error_of_the_best() -> None:
    from llmblend.train.pool import one_standard_error_choice

    base = np.random.default_rng(0).normal(0.5, 0.2, size=200)
    noise = np.tile([0.01, -0.01], 100) + 0.0005  # a mean gap of 0.0005, one standard error 0.0007
    # 0.5 is best by a hair that is noise; 0.7 trails it by far more than the noise
    noisy = {0.4: base - 0.05, 0.5: base + noise, 0.6: base, 0.7: base - 0.05}
    assert one_standard_error_choice(noisy) == 0.6
    clear = {0.4: base, 0.5: base + 0.03, 0.6: base}  # 0.5 is better on every instruction
    assert one_standard_error_choice(clear) == 0.5
    assert one_standard_error_choice({0.3: base, 0.9: base}) == 0.9  # a tie: the one that switches less


def test_the_gated_threshold_leaves_the_favourite_only_where_that_pays_beyond_the_noise() -> None:
    from llmblend.train.pool import gated_choice

    base = np.random.default_rng(0).normal(0.5, 0.2, size=200)
    noise = np.tile([0.02, -0.02], 100) + 0.001  # a mean gap of 0.001, one standard error 0.0014
    # 0.4 is best by noise over the most cautious threshold: the gate keeps the cautious one
    assert gated_choice({0.4: base + noise, 0.6: base + noise / 2, 0.9: base}) == 0.9
    # 0.4 beats 0.9 on every instruction: the gate opens, and the best (not a middle one) is taken
    assert gated_choice({0.4: base + 0.03, 0.6: base + 0.02, 0.9: base}) == 0.4
    # 0.6 trails 0.4 by noise only: one-se would take 0.6, the open gate takes the best
    assert gated_choice({0.4: base + 0.03 + noise, 0.6: base + 0.03, 0.9: base}) == 0.4
    assert gated_choice({0.3: base, 0.9: base}) == 0.9  # a tie: the most cautious
