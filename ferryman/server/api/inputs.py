"""Validation of user input shared by the routers: names, URLs, cron expressions."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from pydantic import Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def Name() -> object:
    return Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


def printable(value: str, what: str) -> str:
    """Reject control characters (NUL, newlines...) that no path, label or URL needs here."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{what} contains control characters")
    return value


def no_nul(value: str, what: str) -> str:
    """File names may hold newlines and other oddities, never NUL."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    return value


def local_path(url: str, what: str) -> str:
    """An absolute local path from `/x` or `file:///x`; ValueError with a clear message."""
    printable(url, what)
    if url.startswith("file://"):
        url = printable(unquote(urlsplit(url).path), what)
    if not url.startswith("/"):
        raise ValueError(f"{what} must be an absolute path or a file:// URL, got {url!r}")
    return os.path.normpath(url)


def repository_url(url: str) -> str:
    printable(url, "repository URL")
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError("an S3 repository URL needs a bucket: s3://bucket/prefix?endpoint=...")
        return url
    if "://" in url and not url.startswith("file://"):
        raise ValueError(
            f"unsupported repository URL {url!r}: use an absolute path or s3://bucket/prefix"
        )
    return local_path(url, "repository URL")


def share_url(url: str) -> str:
    if url.startswith("smb://"):
        from ferryman.sources.smb_url import parse_smb_url

        return parse_smb_url(printable(url, "share URL")).display()
    if url.startswith("s3://"):
        from ferryman.sources.s3 import parse_s3_url

        parse_s3_url(printable(url, "share URL"))
        return url
    if "://" in url and not url.startswith("file://"):
        scheme = url.split("://", 1)[0]
        raise ValueError(
            f"unsupported share URL scheme '{scheme}': a local or mounted path, smb:// or s3://"
        )
    return local_path(url, "share URL")


def cron(expression: str | None) -> str | None:
    if expression is None or not expression.strip():
        return None
    from croniter import croniter

    if not croniter.is_valid(expression.strip()):
        raise ValueError(f"invalid cron expression {expression!r} (e.g. '0 2 * * *')")
    try:
        croniter(expression.strip()).get_next()
    except ValueError:  # e.g. '0 0 30 2 *': valid fields, but no such date
        raise ValueError(f"cron expression {expression!r} never fires") from None
    return expression.strip()
