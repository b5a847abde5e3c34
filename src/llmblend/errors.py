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


class BackendError(LlmblendError):
    """A generation backend failed; ``retryable`` says whether trying again may help.

    The subclasses are the kinds callers act on differently (LLM-Blender §2 gathers candidates from
    N LLMs; one failing must not cost the others): auth and bad requests need a fix, rate limits,
    timeouts, refused connections and 5xx replies pass with time.
    """

    kind = "error"
    retryable = False

    def __init__(self, message: str, *, backend: str | None = None, status: int | None = None) -> None:
        self.backend = backend
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.kind}: {super().__str__()}"


class BackendAuthError(BackendError):
    """401/403: the API key is missing or wrong (never retried)."""

    kind = "auth"


class BackendRateLimitError(BackendError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds when it gave one."""

    kind = "rate_limit"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class BackendTimeoutError(BackendError):
    """Connecting or reading took longer than the configured timeout."""

    kind = "timeout"
    retryable = True


class BackendConnectionError(BackendError):
    """The server could not be reached (refused, reset, DNS)."""

    kind = "connection"
    retryable = True


class BackendResponseError(BackendError):
    """A reply that is not a usable answer: 5xx (retried), another 4xx, or malformed JSON."""

    kind = "bad_response"

    def __init__(self, message: str, *, retryable: bool = False, **kwargs) -> None:
        self.retryable = retryable
        super().__init__(message, **kwargs)
