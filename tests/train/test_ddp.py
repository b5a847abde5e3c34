"""Data-parallel training under torchrun (2 CPU processes, gloo): 2 processes × B pairs (or fuser
examples) take the steps 1 process with 2B takes, rank 0 alone writes, and a stopped run resumes
exactly."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("this torch has no gloo backend", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402

from fuser_helpers import SMALL_LORA_RUN, write_ranked  # noqa: E402
from llmblend.errors import LlmblendError  # noqa: E402
from llmblend.rank.base import PairQuery  # noqa: E402
from llmblend.train.distributed import (  # noqa: E402
    Launch,
    data_parallel,
    launch_from_env,
    training_device,
)
from llmblend.train.losses import logistic_loss  # noqa: E402
from llmblend.train.pairs import LabelledPair  # noqa: E402
from llmblend.train.ranker import RankerTrainConfig, rank_share, train_ranker  # noqa: E402
from ranker_helpers import ranker_config, write_synthetic_pairs  # noqa: E402

PROCESSES = 2
PER_PROCESS = 4  # pairs per micro-batch in each process; one process takes 8
WORKER = Path(__file__).with_name("ddp_worker.py")
LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun(*args: str, cwd: Path) -> str:
    """Run ``args`` (a script, or ``-m module ...``) in 2 processes; their stdout."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return launched([*command, f"--nproc-per-node={PROCESSES}", *args], cwd)


def accelerate_launch(*args: str, cwd: Path) -> str:
    """Run ``args`` in 2 processes with ``accelerate launch`` (no config file); their stdout.

    ``--multi_gpu`` is what starts K processes (through torchrun; on a machine without GPUs they
    train on the CPU with gloo). ``--cpu`` would start one process, whatever ``--num_processes``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", str(PROCESSES), "--num_machines", "1", "--main_process_port", str(port)]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    return launched([*command, *args], cwd)


def launched(command: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES} | {"OMP_NUM_THREADS": "1"}
    env["HF_HOME"] = str(cwd / "hf-home")  # accelerate reads its default config from there: none
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def small_run(folder: Path, backbone: Path, pairs: int, **overrides) -> RankerTrainConfig:
    """3 steps of 2 micro-batches of 8 pairs (2 × 4 in 2 processes) over ``pairs`` training pairs, so
    that an epoch ends within the run; 8 dev pairs, scored at steps 2 and 3."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = dict(
        train_file=str(write_synthetic_pairs(folder / f"train{pairs}.jsonl", pairs, seed=1)),
        dev_file=str(write_synthetic_pairs(folder / "dev8.jsonl", 8, seed=2)),
        batch_size=PER_PROCESS,
        grad_accum=2,
        max_steps=3,
        eval_every=2,
        save_every=2,
    )
    return ranker_config(folder, backbone, **(settings | overrides))


def settings_file(config: RankerTrainConfig, path: Path) -> str:
    path.write_text(json.dumps(asdict(config)), encoding="utf-8")
    return str(path)


def assert_same_weights(folder: Path, other: Path, atol: float) -> None:
    mine, theirs = load_file(folder / "model.safetensors"), load_file(other / "model.safetensors")
    assert mine.keys() == theirs.keys()
    worst = max((mine[k] - theirs[k]).abs().max().item() for k in mine)
    assert worst <= atol, f"{folder} and {other} differ by up to {worst}"


def log_of(config: RankerTrainConfig) -> list[dict]:
    text = (Path(config.output_dir) / "log.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def still_bert(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_bert`` without dropout, so that runs with other batch splits compute the same thing."""
    folder = tmp_path_factory.mktemp("still-bert")
    for file in tiny_bert.iterdir():
        shutil.copy(file, folder / file.name)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


LAUNCHERS = ["torchrun"] + (["accelerate"] if importlib.util.find_spec("accelerate") else [])


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_processes_take_the_steps_of_one_with_the_doubled_batch(
    tmp_path: Path, still_bert: Path, launcher: str
) -> None:
    """`torchrun -m llmblend train ranker` (or `accelerate launch`) with 2 × 4 pairs ends with the
    weights, losses and accuracies of one process with 8; only rank 0 reports and writes."""
    # 19 pairs: each epoch is 8, 8 and 3 pairs, the 3 split 2 and 1 (losses weighted 4/3 and 2/3)
    ddp = small_run(tmp_path, still_bert, 19, dropout=0.0, output_dir=str(tmp_path / "ddp"))
    yaml_file = tmp_path / "ranker.yaml"
    yaml_file.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in asdict(ddp).items() if v is not None))
    launch = torchrun if launcher == "torchrun" else accelerate_launch
    stdout = launch("-m", "llmblend", "train", "ranker", str(yaml_file), cwd=tmp_path)
    one = train_ranker(replace(ddp, batch_size=PROCESSES * PER_PROCESS, output_dir=str(tmp_path / "one")))
    assert not torch.distributed.is_initialized()  # one process joins no group

    assert stdout.count("trained 3 steps") == 1, stdout
    out = Path(ddp.output_dir)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["best", "checkpoint.pt", "config.yaml", "last", "log.jsonl"]
    for folder in ("last", "best"):
        assert_same_weights(out / folder, one.output_dir / folder, atol=1e-5)
    records = log_of(ddp)
    assert [r["step"] for r in records] == [1, 2, 3]
    for mine, theirs in zip(records, one.history, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert mine["train_accuracy"] == pytest.approx(theirs["train_accuracy"])
        assert mine.get("dev_accuracy") == pytest.approx(theirs.get("dev_accuracy"))
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert (state["step"], state["world_size"], len(state["rank_rng"])) == (3, PROCESSES, PROCESSES)


def test_a_stopped_run_resumes_exactly_with_as_many_processes(tmp_path: Path, tiny_bert: Path) -> None:
    """With dropout (each process draws its own): a run stopped after step 2 and rerun ends where an
    uninterrupted run ends; its checkpoint is refused by a single process."""
    # 17 pairs: each epoch is 8, 8 and 1 pairs; for the 1 the second process runs a stand-in pair
    whole = small_run(tmp_path, tiny_bert, 17, output_dir=str(tmp_path / "whole"))
    stopped = replace(whole, output_dir=str(tmp_path / "stopped"))
    whole_file = settings_file(whole, tmp_path / "whole.json")
    stopped_file = settings_file(stopped, tmp_path / "stopped.json")
    stdout = torchrun(str(WORKER), whole_file, f"{stopped_file}@2", stopped_file, cwd=tmp_path)

    assert f"{stopped.output_dir}: resumed from step 2" in stdout, stdout
    assert_same_weights(Path(stopped.output_dir) / "last", Path(whole.output_dir) / "last", atol=1e-6)
    assert [r["step"] for r in log_of(stopped)] == [1, 2, 3]
    for mine, theirs in zip(log_of(stopped), log_of(whole), strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-6)
    with pytest.raises(LlmblendError, match=r"a run of 2 process\(es\) and this run has 1"):
        train_ranker(stopped)


def test_shares_split_the_batch_and_their_weighted_losses_average_to_its_loss() -> None:
    labels = [(1, 0), (-1, 1), (0, 0), (1, 1), (0, -1)]
    batch = [LabelledPair(PairQuery(f"q{i}", "a", "b"), label) for i, label in enumerate(labels)]
    torch.manual_seed(0)
    left, right = torch.randn(5, 2), torch.randn(5, 2)
    whole = logistic_loss(left, right, torch.tensor(labels, dtype=torch.float32))
    shares, average = [], 0.0
    for rank in range(PROCESSES):
        share, rows, factor = rank_share(batch, rank, PROCESSES)
        assert rows == share
        index = [batch.index(pair) for pair in share]
        loss = logistic_loss(left[index], right[index], torch.tensor([labels[i] for i in index]).float())
        average += float(loss) * factor / PROCESSES  # what DDP's gradient average amounts to
        shares += share
    assert sorted(shares, key=batch.index) == batch
    assert average == pytest.approx(float(whole))
    assert rank_share(batch[:1], 1, PROCESSES) == ([], batch[:1], 0.0)  # a stand-in, weighted 0
    assert rank_share(batch, 0, 1) == (batch, batch, 1.0)


def test_launch_settings_are_read_and_bad_ones_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert launch_from_env({}) == Launch()
    assert launch_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Launch(3, 4, 1)
    with pytest.raises(LlmblendError, match="RANK=2 with WORLD_SIZE=2"):
        launch_from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(LlmblendError, match="WORLD_SIZE='two' is not a whole number"):
        launch_from_env({"WORLD_SIZE": "two"})
    assert training_device(None, Launch()) is None and training_device("cpu", Launch(1, 2, 1)) == "cpu"
    assert training_device("cuda", Launch(3, 4, 1)) == "cuda:1"
    with pytest.raises(LlmblendError, match=r"device 'cuda:0' names one GPU.*set device: cuda"):
        training_device("cuda:0", Launch(0, 2, 0))
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with (
        pytest.raises(LlmblendError, match=r"MASTER_ADDR.*torchrun --nproc-per-node 2"),
        data_parallel("cpu"),
    ):
        pass


def fuser_settings(folder: Path, base: Path, **overrides) -> dict:
    """3 steps of 2 micro-batches of 4 examples (2 × 2 in 2 processes) over 13 records, so that an
    epoch ends in a micro-batch of 1 (the second process runs a stand-in); dev at steps 2 and 3."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = dict(
        train_file=str(write_ranked(folder / "train.jsonl", 13, seed=1)),
        dev_file=str(write_ranked(folder / "dev.jsonl", 3, seed=9)),
        base_model=str(base),
        batch_size=2,
        grad_accum=2,
        max_steps=3,
        eval_every=2,
        save_every=2,
        dev_limit=3,
        shuffle_candidates=True,
        **SMALL_LORA_RUN,
    )
    return settings | overrides


def test_fuser_two_processes_take_the_steps_of_one_with_the_doubled_batch(
    tmp_path: Path, tiny_causal_lm: Path
) -> None:
    """`torchrun -m llmblend train fuser` with 2 × 2 examples ends with the LoRA weights, losses and
    dev scores of one process with 4; only rank 0 reports and writes; one process cannot resume it."""
    from llmblend.train.fuser import TRAINING_STATE, FuserTrainSettings, train_fuser

    ddp = fuser_settings(tmp_path, tiny_causal_lm, output_dir=str(tmp_path / "ddp"))
    yaml_file = tmp_path / "fuser.yaml"
    yaml_file.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in ddp.items()))
    stdout = torchrun("-m", "llmblend", "train", "fuser", str(yaml_file), cwd=tmp_path)
    single = FuserTrainSettings(**(ddp | {"batch_size": 4, "output_dir": str(tmp_path / "one")}))
    one = train_fuser(single)

    assert stdout.count("trained 3 steps") == 1, stdout
    out = Path(ddp["output_dir"])
    assert sorted(p.name for p in out.iterdir()) == ["best", "config.yaml", "last", "log.jsonl"]
    for folder in ("last", "best"):
        mine = load_file(out / folder / "adapter_model.safetensors")
        theirs = load_file(one.output_dir / folder / "adapter_model.safetensors")
        assert mine.keys() == theirs.keys()
        worst = max((mine[k] - theirs[k]).abs().max().item() for k in mine)
        assert worst <= 1e-5, f"{folder} adapters differ by up to {worst}"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for mine, theirs in zip(records, one.history, strict=True):
        assert mine["examples"] == theirs["examples"] and len(mine["examples"]) in (8, 5)
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert mine["target_tokens"] == theirs["target_tokens"]
        assert mine.get("dev_rougeL") == pytest.approx(theirs.get("dev_rougeL"))
    state = torch.load(out / "last" / TRAINING_STATE, map_location="cpu", weights_only=False)
    assert (state["step"], state["world_size"], len(state["rank_rng"])) == (3, PROCESSES, PROCESSES)
    with pytest.raises(LlmblendError, match=r"a run of 2 process\(es\) and this run has 1"):
        train_fuser(FuserTrainSettings(**(ddp | {"max_steps": 4})))
