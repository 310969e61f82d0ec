"""Options and small converters shared by several commands."""

from __future__ import annotations

import os
from typing import Annotated
from urllib.parse import quote, urlsplit

import typer

from ferryman.cli.errors import CliError

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (stable shape, see docs/cli.md).")
]


def ref(value: str | int) -> str:
    """An object reference (id or name) made safe for a URL path segment."""
    return quote(str(value), safe="")


def location(url: str, what: str) -> str:
    """A source/target location as the server expects it.

    A plain path is made absolute against the current folder (the embedded default
    runs on this machine); ``file://`` and other URLs are passed on unchanged for
    the server to validate.
    """
    if not url:
        raise CliError(f"the {what} location is empty")
    if "://" in url:
        if not urlsplit(url).scheme:
            raise CliError(f"invalid {what} URL {url!r}")
        return url
    return os.path.abspath(os.path.expanduser(url))


def env_secret(variable: str, option: str) -> str:
    """The value of an environment variable named by ``option``; a clear error if unset."""
    value = os.environ.get(variable)
    if value is None:
        raise CliError(f"environment variable {variable} (named by {option}) is not set")
    if value == "":
        raise CliError(f"environment variable {variable} (named by {option}) is empty")
    return value
