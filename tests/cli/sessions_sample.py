"""Session objects shaped like docs/api.md, for the views' tests."""

from __future__ import annotations

from typing import Any


def task(state: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 21,
        "kind": "backup",
        "share": "docs",
        "partition": None,
        "state": state,
        "proxy": "embedded",
        "reason": "same site as the share; lowest load 0/2",
        "passed_over": [{"proxy": "p2", "reason": "cannot reach the share: /srv/x: not found"}],
        "attempts": 1,
        "created": "2026-11-24T18:00:00Z",
        "started": "2026-11-24T18:00:01Z",
        "ended": None,
        "progress": {
            "files_scanned": 1200,
            "bytes_scanned": 120_000_000,
            "files_read": 300,
            "bytes_read": 40_000_000,
            "bytes_transferred": 10_000_000,
            "rate": 50_000_000,
            "eta_seconds": 12,
        },
        "stats": {
            "files": 0,
            "bytes": 0,
            "files_read": 0,
            "bytes_read": 0,
            "bytes_new": 0,
            "bytes_transferred": 0,
            "duration": 0.0,
        },
        "warnings": [],
        "error": None,
    }
    base.update(extra)
    return base


FINAL_STATS = {
    "files": 1500,
    "bytes": 150_000_000,
    "files_read": 1500,
    "bytes_read": 150_000_000,
    "bytes_new": 50_000_000,
    "bytes_transferred": 25_000_000,
    "duration": 75.0,
    "seconds_source_read": 10.0,
    "seconds_processing": 5.0,
    "seconds_repository_write": 60.0,
    "bottleneck": "repository",
}


def session(status: str, revision: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": 7,
        "kind": "backup",
        "job": "nightly",
        "status": status,
        "reason": None,
        "created": "2026-11-24T18:00:00Z",
        "started": "2026-11-24T18:00:00Z",
        "ended": None if status == "running" else "2026-11-24T18:01:15Z",
        "revision": revision,
        "restore_points": [] if status == "running" else [3],
        "tasks": tasks,
    }


RESTORE_STATS = {
    "files_restored": 314,
    "dirs_restored": 61,
    "links_restored": 2,
    "bytes_restored": 2_586_764,
    "files_skipped": 3,
    "errors": 0,
    "files": 314,
    "bytes": 2_586_764,
    "duration": 0.25,
    "files_read": 0,
    "bytes_read": 0,
    "bytes_new": 0,
    "bytes_transferred": 0,
}

CHECK_STATS = {
    "errors": [],
    "warnings": [],
    "damaged": ["pack 1f2e: authentication failed"],
    "points_checked": 4,
    "packs_checked": 12,
    "packs_read": 12,
    "blobs_read": 350,
}
