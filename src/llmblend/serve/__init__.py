"""The blending gateway: llmblend behind one OpenAI-compatible endpoint (``llmblend serve``).

:func:`~llmblend.serve.app.create_app` builds the FastAPI app from
:class:`~llmblend.serve.app.ServeSettings` (a :class:`~llmblend.serve.config.ServeConfig` and the
API keys); ``llmblend serve`` runs it with uvicorn. Importing this package needs the ``serve``
extra only when the app is built.
"""

from __future__ import annotations

from llmblend.serve.config import DEFAULT_SERVE_CONFIG, ServeConfig, load_serve_config

__all__ = ["DEFAULT_SERVE_CONFIG", "ServeConfig", "load_serve_config"]
