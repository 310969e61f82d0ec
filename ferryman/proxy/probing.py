"""Connectivity probes: can this proxy reach a share or a repository, and how fast."""

from __future__ import annotations

import os
import stat
import time
from typing import Any

from ferryman.proxy.protocol import ProbeRequest, ProbeResult


def _local(path: str, must_exist: bool) -> None:
    if path.startswith("file://"):
        path = path[len("file://") :]
    if os.path.isdir(path):
        with os.scandir(path) as entries:
            next(entries, None)
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


SAMPLE_BYTES = 4 << 20
SAMPLE_ENTRIES = 200


def sample_throughput(path: str) -> float | None:
    """Read up to SAMPLE_BYTES from the first regular files of a shallow walk; bytes/s."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    done = 0
    seen = 0
    started = time.perf_counter()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            seen += 1
            if seen > SAMPLE_ENTRIES or done >= SAMPLE_BYTES:
                break
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                while done < SAMPLE_BYTES:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    done += len(chunk)
            except OSError:
                pass
            finally:
                os.close(fd)
        if seen > SAMPLE_ENTRIES or done >= SAMPLE_BYTES:
            break
    elapsed = time.perf_counter() - started
    return round(done / elapsed, 1) if done and elapsed > 0 else None


def _repository(url: str, credentials: dict[str, str] | None) -> None:
    """The repository must be there: a local path that merely *could* be created (the same
    path on another host) is not the repository the server means."""
    if not url.startswith("s3://"):
        _local(url, must_exist=True)
    from ferryman.repository import open_backend

    backend = open_backend(url, **(credentials or {}))
    if not backend.exists("config"):
        raise FileNotFoundError(f"no repository at {url} as seen from this proxy")


def _s3_share(url: str, credentials: dict[str, str] | None) -> None:
    """The bucket must answer a listing of the share's prefix with these keys."""
    from ferryman.proxy.share_access import s3_source

    s3_source(url, credentials).open_root()


SCAN_SECONDS = 30.0


def top_level_scan(path: str, budget: float = SCAN_SECONDS) -> dict[str, Any] | None:
    """Files and bytes per top-level entry (a metadata walk); None when over the time budget."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    deadline = time.monotonic() + budget
    top: dict[str, list[int]] = {}
    with os.scandir(path) as entries:
        first_level = sorted(entries, key=lambda e: e.name)
    for entry in first_level:
        files, size = 0, 0
        stack = [entry]
        while stack:
            item = stack.pop()
            try:
                if item.is_dir(follow_symlinks=False):
                    with os.scandir(item.path) as children:
                        stack.extend(children)
                    continue
                files += 1
                if item.is_file(follow_symlinks=False):
                    size += item.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            if files % 1024 == 0 and time.monotonic() > deadline:
                return None
        top[entry.name] = [files, size]
    return {
        "files": sum(v[0] for v in top.values()),
        "bytes": sum(v[1] for v in top.values()),
        "top": top,
    }


def round_trip(path: str, samples: int = 3) -> float:
    """Seconds for one metadata round trip (the best of a few, to ignore scheduling noise)."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    best = float("inf")
    for _ in range(samples):
        started = time.perf_counter()
        os.stat(path)
        best = min(best, time.perf_counter() - started)
    return best


def probe(request: ProbeRequest) -> ProbeResult:
    started = time.perf_counter()
    throughput = None
    scan = None
    try:
        if request.kind == "share" and request.url.startswith("smb://"):
            from ferryman.proxy.smb_access import probe_share

            rtt, throughput, scan = probe_share(request)
        elif request.kind == "share" and request.url.startswith("s3://"):
            _s3_share(request.url, request.credentials)
            rtt = time.perf_counter() - started
        elif request.kind == "share":
            _local(request.url, must_exist=True)
            rtt = round_trip(request.url)
            throughput = sample_throughput(request.url)
            if request.scan:
                scan = top_level_scan(request.url)
        else:
            _repository(request.url, request.credentials)
            rtt = time.perf_counter() - started
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
        rtt_ms=round(rtt * 1000, 3),
        throughput=throughput,
        scan=scan,
    )
