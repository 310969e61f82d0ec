"""Where a server (or proxy) keeps its state: the home folder and its layout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "~/.ferryman"


def home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the home folder: an explicit `--home`, else `FERRYMAN_HOME`, else `~/.ferryman`."""
    chosen = explicit or os.environ.get("FERRYMAN_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class ServerHome:
    """The files of a backup server home."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "server.json"

    @property
    def client_config(self) -> Path:
        return self.root / "client.json"

    @property
    def secret_key(self) -> Path:
        return self.root / "secret.key"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls" / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls" / "server.key"

    @property
    def database(self) -> Path:
        return self.root / "ferryman.db"

    @property
    def default_repository(self) -> Path:
        return self.root / "repository"

    @property
    def embedded_proxy(self) -> Path:
        return self.root / "proxy"

    @property
    def log(self) -> Path:
        return self.root / "server.log"
