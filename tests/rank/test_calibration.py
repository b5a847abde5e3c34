"""Calibrated pairwise probabilities: the temperature fit, ECE / Brier, and `train calibrate`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.rank.calibration import brier_score, expected_calibration_error, fit_temperature, probabilities
from llmblend.train.calibrate import calibrate, holdout_split, oracle_pairs, write_temperature
from llmblend.types import Candidate, Example


def test_the_fit_recovers_the_temperature_that_made_the_outcomes() -> None:
    rng = np.random.default_rng(0)
    margins = rng.normal(0, 3, 20000)
    outcomes = (rng.random(margins.size) < probabilities(margins, 2.5)).astype(float)
    temperature = fit_temperature(margins, outcomes)
    assert temperature == pytest.approx(2.5, rel=0.05)
    before, after = probabilities(margins), probabilities(margins, temperature)
    assert expected_calibration_error(after, outcomes) < 0.01 < expected_calibration_error(before, outcomes)
    assert brier_score(after, outcomes) < brier_score(before, outcomes)
    with pytest.raises(ValueError, match="do not predict the outcomes"):
        fit_temperature(margins, (margins < 0).astype(float))


def _examples(n: int) -> list[Example]:
    return [
        Example(
            f"ex{k}",
            f"Question {k}?",
            candidates=[
                Candidate(f"m{i}", f"answer {k} " + "word " * i, {"oracle": i / 4}) for i in range(4)
            ],
        )
        for k in range(n)
    ]


def test_pairs_skip_near_ties_and_the_split_is_by_id() -> None:
    pairs = oracle_pairs(_examples(1), "oracle", min_gap=0.3)
    assert len(pairs) == 3 and all(outcome == 0.0 for _, outcome in pairs)  # gaps 0.5, 0.5, 0.75; first lower
    fit, report = holdout_split(_examples(40), 0.5)
    assert {e.id for e in fit}.isdisjoint({e.id for e in report}) and len(fit) + len(report) == 40
    assert holdout_split(list(reversed(_examples(40))), 0.5)[1][0].id in {e.id for e in report}
    with pytest.raises(KeyError, match="no 'gpt4_win' score"):
        oracle_pairs(_examples(1), "gpt4_win")


def test_calibrate_reports_on_pairs_it_did_not_fit() -> None:
    def overconfident(queries):  # right 4 times in 5, always with a logit of ±5 (P = 0.993)
        right = [1.0 if len(q.first) > len(q.second) else -1.0 for q in queries]
        wrong = [-1.0 if sum(map(ord, q.first + q.second)) % 5 == 0 else 1.0 for q in queries]
        return 5.0 * np.array(right) * np.array(wrong)

    report = calibrate(overconfident, _examples(200), "oracle", holdout=0.5)
    assert report.fit_pairs + report.report_pairs == 200 * 6
    assert 0.7 < report.accuracy < 0.9 and report.temperature > 2.0
    assert report.ece_after < report.ece_before / 3 and report.brier_after < report.brier_before


def test_train_calibrate_writes_the_temperature_the_ranker_then_uses(tmp_path, alpaca_blend) -> None:
    from llmblend.rank.pairranker import DEFAULT_MODEL_DIR, PairRanker

    folder = tmp_path / "ranker"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    dev = alpaca_blend[0] / "dev.jsonl"
    small = tmp_path / "dev20.jsonl"
    small.write_text("".join(dev.read_text().splitlines(keepends=True)[:20]))
    result = CliRunner().invoke(
        app,
        ["train", "calibrate", str(small), "-m", str(folder), "--runtime", "onnx-int8", "--write"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "ECE" in result.output and f"stored in {folder}" in result.output
    temperature = json.loads((folder / "config.json").read_text())["llmblend"]["temperature"]
    ranker = PairRanker.from_pretrained(folder, runtime="onnx-int8")
    assert ranker.config.temperature == temperature != 1.0
    p = ranker.probability(["Name a colour."] * 2, ["Red.", "Seven."], ["Seven.", "Red."])
    assert p[0] + p[1] == pytest.approx(1.0) and p[0] > 0.5


def test_write_temperature_refuses_a_folder_llmblend_did_not_save(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'llmblend' section"):
        write_temperature(tmp_path, 2.0)
