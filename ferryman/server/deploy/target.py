"""Where to deploy and how to log in: `ssh://user@host[:port]` plus the credentials of one call."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ferryman.server.deploy.errors import DeployError

_TARGET = re.compile(
    r"^(?:ssh://)?(?P<user>[A-Za-z0-9._-]+)@(?P<host>\[[0-9a-fA-F:]+\]|[^:/@\s]+)(?::(?P<port>\d+))?/?$"
)


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        match = _TARGET.match(text.strip())
        if not match:
            raise DeployError(f"bad target {text!r}: use ssh://user@host[:port]")
        port = int(match.group("port") or 22)
        if not 0 < port < 65536:
            raise DeployError(f"bad target {text!r}: port must be 1-65535")
        return cls(match.group("user"), match.group("host").strip("[]"), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"


@dataclass
class Credentials:
    """Secrets of one call: used to log in, never logged, never stored (see docs/api.md)."""

    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.private_key and not self.password:
            raise DeployError("give a private key (--identity) or a password (--password-env)")
