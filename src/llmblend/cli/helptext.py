"""Help that reads as prose at any terminal width: the :class:`App` every llmblend command group uses.

Typer's "rich" markup mode keeps a help text's line breaks, so a docstring wrapped at the source's
line length would break mid-sentence on a wider terminal and leave short lines on a narrower one.
:class:`App` therefore passes every help text, docstring and epilog through :func:`prose`, and its
commands render epilog lists (:func:`listing`) one item per line, wrapped with a hanging indent.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

import typer
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

BULLET = "• "
_LIST_ITEM = re.compile(r"^(?:[-*•]|\d+[.)])\s")


def prose(text: str) -> str:
    """TEXT with each paragraph on one logical line, so the terminal (not the source) sets the width.

    Paragraphs are separated by blank lines; a line that starts a list item (``- ``, ``• ``, ``1. ``)
    starts a new line, and the lines wrapped after it are joined to it.
    """
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines: list[str] = []
        for line in (raw.strip() for raw in paragraph.splitlines()):
            if lines and not _LIST_ITEM.match(line):
                lines[-1] = f"{lines[-1]} {line}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def listing(title: str, items: Iterable[str]) -> str:
    """An epilog that renders as a list: TITLE, then one item per line (items are text, not markup)."""
    return "\n".join([title, *(f"{BULLET}{escape(item)}" for item in items)])


def _epilog(epilog: str, highlight: Callable[[Text], Text]) -> RenderableType:
    """EPILOG's paragraphs as rich text; its list items in a grid, so a long item wraps under itself."""
    parts: list[RenderableType] = []
    for number, paragraph in enumerate(epilog.split("\n\n")):
        if number:
            parts.append(Text(""))
        grid: Table | None = None
        for line in paragraph.splitlines():
            if not line.startswith(BULLET):
                grid = None
                parts.append(highlight(Text.from_markup(line)))
                continue
            if grid is None:
                grid = Table.grid(padding=(0, 1, 0, 0))
                grid.add_column(no_wrap=True)
                grid.add_column()
                parts.append(grid)
            grid.add_row(BULLET.strip(), highlight(Text.from_markup(line[len(BULLET) :])))
    return Group(*parts)


class Command(TyperCommand):
    """A typer command whose epilog is printed by :func:`_epilog` (typer prints it as one text)."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        epilog = self.epilog
        if not epilog or self.rich_markup_mode != "rich":
            return super().format_help(ctx, formatter)
        from typer.rich_utils import _get_rich_console, highlighter

        self.epilog = None  # typer prints everything else, as usual
        try:
            super().format_help(ctx, formatter)
        finally:
            self.epilog = epilog
        _get_rich_console().print(Padding(_epilog(epilog, highlighter), 1))


class App(typer.Typer):
    """``typer.Typer`` with llmblend's help conventions.

    Rich markup; every help text, docstring and epilog as :func:`prose`; epilog lists wrapped with a
    hanging indent (:class:`Command`); a group with no subcommand prints its help.
    """

    def __init__(self, *, help: str, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(help=prose(help), rich_markup_mode="rich", **kwargs)

    def command(  # type: ignore[override]
        self, name: str | None = None, *, help: str | None = None, epilog: str | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``Typer.command``, with the help taken from the docstring and both help and epilog as prose."""
        register = super().command
        kwargs.setdefault("cls", Command)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            text = help if help is not None else inspect.getdoc(function)
            return register(
                name, help=prose(text) if text else None, epilog=prose(epilog) if epilog else None, **kwargs
            )(function)

        return decorator
