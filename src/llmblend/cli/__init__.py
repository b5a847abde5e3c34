"""``llmblend``: the command line (typer + rich). One entry point, subcommands by topic.

:mod:`llmblend.cli.common` holds the root ``app`` and what the groups share (consoles,
``user_errors``, progress bars, shared options), :mod:`llmblend.cli.helptext` the help conventions
(help that reads as prose at any width), :mod:`llmblend.cli.tables` the rich tables. Each command
module (``data``, ``rank``, ``generate``, ``fuse``, ``serve``, ``eval``, ``judge``, ``train``)
registers its commands on ``app`` when imported; a new group is one more module and one more import
below.
"""

from __future__ import annotations

# isort: off
# The import order is the order `llmblend --help` lists them: commands first, then groups.
from llmblend.cli import rank, generate, best_of_n, fuse, serve  # noqa: F401  (rank, compare; generate; best-of-n; fuse, blend; serve)
from llmblend.cli import data, eval, train  # noqa: F401  (the `data`, `eval` and `train` groups)
from llmblend.cli import judge  # noqa: F401  (`eval judge`, after the other `eval` commands)

# isort: on
from llmblend.cli.common import app, console, err_console, user_errors

__all__ = ["app", "console", "err_console", "user_errors"]
