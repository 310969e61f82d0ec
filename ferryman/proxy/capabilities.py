"""What this proxy can do: source types, repository backends, snapshot tools, addresses."""

from __future__ import annotations

import shutil
import socket
from typing import Any

SNAPSHOT_TOOLS = {"lvm": "lvcreate", "zfs": "zfs", "btrfs": "btrfs"}


def detect() -> dict[str, Any]:
    repositories = ["local"]
    sources = ["local"]
    try:
        import boto3  # noqa: F401

        repositories.append("s3")
        sources.append("s3")
    except ImportError:
        pass
    try:
        import smbprotocol  # noqa: F401

        sources.append("smb")
    except ImportError:
        pass
    snapshots = {name for name, tool in SNAPSHOT_TOOLS.items() if shutil.which(tool)}
    # nas-dir only reads folders; command runs the administrator's scripts with /bin/sh
    snapshots |= {"nas-dir"} | ({"command"} if shutil.which("sh") else set())
    return {
        "sources": sources,
        "repositories": repositories,
        "snapshots": sorted(snapshots),
    }


def addresses() -> list[str]:
    """Addresses of this host (best effort, no network traffic)."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    except OSError:
        pass
    return sorted(found) or ["127.0.0.1"]
