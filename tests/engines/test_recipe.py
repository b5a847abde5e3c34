"""Ranker recipes: picklable, checked before any worker starts, and built as ``llmblend rank`` builds."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from llmblend.engines.recipe import RankerRecipe, default_strategy
from llmblend.errors import LlmblendError
from llmblend.rank.baselines import LongestRanker


def test_a_recipe_pickles_and_builds_the_same_ranker() -> None:
    recipe = pickle.loads(pickle.dumps(RankerRecipe(spec="longest")))
    ranker, label = recipe.build()
    assert isinstance(ranker, LongestRanker) and label == "longest" == recipe.label
    assert recipe.strategy_for(ranker, None) == "sparse-refine" == default_strategy(ranker, None)
    assert recipe.strategy_for(ranker, "full") == "full"


def test_labels_are_those_of_the_local_command() -> None:
    assert RankerRecipe().label == "default"
    assert RankerRecipe(model="m", pool=Path("p.json")).label == "pool:p.json+m"


def test_check_fails_before_any_model_loads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--ranker longest replaces --model"):
        RankerRecipe(spec="longest", model="x").check()
    with pytest.raises(LlmblendError, match="unknown ranker 'nosuch'"):
        RankerRecipe(spec="nosuch").check()
    with pytest.raises(LlmblendError, match="llmblend train pool"):
        RankerRecipe(pool=tmp_path / "missing.json").check()
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        RankerRecipe(batch_size=0)
