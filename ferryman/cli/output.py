"""How the CLI prints: JSON for scripts, plain rich tables for people.

rich is imported when something is printed through it, not when a command module is
imported: ``--help``, ``--json`` and commands that only echo an id never load it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod


def stdout_console() -> Console:
    """A console for results; wide enough off a terminal that ids are never cut."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=200, soft_wrap=True)


# the control characters rich's Text drops (bell, backspace, vertical tab, form feed, CR)
RICH_STRIPPED = dict.fromkeys((7, 8, 11, 12, 13))
# variables with which rich may treat a pipe as a terminal (rich.console.Console.is_terminal)
TERMINAL_VARIABLES = ("TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL")


class PlainLines:
    """Lines written to stdout as they are, the way the plain (off-terminal) rich console
    printed them: a followed session's progress in a pipe or a log file does not load
    rich (~30 ms of CPU per command, docs/cli.md "Start-up").

    Unlike rich, ``:name:`` in a line stays as typed (rich turned it into an emoji).
    """

    is_terminal = False

    def print(self, text: str, markup: bool = False) -> None:
        """Write one line and flush it (a tail of the log sees it at once)."""
        sys.stdout.write(text.translate(RICH_STRIPPED) + "\n")
        sys.stdout.flush()


def lines_console() -> Console | PlainLines:
    """Where a command prints progress lines: rich on a terminal, :class:`PlainLines` in a
    pipe or a file (unless the environment asks rich to treat it as a terminal)."""
    if sys.stdout.isatty() or any(name in os.environ for name in TERMINAL_VARIABLES):
        return stdout_console()
    return PlainLines()


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (the stable ``--json`` output)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Column:
    """One table column: a header and how to get its text from a row object."""

    header: str
    value: Callable[[dict[str, Any]], Any]
    justify: JustifyMethod = "left"


def field(name: str, fmt: Callable[[Any], str] | None = None) -> Callable[[dict[str, Any]], Any]:
    """Column getter for ``row[name]`` with an optional formatter; missing values show '-'."""

    def get(row: dict[str, Any]) -> Any:
        value = row.get(name)
        if value is None or value == "":
            return "-"
        return fmt(value) if fmt else value

    return get


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column], empty: str) -> None:
    """Print rows as a table, or the ``empty`` sentence when there are none."""
    from rich.table import Table
    from rich.text import Text

    rows = list(rows)
    console = stdout_console()
    if not rows:
        console.print(empty, markup=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.header, justify=column.justify)
    for row in rows:
        # Text, not str: names and paths may hold [brackets] that rich would read as markup
        table.add_row(*(Text(to_text(column.value(row))) for column in columns))
    with console.capture() as captured:
        console.print(table)
    # rich pads the last column to its width; trailing blanks only get in the way of scripts
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    sys.stdout.write(text + "\n")


def to_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(to_text(item) for item in value) if value else "-"
    return str(value)


def printable(name: str) -> str:
    """A file name on one line: control characters (newlines…) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def format_bytes(value: Any) -> str:
    """1536 -> '1.5 KiB'."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # unreachable, keeps mypy happy


def format_rate(bytes_per_second: Any) -> str:
    if bytes_per_second is None:
        return "-"
    return f"{format_bytes(bytes_per_second)}/s"


def format_count(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "-"


def format_duration(seconds: Any) -> str:
    """75.2 -> '1m15s'; 3725 -> '1h02m05s'."""
    try:
        total = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if total < 10:
        return f"{total:.1f}s"
    whole = round(total)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_time(value: Any) -> str:
    """An ISO-8601 timestamp (or seconds since the epoch) shown in local time to the second."""
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return str(value)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_ratio(value: Any) -> str:
    try:
        return f"{float(value):.2f}x"
    except (TypeError, ValueError):
        return "-"


def oldest_first(items: Any, *keys: str) -> list[Any]:
    """Sort a JSON array oldest first by the first of ``keys`` each item has (stable)."""
    if not isinstance(items, list):
        return []

    def key(item: Any) -> str:
        if isinstance(item, dict):
            for name in keys:
                if item.get(name) is not None:
                    return str(item[name])
        return ""

    return sorted(items, key=key)
