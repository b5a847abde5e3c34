"""The ``live_gateway`` fixture (see :mod:`serve_helpers`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmblend.serve.app import ServeSettings
from llmblend.serve.config import ServeConfig
from llmblend.serve.limits import ApiKeys
from serve_helpers import LiveGateway, start_gateway


@pytest.fixture
def live_gateway() -> Iterator[Callable[..., LiveGateway]]:
    """``live_gateway(config_or_settings, api_keys=())`` → a started :class:`LiveGateway`."""
    started: list[LiveGateway] = []

    def start(
        config: ServeConfig | ServeSettings, api_keys: tuple[str, ...] = (), **settings: Any
    ) -> LiveGateway:
        if isinstance(config, ServeConfig):
            config = ServeSettings(config, ApiKeys(list(api_keys)), **settings)
        live = start_gateway(config)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()
