"""Training PairRanker (§3.1): every parameter learns, a synthetic task is learnt, runs resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.rank.base import PairQuery  # noqa: E402
from llmblend.rank.pairranker import PairRanker  # noqa: E402
from llmblend.train.config import build_config  # noqa: E402
from llmblend.train.losses import bce_loss, logistic_loss, margin_loss  # noqa: E402
from llmblend.train.pairs import load_pairs  # noqa: E402
from llmblend.train.ranker import RankerTrainConfig, micro_batch, train_ranker  # noqa: E402
from ranker_helpers import filler, ranker_config, write_synthetic_pairs  # noqa: E402


@pytest.mark.parametrize("length_feature", [False, True])
def test_one_step_changes_every_trainable_parameter(tmp_path: Path, tiny_bert: Path, length_feature) -> None:
    config = ranker_config(tmp_path, tiny_bert, max_steps=1, dev_file=None, dropout=0.0)
    pairs = load_pairs(config.train_file).pairs
    ranker = PairRanker.from_backbone(
        str(tiny_bert), source_max_length=16, candidate_max_length=16, length_feature=length_feature
    )
    before = {name: p.detach().clone() for name, p in ranker.module.named_parameters()}
    optimizer = torch.optim.AdamW(ranker.module.parameters(), lr=1e-3)
    ranker.module.train()
    batch = micro_batch(pairs, config, 0)
    left, right = ranker.module(**ranker.encode_pairs([p.query for p in batch]))
    labels = torch.tensor([p.labels for p in batch], dtype=torch.float32)
    logistic_loss(left, right, labels).backward()
    optimizer.step()
    unchanged = [
        n for n, p in ranker.module.named_parameters() if p.requires_grad and torch.equal(p, before[n])
    ]
    assert not unchanged, f"parameters that did not change: {unchanged}"


def test_synthetic_task_reaches_90_percent(tmp_path: Path, tiny_bert: Path) -> None:
    # a random tiny encoder needs ~150 steps before it finds the marker word, then learns fast
    result = train_ranker(ranker_config(tmp_path, tiny_bert, epochs=16, learning_rate=3e-3, eval_every=32))
    assert result.best_dev_accuracy is not None and result.best_dev_accuracy >= 0.9, result.history
    ranker = PairRanker.from_pretrained(result.model_dir)
    margins = ranker.compare(
        ["question a is the how", "question what to of it"],
        ["four correct city", "code wrong it"],
        ["the wrong name", "this correct five"],
    )
    assert margins[0] > 0 > margins[1]
    log_steps = [
        json.loads(line)["step"] for line in (result.output_dir / "log.jsonl").read_text().splitlines()
    ]
    assert log_steps == list(range(1, result.steps + 1))


def test_interrupted_run_resumes_from_checkpoint(tmp_path: Path, tiny_bert: Path) -> None:
    """A run stopped after 8 steps and rerun ends exactly where an uninterrupted run ends."""
    whole = train_ranker(ranker_config(tmp_path / "a", tiny_bert, max_steps=20, eval_every=10))
    config = ranker_config(tmp_path / "b", tiny_bert, max_steps=20, eval_every=10, save_every=8)

    def interrupt_at_step_11(step: int, total: int, metrics: dict) -> None:
        if step == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ranker(config, on_step=interrupt_at_step_11)
    assert json.loads((tmp_path / "b/run/log.jsonl").read_text().splitlines()[-1])["step"] == 11
    resumed = train_ranker(config)
    assert resumed.resumed_from == 8
    assert [h["step"] for h in resumed.history] == list(range(1, 21))
    assert resumed.history[-1]["loss"] == pytest.approx(whole.history[-1]["loss"], rel=1e-3, abs=1e-4)
    assert resumed.best_dev_accuracy == pytest.approx(whole.best_dev_accuracy)


def test_rerun_with_different_data_is_refused(tmp_path: Path, tiny_bert: Path) -> None:
    train_ranker(ranker_config(tmp_path, tiny_bert, max_steps=2, save_every=1))
    with pytest.raises(LlmblendError, match="different"):
        train_ranker(ranker_config(tmp_path, tiny_bert, max_steps=2, seed=5))


def test_losses_ignore_unlabelled_entries() -> None:
    left = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    right = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    expected = (
        torch.nn.functional.softplus(torch.tensor(-2.0)) + torch.nn.functional.softplus(torch.tensor(-1.0))
    ) / 2
    assert logistic_loss(left, right, labels) == pytest.approx(float(expected))
    assert margin_loss(left, right, labels, margin=1.0) == pytest.approx(0.0)
    assert bce_loss(left, right, labels) > 0


def test_yaml_then_flags(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train_file: t.jsonl\noutput_dir: out\nbatch_size: 4\nmetrics: [bleu, rouge]\n")
    config = build_config(RankerTrainConfig, yaml_file, batch_size="32", bf16="true")
    assert (config.batch_size, config.bf16, config.metrics, config.train_file) == (
        32,
        True,
        ("bleu", "rouge"),
        "t.jsonl",
    )
    with pytest.raises(LlmblendError, match="unknown setting 'batchsize'"):
        build_config(RankerTrainConfig, yaml_file, batchsize=3)
    with pytest.raises(LlmblendError, match="expected int"):
        build_config(RankerTrainConfig, yaml_file, batch_size="many")
    with pytest.raises(LlmblendError, match="loss 'hinge'"):
        build_config(RankerTrainConfig, yaml_file, loss="hinge")


@pytest.mark.slow
def test_cli_run_killed_with_sigkill_resumes(tmp_path: Path, tiny_bert: Path) -> None:
    """`llmblend train ranker` killed with SIGKILL mid-run, then rerun: it ends with every step once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = ranker_config(tmp_path, tiny_bert, max_steps=60, save_every=5, eval_every=30)
    yaml_file = tmp_path / "ranker.yaml"
    yaml_file.write_text(
        "".join(f"{k}: {json.dumps(v)}\n" for k, v in vars(config).items() if v not in (None, ()))
    )
    command = [sys.executable, "-m", "llmblend", "train", "ranker", str(yaml_file)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log_file = Path(config.output_dir) / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (Path(config.output_dir) / "checkpoint.pt").is_file() and len(
            log_file.read_text().splitlines()
        ) >= 12:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    steps_before = len(log_file.read_text().splitlines())
    assert 0 < steps_before < 60
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "resumed at step" in finished.stdout
    steps = [json.loads(line)["step"] for line in log_file.read_text().splitlines()]
    assert steps == list(range(1, 61))
    assert (Path(config.output_dir) / "best" / "model.safetensors").is_file()


def test_multi_metric_mixinstruct_trains_one_head_output_per_metric(
    tmp_path: Path, tiny_bert: Path, sample_file: Path
) -> None:
    config = ranker_config(
        tmp_path,
        tiny_bert,
        train_file=str(sample_file),
        dev_file=str(sample_file),
        metrics=("bleu", "bertscore"),
    )
    config.max_steps, config.grad_accum, config.bf16 = 3, 2, True
    result = train_ranker(config)
    ranker = PairRanker.from_pretrained(result.model_dir)
    assert ranker.n_tasks == 2 and ranker.config.task_names == ("bleu", "bertscore")
    assert ranker.pair_logits([PairQuery("q", "a", "b")], tasks=True).shape == (1, 2)


@pytest.mark.parametrize("architecture", ["pointwise", "dual-encoder"])
def test_baselines_train_with_the_same_loop(tmp_path: Path, tiny_bert: Path, architecture: str) -> None:
    from llmblend.rank.registry import load_ranker

    loss = "margin" if architecture == "dual-encoder" else "bce"
    result = train_ranker(
        ranker_config(tmp_path, tiny_bert, architecture=architecture, loss=loss, max_steps=3)
    )
    ranker = load_ranker(str(result.model_dir))
    assert (
        type(ranker).__name__
        == {"pointwise": "PointwiseRanker", "dual-encoder": "DualEncoderRanker"}[architecture]
    )


def write_length_pairs(path: Path, n: int, seed: int) -> Path:
    """The chosen answer is longer; both start with the same words and exceed the candidate budget,
    so only the untruncated length tells them apart."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            start = filler(rng, 20)
            short, extra = rng.randint(0, 10), rng.randint(20, 60)
            record = {
                "prompt": f"question {filler(rng, 4)}",
                "chosen": f"{start} {filler(rng, short + extra)}",
                "rejected": f"{start} {filler(rng, short)}",
            }
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize("length_feature", [True, False])
def test_length_feature_learns_what_truncation_hides(tmp_path: Path, tiny_bert: Path, length_feature) -> None:
    train = write_length_pairs(tmp_path / "length_train.jsonl", 256, seed=1)
    dev = write_length_pairs(tmp_path / "length_dev.jsonl", 64, seed=2)
    config = ranker_config(
        tmp_path,
        tiny_bert,
        train_file=str(train),
        dev_file=str(dev),
        length_feature=length_feature,
        candidate_max_length=8,
        epochs=4,
        learning_rate=3e-3,
    )
    accuracy = train_ranker(config).best_dev_accuracy
    if length_feature:
        assert accuracy >= 0.9
    else:  # the cut copies are identical: the encoder alone can only guess
        assert accuracy <= 0.7


def test_val_fraction_holds_out_whole_instructions(tmp_path: Path, tiny_bert: Path) -> None:
    from llmblend.train.ranker import split_by_instruction

    pairs = load_pairs(write_synthetic_pairs(tmp_path / "p.jsonl", 200, seed=3))
    train, val = split_by_instruction(pairs, 0.2, seed=0)
    train_sources = {p.query.source for p in train.pairs}
    val_sources = {p.query.source for p in val.pairs}
    assert not train_sources & val_sources
    assert len(train.pairs) + len(val.pairs) == len(pairs.pairs)
    assert abs(len(val_sources) / len(train_sources | val_sources) - 0.2) < 0.02
    result = train_ranker(ranker_config(tmp_path, tiny_bert, dev_file=None, val_fraction=0.2, max_steps=16))
    assert result.best_dev_accuracy is not None and (result.output_dir / "best").is_dir()
    with pytest.raises(ValueError, match="either dev_file or val_fraction"):
        ranker_config(tmp_path, tiny_bert, val_fraction=0.2)


def test_held_out_pairs_are_the_pairs_the_run_picks_best_on(tmp_path: Path, tiny_bert: Path) -> None:
    from llmblend.train.ranker import held_out_pairs, pairwise_accuracy, training_pairs

    config = ranker_config(
        tmp_path, tiny_bert, dev_file=None, val_fraction=0.25, max_dev_pairs=20, max_steps=4, eval_every=4
    )
    held_out = held_out_pairs(config)
    train, dev = training_pairs(config)
    assert dev == held_out == held_out_pairs(config)  # the same seeded draw every time
    assert len(held_out.pairs) == 20  # sampled down to max_dev_pairs
    assert not {p.query.source for p in held_out.pairs} & {p.query.source for p in train.pairs}
    result = train_ranker(config)
    best = PairRanker.from_pretrained(result.output_dir / "best")
    assert pairwise_accuracy(best, held_out.pairs) == result.best_dev_accuracy
    with pytest.raises(ValueError, match="val_fraction is 0"):
        held_out_pairs(ranker_config(tmp_path, tiny_bert, dev_file=None))


def test_frozen_word_embeddings_keep_base_rows_and_train_markers(tmp_path: Path, tiny_bert: Path) -> None:
    config = ranker_config(tmp_path, tiny_bert, dev_file=None, freeze_word_embeddings=True, max_steps=3)
    torch.manual_seed(config.seed)  # the trainer seeds the same way, so markers start equal
    initial = PairRanker.from_backbone(str(tiny_bert)).module.pretrained_model.get_input_embeddings().weight
    trained = PairRanker.from_pretrained(train_ranker(config).model_dir)
    weight = trained.module.pretrained_model.get_input_embeddings().weight
    n_base = trained.tokenizer.vocab_size
    markers = sorted(trained.config.token_ids.values())[:3]  # <|candidate|> is unused by PairRanker
    assert min(markers) >= n_base
    assert torch.equal(weight[:n_base], initial[:n_base])
    assert not torch.equal(weight[markers], initial[markers])


def test_layers_outside_the_backbone_learn_at_head_lr_scale(tmp_path: Path, tiny_bert: Path) -> None:
    from llmblend.train.ranker import make_optimizer

    config = ranker_config(tmp_path, tiny_bert, learning_rate=1e-4, head_lr_scale=20.0, warmup_ratio=0.0)
    ranker = PairRanker.from_backbone(str(tiny_bert), length_feature=True)
    optimizer, _ = make_optimizer(ranker.module, config, steps=10)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, param in ranker.module.named_parameters():
        expected = 1e-4 if name.startswith("pretrained_model.") else 2e-3
        assert lr_of[id(param)] == pytest.approx(expected), name
    assert len(lr_of) == len(list(ranker.module.parameters()))


RANKER_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("pairranker-*.yaml"))


@pytest.mark.parametrize("path", RANKER_CONFIGS, ids=lambda p: p.name)
def test_committed_ranker_recipes_parse(path: Path):
    config = build_config(RankerTrainConfig, path)
    assert config.architecture == "pair-ranker" and config.train_file.startswith("build/")


def test_there_are_ranker_recipes_to_check():
    names = {p.name for p in RANKER_CONFIGS}
    assert {"pairranker-minilm-default.yaml", "pairranker-minilm-default-stage2.yaml"} <= names
