"""Errors the CLI shows to a person: one line on stderr and a non-zero exit code."""

from __future__ import annotations

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_ADDRESS_IN_USE = 4  # `server run`: the listen address is taken
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure with a message fit for a user; ``main`` prints it and exits non-zero."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CliError):
    """The backup server answered with an HTTP error status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class ServerUnreachable(CliError):
    """No answer from the backup server (refused, timed out, connection lost)."""
