"""Every ``--help`` reads as prose at any terminal width, and rendering it imports no heavy library.

The help of the app, of every group and of every command is rendered at 80 and 200 columns. Each
piece of prose it shows (each paragraph of a command's docstring, each epilog paragraph or list
item, each option's and argument's help, each subcommand's summary in a group's list) is found in
the rendered lines, wherever it starts and however it wraps, and no line break inside it may come
early: if the next word would still have fitted on the line, the break came from the source (a
hard-wrapped docstring), not from the terminal's width.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from rich.text import Text
from typer import rich_utils
from typer.testing import CliRunner

from llmblend.cli import app
from llmblend.cli.helptext import listing, prose

WIDTHS = (80, 200)
BORDER = "│"
BULLET = re.compile(r"^[•*-]\s+")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def subcommands(command: Any) -> dict[str, Any]:
    """A group's commands by name (typer's click commands: a group is what has ``commands``)."""
    return getattr(command, "commands", None) or {}


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of COMMAND and of every command below it, depth first."""
    yield path
    for name, sub in subcommands(command).items():
        yield from command_paths(sub, (*path, name))


def find_command(root: Any, path: tuple[str, ...]) -> Any:
    command = root
    for name in path:
        command = subcommands(command)[name]
    return command


def normalise(text: str) -> str:
    """TEXT as rendered (rich markup resolved), with its whitespace collapsed."""
    return " ".join(Text.from_markup(text).plain.split())


def paragraphs(text: str | None) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", inspect.cleandoc(text or "").partition("\f")[0]) if p.strip()]


def epilog_units(epilog: str | None) -> list[str]:
    """Each paragraph of EPILOG, except that a list is one unit per item (and one for its heading)."""
    units = []
    for paragraph in paragraphs(epilog):
        current: list[str] = []
        for line in paragraph.splitlines():
            if BULLET.match(line.strip()):
                units.append(" ".join(current))
                current = [BULLET.sub("", line.strip())]
            else:
                current.append(line.strip())
        units.append(" ".join(current))
    return [u for u in units if u]


def prose_units(command: Any) -> list[str]:
    """The pieces of prose that COMMAND's help page shows."""
    units = [*paragraphs(command.help), *epilog_units(command.epilog)]
    units += [param.help for param in command.params if getattr(param, "help", None)]
    units += [paragraphs(sub.help)[0] for sub in subcommands(command).values() if sub.help]
    return [normalise(unit) for unit in units]


def render(root: typer.Typer, path: tuple[str, ...], width: int) -> list[str]:
    result = CliRunner().invoke(root, [*path, "--help"], env={"COLUMNS": str(width), "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return [line.rstrip() for line in ANSI.sub("", result.output).splitlines()]


def _follow(lines: list[str], row: int, col: int, words: list[str], width: int) -> list[str] | None:
    """Where WORDS run on from (ROW, COL), line after line in the same column: the early breaks.

    None when they do not run on like that (this is not an occurrence of the text). A break is
    early when the next word plus a space would have fitted before the right edge of the text's
    box: the border ``│`` less its padding, or the page's right padding outside a box.
    """
    early = []
    k = 0
    for index in range(row, len(lines)):
        line = lines[index]
        if index > row and line[:col].strip(" " + BORDER):
            return None  # a new row of a table (or other text) to the left: not a continuation
        segment = line[col:]
        edge = segment.find(BORDER)
        right = col + edge - 1 if edge >= 0 else width - 1
        segment = segment[:edge] if edge >= 0 else segment
        if not segment or segment[0].isspace():
            return None
        present = segment.split()
        m = 0
        while m < len(present) and k + m < len(words) and present[m] == words[k + m]:
            m += 1
        k += m
        if m == 0 or (k < len(words) and m < len(present)):
            return None
        if k == len(words):
            return early
        end = col + re.match(r"\s+".join(map(re.escape, present[:m])), segment).end()
        if end + 1 + len(words[k]) < right:  # `<= right` would fit exactly: one column of slack
            early.append(f"break before {words[k]!r} ({right - end} columns free): {line.strip()!r}")
    return None


def layout_problems(lines: list[str], unit: str, width: int) -> list[str]:
    """Problems of how UNIT is laid out in the rendered LINES (none when it reads as prose)."""
    words = unit.split()
    found = False
    problems = []
    for row, line in enumerate(lines):
        for match in re.finditer(re.escape(words[0]), line):
            col = match.start()
            if col and not (line[col - 1].isspace() or line[col - 1] in BORDER + "•"):
                continue
            early = _follow(lines, row, col, words, width)
            if early is not None:
                found = True
                problems += early
    if not found:
        problems.append("not rendered as one run of text")
    return [f"{unit[:50]!r}...: {p}" for p in problems]


def help_problems(root: typer.Typer, path: tuple[str, ...], width: int) -> list[str]:
    """Every problem of ``llmblend PATH --help`` at WIDTH columns."""
    lines = render(root, path, width)
    widest = max(len(line) for line in lines)
    problems = [] if widest == width else [f"rendered {widest} columns wide, not {width}"]
    command = find_command(typer.main.get_command(root), path)
    for unit in prose_units(command):
        problems += layout_problems(lines, unit, width)
    return problems


PATHS = list(command_paths(typer.main.get_command(app)))


@pytest.fixture(autouse=True)
def _width_from_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer reads $TERMINAL_WIDTH once, at import, and it would beat $COLUMNS: ignore it here."""
    monkeypatch.setattr(rich_utils, "MAX_WIDTH", None)


def test_every_command_has_help() -> None:
    assert len(PATHS) > 15  # the app, 3 groups, and their commands
    root = typer.main.get_command(app)
    missing = [" ".join(p) for p in PATHS if p and not find_command(root, p).help]
    assert missing == []


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "llmblend")
def test_help_reads_as_prose(path: tuple[str, ...], width: int) -> None:
    assert help_problems(app, path, width) == []


def test_the_check_sees_a_hard_wrapped_paragraph() -> None:
    """A docstring wrapped in the source, as typer's rich mode shows it, is caught at both widths."""
    wrapped = typer.Typer(rich_markup_mode="rich")

    @wrapped.command()
    def rank(out: str = typer.Option("x", help="Where the ranked records go.")) -> None:
        """Rank every example's candidates.

        Each output record is the input record plus "ranking": the candidate order (best first), one
        score per candidate, the forward passes used and any error. OUT is appended chunk by chunk;
        rerunning the same command after an interruption ranks only what OUT lacks.
        """

    for width in WIDTHS:
        problems = help_problems(wrapped, (), width)
        assert problems and all("break before" in p for p in problems), problems
    assert any("break before 'rerunning'" in p for p in help_problems(wrapped, (), 200))


def test_prose_joins_wrapped_lines_and_keeps_list_items() -> None:
    text = """First line
    wrapped.

    Heading:
    • one item
      wrapped
    • [two]"""
    assert prose(text) == "First line wrapped.\n\nHeading:\n• one item wrapped\n• [two]"
    assert listing("Things:", ["a [b]", "c"]) == "Things:\n• a \\[b]\n• c"  # items are escaped


def test_epilog_lists_one_item_per_line() -> None:
    lines = render(app, ("eval", "ranker"), 200)
    items = [line.strip() for line in lines if line.strip().startswith("• ")]
    assert len(items) >= 5 and any(item.startswith("• longest — ") for item in items)


def test_help_imports_no_heavy_library() -> None:
    """``llmblend --help`` (and every other help page) leaves torch, transformers, onnxruntime alone."""
    code = (
        "import sys, typer\n"
        "from typer.testing import CliRunner\n"
        "from llmblend.cli import app\n"
        "sys.argv = ['llmblend', '--help']\n"
        "try:\n"
        "    app(prog_name='llmblend')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "def paths(command, path=()):\n"
        "    yield path\n"
        "    for name, sub in getattr(command, 'commands', {}).items():\n"
        "        yield from paths(sub, (*path, name))\n"
        "for path in paths(typer.main.get_command(app)):\n"
        "    assert CliRunner().invoke(app, [*path, '--help']).exit_code == 0, path\n"
        "heavy = ('torch', 'transformers', 'onnxruntime', 'llama_cpp', 'datasets', 'pyarrow')\n"
        "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Usage: llmblend" in result.stdout
    assert result.stdout.splitlines()[-1] == "HEAVY="
