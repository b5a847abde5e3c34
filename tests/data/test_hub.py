"""The hub loading path (``datasets.load_dataset``) on a local folder with MixInstruct's columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmblend.data.mixinstruct import load_hub_mixinstruct, load_mixinstruct


@pytest.fixture
def local_dataset(tmp_path: Path, sample_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "mix-instruct"
    folder.mkdir()
    shutil.copy(sample_file, folder / "test.jsonl")
    return folder


def test_load_dataset_path_gives_the_same_examples_as_the_file(
    local_dataset: Path, sample_file: Path
) -> None:
    from_datasets = list(load_hub_mixinstruct(str(local_dataset), split="test"))
    assert from_datasets == load_mixinstruct(sample_file)


def test_unknown_split_is_an_error(local_dataset: Path) -> None:
    with pytest.raises(ValueError, match="train"):
        list(load_hub_mixinstruct(str(local_dataset), split="train"))
