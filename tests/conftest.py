"""Shared fixtures: the shared data folder, the hand-written MixInstruct sample, a built alpaca-blend."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmblend.data.alpaca_blend import AlpacaBlendSummary, build_alpaca_blend
from llmblend.data.sources import locate_data_dir
from llmblend.errors import DataNotFoundError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data: tests and CI always have it beside the checkout."""
    try:
        return locate_data_dir()
    except DataNotFoundError as exc:
        pytest.fail(f"these tests read the shared data: {exc}")


@pytest.fixture
def sample_file() -> Path:
    return FIXTURES / "mixinstruct_sample.jsonl"


@pytest.fixture(scope="session")
def alpaca_blend(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AlpacaBlendSummary]:
    """alpaca-blend built once with the default config."""
    out = tmp_path_factory.mktemp("alpaca-blend")
    return out, build_alpaca_blend(data_dir, out)
