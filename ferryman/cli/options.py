"""Options and small converters shared by several commands."""

from __future__ import annotations

import os
from typing import Annotated
from urllib.parse import quote

import typer

from ferryman.cli.errors import CliError

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (stable shape, see docs/cli.md).")
]


def ref(value: str | int) -> str:
    """An object reference (id or name) made safe for a URL path segment."""
    return quote(str(value), safe="")


def env_secret(variable: str, option: str) -> str:
    """The value of an environment variable named by ``option``; a clear error if unset."""
    value = os.environ.get(variable)
    if value is None:
        raise CliError(f"environment variable {variable} (named by {option}) is not set")
    if value == "":
        raise CliError(f"environment variable {variable} (named by {option}) is empty")
    return value
