"""Training GenFuser (§4): data from rankings, the loss layout, every parameter learns, runs resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from fuser_helpers import SMALL_LORA_RUN, write_ranked  # noqa: E402
from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.fuse.trained import TrainedFuser  # noqa: E402
from llmblend.train.config import build_config  # noqa: E402
from llmblend.train.fuser import (  # noqa: E402
    BEST,
    FINAL,
    LAST,
    TRAINING_STATE,
    FuserRecord,
    FuserTrainer,
    FuserTrainSettings,
    causal_batch,
    causal_loss,
    fuse_item,
    inference_copy,
    load_fuser_records,
    micro_batch_indices,
    target_ids,
    to_tensors,
    train_fuser,
)

_S = FuserTrainSettings(train_file="t", output_dir="o", base_model="b")
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fuser-gemma3-270m-lora.yaml"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _settings(tmp_path: Path, base: Path, **overrides) -> FuserTrainSettings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = dict(
        train_file=str(write_ranked(tmp_path / "train.jsonl", 12, seed=1)),
        output_dir=str(tmp_path / "run"),
        base_model=str(base),
        batch_size=3,
        **SMALL_LORA_RUN,
    )
    values.update(overrides)
    return FuserTrainSettings(**values)


class Spy:
    """Keeps the fuser a run builds and a copy of its parameters before the first step."""

    def __init__(self, monkeypatch):
        self.fuser = None
        self.before: dict[str, torch.Tensor] = {}
        build = FuserTrainer._build

        def spy(trainer, device, resume):
            self.fuser = build(trainer, device, resume)
            self.before = {n: p.detach().clone() for n, p in self.fuser.model.named_parameters()}
            return self.fuser

        monkeypatch.setattr(FuserTrainer, "_build", spy)

    def changed(self) -> tuple[list[str], list[str], list[str]]:
        """(trainable that changed, trainable that did not, frozen that changed)."""
        moved, still, frozen_moved = [], [], []
        for name, param in self.fuser.model.named_parameters():
            differs = not torch.equal(param.detach(), self.before[name])
            if param.requires_grad:
                (moved if differs else still).append(name)
            elif differs:
                frozen_moved.append(name)
        return moved, still, frozen_moved


# ---------------------------------------------------------------- data


def test_records_come_from_the_ranking_and_bad_ones_are_counted(tmp_path: Path):
    path = write_ranked(tmp_path / "r.jsonl", 4, seed=3)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[1]["output"] = None
    lines[2]["ranking"] = {"order": [], "error": "ranker failed"}
    lines[3]["ranking"]["order"] = lines[3]["ranking"]["order"][:2]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    records, skipped = load_fuser_records(path, top_k=3)
    assert [r.id for r in records] == ["r0"]
    assert skipped == {"no_output": 1, "no_ranking": 1, "too_few_candidates": 1}
    order = lines[0]["ranking"]["order"]
    assert records[0].ranked == tuple(lines[0]["candidates"][i]["text"] for i in order)
    assert records[0].target == lines[0]["output"]
    lines[0].pop("ranking")
    path.write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(LlmblendError, match="rank it first"):
        load_fuser_records(path, top_k=3)


def test_top_k_shuffle_and_swap_are_seeded(tmp_path: Path):
    record = FuserRecord("x", "q", "", ("c0", "c1", "c2", "c3", "c4"), "t")
    plain = _settings(tmp_path, tmp_path)
    assert fuse_item(record, plain, 0, 0).candidates == ("c0", "c1", "c2")
    shuffled = _settings(tmp_path, tmp_path, shuffle_candidates=True)
    orders = {fuse_item(record, shuffled, 0, i).candidates for i in range(20)}
    assert all(sorted(o) == ["c0", "c1", "c2"] for o in orders) and len(orders) > 1
    assert fuse_item(record, shuffled, 1, 7) == fuse_item(record, shuffled, 1, 7)
    swapped = _settings(tmp_path, tmp_path, swap_probability=1.0)
    for i in range(20):
        chosen = fuse_item(record, swapped, 0, i).candidates
        assert len(set(chosen) & {"c0", "c1", "c2"}) == 2 and len(set(chosen) & {"c3", "c4"}) == 1


def test_data_order_depends_on_seed_and_epoch_only(tmp_path: Path):
    settings = _settings(tmp_path, tmp_path, batch_size=4)
    batches = [micro_batch_indices(10, settings, i) for i in range(6)]
    assert [epoch for epoch, _ in batches] == [0, 0, 0, 1, 1, 1]
    assert sorted(i for _, b in batches[:3] for i in b) == list(range(10))  # each epoch covers every record
    assert batches[0][1] != batches[3][1]
    assert micro_batch_indices(10, settings, 4) == batches[4]


# ---------------------------------------------------------------- the causal loss


def test_causal_labels_mask_the_prompt_and_padding():
    rows = [([11, 12, 13], [21, 22, 2]), ([14], [23, 2])]
    batch = causal_batch(rows, pad_id=0)
    assert batch["input_ids"] == [[11, 12, 13, 21, 22, 2], [0, 0, 0, 14, 23, 2]]
    assert batch["labels"] == [[-100, -100, -100, 21, 22, 2], [-100, -100, -100, -100, 23, 2]]
    assert batch["attention_mask"] == [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]]
    assert batch["position_ids"] == [[0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 2]]
    assert batch["keep"] == 4  # logits of the last 4 positions predict every target token


def test_targets_end_with_eos_only_when_they_fit(tiny_causal_lm: Path, tiny_t5: Path):
    from transformers import AutoTokenizer

    causal = AutoTokenizer.from_pretrained(tiny_causal_lm)
    words = causal("the capital of france is paris.", add_special_tokens=False)["input_ids"]
    eos = causal.eos_token_id
    assert target_ids(causal, "causal", "the capital of france is paris.", 64) == [*words, eos]
    assert target_ids(causal, "causal", "the capital of france is paris.", 3) == words[:3]
    assert target_ids(causal, "causal", "the capital of france is paris.", len(words) + 1)[-1] == eos
    t5 = AutoTokenizer.from_pretrained(tiny_t5)
    ids = target_ids(t5, "seq2seq", "the capital of france", 64)
    assert t5.convert_ids_to_tokens(ids) == ["the", "capital", "of", "france", "</s>"]
    assert t5.convert_ids_to_tokens(target_ids(t5, "seq2seq", "the capital of france", 2)) == [
        "the",
        "capital",
    ]


def test_left_padded_loss_equals_the_unpadded_loss(tiny_causal_lm: Path):
    fuser = TrainedFuser.from_pretrained(tiny_causal_lm)
    model, tok = fuser.model, fuser.tokenizer
    rows = [
        (
            tok("<|user|>\nwhat is the capital?<|eos|>\n<|assistant|>\n")["input_ids"],
            tok("paris.")["input_ids"] + [2],
        ),
        (
            tok("<|user|>\nwhy?<|eos|>\n<|assistant|>\n")["input_ids"],
            tok("one two three four")["input_ids"] + [2],
        ),
    ]
    assert len(rows[0][0]) != len(rows[1][0])
    with torch.no_grad():
        batched = causal_loss(model, to_tensors(causal_batch(rows, fuser.pad_id), "cpu"))
        full = causal_loss(model, to_tensors(causal_batch(rows, fuser.pad_id), "cpu"), keep_logits=False)
        total, count = 0.0, 0
        for prompt, target in rows:
            ids = torch.tensor([prompt + target])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum"))
            count += len(target)
    assert float(batched) == pytest.approx(total / count, rel=1e-5)
    assert float(full) == pytest.approx(total / count, rel=1e-5)


# ---------------------------------------------------------------- training


def test_one_step_full_fine_tune_of_t5_changes_every_weight(tiny_t5: Path, tmp_path: Path, monkeypatch):
    spy = Spy(monkeypatch)
    report = train_fuser(_settings(tmp_path, tiny_t5, lora=False, max_steps=1, lr=1e-3))
    assert spy.fuser.kind == "seq2seq" and not spy.fuser.is_adapter
    moved, still, _ = spy.changed()
    assert moved and not still, f"never updated: {still}"
    assert len(moved) == len(list(spy.fuser.model.parameters()))
    assert report.steps == 1 and torch.isfinite(torch.tensor(report.history[0]["loss"]))
    assert report.model_dir == tmp_path / "run" / FINAL
    assert (report.model_dir / "model.safetensors").is_file()
    assert (
        not (report.model_dir / TRAINING_STATE).exists()
        and (tmp_path / "run" / LAST / TRAINING_STATE).is_file()
    )
    loaded = TrainedFuser.from_pretrained(report.model_dir)
    for name, param in loaded.model.named_parameters():
        assert torch.equal(param, dict(spy.fuser.model.named_parameters())[name])


def test_lora_steps_on_a_causal_lm_change_every_adapter_weight_only(
    tiny_causal_lm: Path, tmp_path: Path, monkeypatch
):
    spy = Spy(monkeypatch)
    # two steps: LoRA starts with B = 0, so A's gradient is 0 at the first step and it moves at the second
    report = train_fuser(_settings(tmp_path, tiny_causal_lm, max_steps=2, lora_dropout=0.1))
    assert spy.fuser.kind == "causal" and spy.fuser.is_adapter
    moved, still, frozen_moved = spy.changed()
    assert moved and not still, f"never updated: {still}"
    assert all("lora_" in name for name in moved)
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} == {
        name.split(".")[-4] for name in moved
    }
    assert not frozen_moved, f"frozen weights changed: {frozen_moved}"
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in report.history)
    folder = report.model_dir
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    assert not (folder / TRAINING_STATE).exists()


def test_bf16_autocast_step_is_finite(tiny_causal_lm: Path, tmp_path: Path):
    report = train_fuser(_settings(tmp_path, tiny_causal_lm, max_steps=1, dtype="bfloat16"))
    assert torch.isfinite(torch.tensor(report.history[0]["loss"]))


def test_dev_generation_runs_on_a_merged_copy(tiny_causal_lm: Path):
    peft = pytest.importorskip("peft")
    fuser = TrainedFuser.from_pretrained(tiny_causal_lm, max_new_tokens=8)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    fuser.model = peft.get_peft_model(fuser.model, config)
    with torch.no_grad():
        for name, param in fuser.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 2.0)
    before = {n: p.detach().clone() for n, p in fuser.model.named_parameters()}
    item = fuse_item(
        FuserRecord("x", "what is the capital?", "", ("paris.", "lyon", "it is paris"), "t"), _S, 0, 0
    )
    copy = inference_copy(fuser, "float32")
    assert not copy.is_adapter and fuser.is_adapter
    assert [f.text for f in copy.fuse([item])] == [f.text for f in fuser.fuse([item])]
    for name, param in fuser.model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert next(inference_copy(fuser, "bfloat16").model.parameters()).dtype == torch.bfloat16


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_after_an_interrupt_matches_a_straight_run(tiny_causal_lm: Path, tmp_path: Path):
    common = dict(
        max_steps=4,
        save_every=2,
        eval_every=2,
        lora_dropout=0.1,
        shuffle_candidates=True,
        swap_probability=0.5,
        grad_accum=2,
        dev_limit=3,
    )
    dev = str(write_ranked(tmp_path / "dev.jsonl", 5, seed=9))
    straight = train_fuser(_settings(tmp_path / "a", tiny_causal_lm, dev_file=dev, **common))

    class Interrupt(Exception):
        pass

    def stop_at_two(step, total, metrics):
        if step == 2:
            raise Interrupt

    settings = _settings(tmp_path / "b", tiny_causal_lm, dev_file=dev, **common)
    with pytest.raises(Interrupt):
        train_fuser(settings, progress=stop_at_two)
    seen = []
    resumed = train_fuser(settings, progress=lambda step, total, metrics: seen.append(step))
    assert resumed.resumed_from == 2 and seen == [3, 4]

    a, b = _adapter(straight.output_dir / LAST), _adapter(resumed.output_dir / LAST)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    log_a = [json.loads(line) for line in (straight.output_dir / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (resumed.output_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert [r["examples"] for r in log_a] == [r["examples"] for r in log_b]  # the same data order
    assert [r["loss"] for r in log_a] == pytest.approx([r["loss"] for r in log_b], abs=1e-6)
    assert len(log_a[0]["examples"]) == 6  # grad_accum 2 × batch 3

    # dev evaluation picked best/: adapter + tokenizer + settings, no training state
    assert resumed.model_dir == resumed.output_dir / BEST and resumed.best_dev is not None
    assert "dev_rougeL" in log_b[1] and "dev_bleu" in log_b[3]
    best = {p.name for p in (resumed.output_dir / BEST).iterdir()}
    assert TRAINING_STATE not in best and "adapter_model.safetensors" in best and "llmblend.json" in best
    loaded = TrainedFuser.from_pretrained(resumed.output_dir / BEST)
    assert loaded.is_adapter and loaded.max_new_tokens == 6

    # a finished run does nothing more; a changed run is refused
    again = train_fuser(settings)
    assert again.resumed_from == 4 and len(again.history) == 4
    with pytest.raises(LlmblendError, match="different seed"):
        train_fuser(_settings(tmp_path / "b", tiny_causal_lm, dev_file=dev, **{**common, "seed": 1}))


def test_settings_are_checked_and_the_gemma_config_loads():
    with pytest.raises(ValueError, match="swap_probability"):
        FuserTrainSettings(train_file="t", output_dir="o", base_model="b", swap_probability=1.5)
    with pytest.raises(ValueError, match="unknown dev metric"):
        FuserTrainSettings(train_file="t", output_dir="o", base_model="b", dev_metrics=("rouge-l",))
    settings = FuserTrainSettings(train_file="t", output_dir="o", base_model="b", dev_metrics=("bleu",))
    assert settings.dev_metrics == ("rougeL", "bleu")
    gemma = build_config(FuserTrainSettings, CONFIG)
    assert gemma.base_model == "local:gemma3-270m" and gemma.lora and gemma.lora_r == 16
    assert gemma.train_file.endswith("train-ranked.jsonl") and gemma.dev_file.endswith("dev-ranked.jsonl")
