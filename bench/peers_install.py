"""Installing the peers (restic, borgbackup) from Debian packages when missing."""

from __future__ import annotations

import os
import shutil
import subprocess

PACKAGES = {"restic": "restic", "borg": "borgbackup"}


def missing_peers(tools: list[str]) -> list[str]:
    return [t for t in tools if t in PACKAGES and shutil.which(t) is None]


def _apt(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    return subprocess.run(cmd, env=env, check=False).returncode == 0


def install_peers(tools: list[str]) -> list[str]:
    """Install the missing peers with apt-get (as root); returns those still missing."""
    missing = missing_peers(tools)
    if not missing:
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return missing
    packages = [PACKAGES[t] for t in missing]
    print(f"installing {' '.join(packages)} with apt-get", flush=True)
    if not _apt("install", "-y", "-q", *packages):
        _apt("update", "-q")
        _apt("install", "-y", "-q", *packages)
    return missing_peers(tools)
