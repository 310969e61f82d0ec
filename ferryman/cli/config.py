"""Where the CLI finds its home folder and the backup server it talks to.

Precedence for each setting: command-line option, then environment variable
(``FERRYMAN_HOME``, ``FERRYMAN_SERVER``, ``FERRYMAN_TOKEN``, ``FERRYMAN_CA``), then
the client config ``<home>/client.json`` that ``ferryman server init`` writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ferryman.cli.errors import CliError

CLIENT_CONFIG_NAME = "client.json"


def default_home() -> Path:
    """The home folder used when neither ``--home`` nor ``FERRYMAN_HOME`` is given."""
    return Path.home() / ".ferryman"


def resolve_home(home: Path | None) -> Path:
    """``--home`` (typer already folds ``FERRYMAN_HOME`` into it) or the default."""
    return (home if home is not None else default_home()).expanduser().resolve()


@dataclass(frozen=True)
class Connection:
    """How to reach the backup server's REST API."""

    server: str
    token: str | None
    ca_file: Path | None


def load_client_config(home: Path) -> dict[str, Any]:
    """Read ``<home>/client.json``; an absent file is an empty config."""
    path = home / CLIENT_CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read the client config {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(f"the client config {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CliError(f"the client config {path} is not a JSON object")
    return data


def check_server_url(url: str) -> str:
    """Validate an ``http(s)://host[:port]`` URL and drop a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"invalid backup server URL {url!r}: expected https://HOST:PORT")
    return url.rstrip("/")


def resolve_connection(
    home: Path, server: str | None, token: str | None, ca: Path | None = None
) -> Connection:
    """Combine options/environment with the client config of ``home``."""
    config = load_client_config(home)
    server = server or config.get("server")
    if not server:
        raise CliError(
            f"no backup server configured: no {home / CLIENT_CONFIG_NAME} "
            "(run 'ferryman server init', or pass --server URL / set FERRYMAN_SERVER)"
        )
    ca_file: Path | None = None
    if ca is not None:
        ca_file = ca.expanduser()
        if not ca_file.is_file():
            raise CliError(f"the CA file {ca_file} (--ca / FERRYMAN_CA) does not exist")
    elif config.get("ca"):
        configured = str(config["ca"])
        ca_file = Path(configured) if os.path.isabs(configured) else home / configured
        if not ca_file.is_file():
            raise CliError(
                f"the installation CA file {ca_file} (from the client config) is missing"
            )
    return Connection(
        server=check_server_url(str(server)),
        token=token or config.get("token"),
        ca_file=ca_file,
    )
