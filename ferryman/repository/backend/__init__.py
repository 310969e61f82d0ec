"""Storage backends: local directory, S3-compatible object storage, and wrappers."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlparse

from ferryman.repository.backend.base import Backend, BackendStats, CountingBackend
from ferryman.repository.backend.local import LocalBackend
from ferryman.repository.backend.retry import RetryingBackend

__all__ = [
    "Backend",
    "BackendStats",
    "CountingBackend",
    "LocalBackend",
    "RetryingBackend",
    "open_backend",
]


def open_backend(url: str | os.PathLike[str], **options: Any) -> Backend:
    """Open a backend from an absolute path or ``s3://bucket/prefix?endpoint=...&region=...``.

    S3 options (keyword or query): ``endpoint``, ``region``, ``access_key``,
    ``secret_key``, ``session_token``; credentials otherwise come from the usual
    AWS environment variables / files.  The result is wrapped in
    :class:`RetryingBackend`.
    """
    text = os.fspath(url)
    if text.startswith("s3://"):
        from ferryman.repository.backend.s3 import S3Backend

        parsed = urlparse(text)
        if not parsed.netloc:
            raise ValueError(f"S3 URL without a bucket: {text!r}")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        merged: dict[str, Any] = {**query, **options}
        for int_key in ("max_attempts", "multipart_threshold", "multipart_chunksize"):
            if int_key in merged:
                merged[int_key] = int(merged[int_key])
        inner: Backend = S3Backend(parsed.netloc, parsed.path.lstrip("/"), **merged)
        return RetryingBackend(inner)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if not os.path.isabs(text):
        raise ValueError(f"repository location must be an absolute path or s3:// URL: {text!r}")
    return RetryingBackend(LocalBackend(text, **options))
