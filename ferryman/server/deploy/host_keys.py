"""Host key policy: a known_hosts file in the server home, trust on first use only when asked.

An unknown host is refused unless the deployment says `--trust-host-key` (then its key is
recorded); a host whose key differs from the recorded one is always refused, with both
fingerprints, because that is what a man in the middle looks like.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from ferryman.server.deploy.errors import HostKeyError


def host_pattern(host: str, port: int) -> str:
    """The OpenSSH known_hosts spelling of a host: `host` on port 22, else `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


class KnownHosts:
    """The server's known_hosts file (OpenSSH format, plain host names)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def recorded(self, host: str, port: int) -> list[asyncssh.SSHKey]:
        if not self.path.exists():
            return []
        pattern = host_pattern(host, port)
        keys = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3 or line.lstrip().startswith("#"):
                continue
            if pattern in parts[0].split(","):
                keys.append(asyncssh.import_public_key(f"{parts[1]} {parts[2]}"))
        return keys

    def record(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = f"{host_pattern(host, port)} {key.export_public_key('openssh').decode().strip()}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line)

    def check(self, host: str, port: int, offered: asyncssh.SSHKey, trust_new: bool) -> str:
        """Accept the offered key or raise HostKeyError; returns a word for the step line."""
        known = self.recorded(host, port)
        offered_data = offered.public_data
        if any(k.public_data == offered_data for k in known):
            return "known"
        where = host_pattern(host, port)
        if known:
            expected = ", ".join(fingerprint(k) for k in known)
            raise HostKeyError(
                f"host key of {where} has CHANGED: it offers {fingerprint(offered)}, "
                f"{self.path} records {expected}; refusing (possible man in the middle). "
                f"If the host was really reinstalled, remove its line from {self.path}"
            )
        if not trust_new:
            raise HostKeyError(
                f"unknown host key for {where} ({fingerprint(offered)}); check it on the host "
                "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and re-run with --trust-host-key"
            )
        self.record(host, port, offered)
        return "recorded (trusted on first use)"
