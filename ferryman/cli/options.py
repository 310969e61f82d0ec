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


def path_text(path: str) -> str:
    """A path for the API, always JSON-safe and starting with ``/``.

    A name typed in the shell that is not UTF-8 reaches Python with surrogates; it is sent
    with ``\\xNN`` escapes for its bytes (backslashes doubled), the form the server shows
    in ``ls`` (docs/api.md, "Names"). Text already holding ``\\xNN`` escapes goes as is.
    """
    path = path if path.startswith("/") else "/" + path
    raw = path.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    for char in raw.decode("utf-8", "surrogateescape"):
        if 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append("\\\\" if char == "\\" else char)
    return "".join(out)
