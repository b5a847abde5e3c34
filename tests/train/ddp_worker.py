"""Run by ``test_ddp.py`` under torchrun: join the process group here, then train one ranker per
argument in it (the trainer uses a group it finds joined and leaves it alone).

Each argument is ``SETTINGS.json`` or ``SETTINGS.json@N``: the settings of a ``RankerTrainConfig``;
with ``@N`` the run stops after step N in every process, as an interruption would stop it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from llmblend.train.ranker import RankerTrainConfig, train_ranker


class Stopped(Exception):
    """Raised by the step callback to stop a run."""


def train(spec: str) -> None:
    path, _, stop = spec.partition("@")
    config = RankerTrainConfig(**json.loads(Path(path).read_text(encoding="utf-8")))

    def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
        if stop and step == int(stop):
            raise Stopped

    try:
        result = train_ranker(config, on_step=on_step)
    except Stopped:
        return
    if result.resumed_from and dist.get_rank() == 0:
        sys.stdout.write(f"{config.output_dir}: resumed from step {result.resumed_from}\n")


def main(specs: list[str]) -> None:
    dist.init_process_group("gloo")
    try:
        for spec in specs:
            train(spec)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
