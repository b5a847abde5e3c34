"""llmblend's errors: one base class, a few subclasses whose messages say what to do."""

from __future__ import annotations

from dataclasses import dataclass


class LlmblendError(Exception):
    """Base class of every error llmblend raises on purpose."""


@dataclass(frozen=True, slots=True)
class DataProblem:
    """One problem in a data file: where it is (file, 1-based line, field) and what is wrong."""

    path: str
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class DataFormatError(LlmblendError, ValueError):
    """A record that does not have the expected shape; names file, line and field."""

    def __init__(self, problem: DataProblem, more: int = 0) -> None:
        self.problem = problem
        hint = (
            f" (and {more} more problem(s) on this line; `llmblend data validate {problem.path}`"
            " lists them all)"
            if more
            else ""
        )
        super().__init__(f"{problem}{hint}")


class DataNotFoundError(LlmblendError, FileNotFoundError):
    """A data file or folder that is not where it was looked for."""


class MissingExtraError(LlmblendError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed; "
            f"run: pip install 'llmblend[{extra}]'"
        )
