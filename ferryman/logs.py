"""Logging of the long-running processes (`server run`, `proxy run`): text or JSON lines.

JSON lines carry ``time``, ``level``, ``logger``, ``message`` and the context fields of the
record: ``session``, ``task``, ``proxy``, ``job``, ``target`` given with ``extra=`` or bound
for a block with :func:`log_context` (e.g. a proxy's task thread). Secrets are never
passed to log calls; as a second line of defence, values of keys that look like secrets
are masked.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FORMATS = ("text", "json")
CONTEXT_KEYS = ("session", "task", "proxy", "job", "target")
SECRET_WORDS = ("password", "passphrase", "secret", "token", "key")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ferryman_log_context", default=None
)


class LogFormatError(ValueError):
    """An unknown --log-format / FERRYMAN_LOG_FORMAT value."""


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add context fields to every record logged by this thread inside the block."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound context (and process-wide fields) onto each record."""

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in {**self.fields, **(_context.get() or {})}.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(_masked(entry), default=str, ensure_ascii=False)


def _masked(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        k: "***" if any(word in k.lower() for word in SECRET_WORDS) else v for k, v in entry.items()
    }


def resolve_format(value: str | None) -> str:
    """The format from the option, else ``FERRYMAN_LOG_FORMAT``, else text."""
    chosen = (value or os.environ.get("FERRYMAN_LOG_FORMAT") or "text").strip().lower()
    if chosen not in FORMATS:
        raise LogFormatError(f"unknown log format {chosen!r}: choose text or json")
    return chosen


def configure_logging(log_format: str | None = None, **fields: Any) -> None:
    """Set up the root logger of a server or proxy process (stderr).

    A process whose logging is already set up (tests running a server in-process) keeps it.
    """
    chosen = resolve_format(log_format)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter(fields))
    root.addHandler(handler)
    root.setLevel(os.environ.get("FERRYMAN_LOG_LEVEL", "INFO").upper())


def set_process_field(key: str, value: Any) -> None:
    """Add a field to every record of this process (e.g. the proxy's name once joined)."""
    for handler in logging.getLogger().handlers:
        for flt in handler.filters:
            if isinstance(flt, ContextFilter):
                flt.fields[key] = value
