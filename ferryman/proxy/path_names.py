"""File names that are not UTF-8, carried safely through JSON (see docs/api.md, "Names").

Names are bytes. A name that is valid UTF-8 is shown as is. Any other name is shown with
each byte that is not part of valid UTF-8 written ``\\xNN`` and each backslash doubled
(so is a UTF-8 name that contains the text ``\\xNN``): the text fits JSON and always
reads back to the same bytes; ``name_b64`` carries the exact bytes too. Paths given to
the API may use those escapes, or be given exactly in base64 (``path_b64``).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

_ESCAPE = re.compile(rb"\\\\|\\x([0-9a-fA-F]{2})")
_HEX_ESCAPE = re.compile(r"\\x[0-9a-fA-F]{2}")


class BadPath(ValueError):
    """A ``path_b64`` value that is not base64."""


def display(raw: bytes) -> str:
    """Printable, JSON-safe text for a name or path given as bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        # a UTF-8 name holding the text \xNN: double its backslashes, so that
        # parse() reads the shown form back to these bytes and not to an escape
        return text.replace("\\", "\\\\") if _HEX_ESCAPE.search(text) else text
    out: list[str] = []
    for chunk in _utf8_runs(raw):
        if isinstance(chunk, str):
            out.append(chunk.replace("\\", "\\\\"))
        else:
            out.extend(f"\\x{b:02x}" for b in chunk)
    return "".join(out)


def _utf8_runs(raw: bytes) -> list[str | bytes]:
    """Split ``raw`` into decodable text and undecodable bytes, in order."""
    runs: list[str | bytes] = []
    rest = raw
    while rest:
        try:
            runs.append(rest.decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            if exc.start:
                runs.append(rest[: exc.start].decode("utf-8"))
            runs.append(rest[exc.start : exc.end])
            rest = rest[exc.end :]
    return runs


def parse(text: str) -> bytes:
    """Bytes of a path typed by a person or copied from ``display``.

    ``\\xNN`` escapes (and ``\\\\``) are read back only when the text holds at least one
    ``\\xNN``: a valid UTF-8 name never needs them, so other backslashes stay literal.
    Text that carries undecodable bytes as surrogates (``os.fsdecode``) keeps them.
    """
    raw = text.encode("utf-8", "surrogateescape")
    if not _HEX_ESCAPE.search(text):
        return raw
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else b"\\", raw)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def from_b64(value: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise BadPath(f"path_b64 is not valid base64: {value[:40]!r}") from exc


def json_safe(value: Any) -> Any:
    """``value`` with every string holding undecodable bytes (surrogates) in display form.

    Paths read from a filesystem reach Python as ``os.fsdecode`` text; JSON cannot carry
    them. Applied to what people see (progress, warnings, the API's session view).
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return display(value.encode("utf-8", "surrogateescape"))
        return value
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
