"""Connectivity probes: can this proxy reach a share or a repository, and how fast."""

from __future__ import annotations

import os
import time

from ferryman.proxy.protocol import ProbeRequest, ProbeResult


def _local(path: str, must_exist: bool) -> None:
    if path.startswith("file://"):
        path = path[len("file://") :]
    if os.path.isdir(path):
        os.listdir(path)
        if not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(f"{path}: permission denied")
        return
    if os.path.exists(path):
        raise NotADirectoryError(f"{path}: not a folder")
    if must_exist:
        raise FileNotFoundError(f"{path}: no such folder")
    parent = os.path.dirname(path.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{parent}: no such folder")


def _repository(url: str, credentials: dict[str, str] | None) -> None:
    if not url.startswith("s3://"):
        _local(url, must_exist=False)
        return
    from ferryman.repository import open_backend

    backend = open_backend(url, **(credentials or {}))
    backend.exists("config")


def probe(request: ProbeRequest) -> ProbeResult:
    started = time.perf_counter()
    try:
        if request.kind == "share":
            _local(request.url, must_exist=True)
        else:
            _repository(request.url, request.credentials)
    except Exception as exc:  # any failure means "cannot reach"; the reason goes to the server
        return ProbeResult(
            kind=request.kind,
            target_id=request.target_id,
            url=request.url,
            ok=False,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
    return ProbeResult(
        kind=request.kind,
        target_id=request.target_id,
        url=request.url,
        ok=True,
        rtt_ms=round((time.perf_counter() - started) * 1000, 3),
    )
