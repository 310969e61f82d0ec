"""What the server remembers of each deployment: how to reach the host again (no secrets).

Kept as one JSON file per proxy under `<server home>/deploy/proxies/`, next to the
`known_hosts` file it goes with (docs/decisions/0005-proxy-deployment.md says why not
in the configuration database).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ferryman.server.deploy.errors import DeployError


@dataclass
class DeploymentRecord:
    name: str
    target: str  # ssh://user@host:port
    sudo: bool
    install_dir: str
    account: str | None
    service: str  # systemd | supervised
    server_url: str
    site: str | None
    slots: int | None
    version: str
    deployed: str  # ISO time


class DeploymentRecords:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", name) or name.startswith("."):
            raise DeployError(f"bad proxy name {name!r}: letters, digits, '.', '_' and '-' only")
        return self.folder / f"{name}.json"

    def get(self, name: str) -> DeploymentRecord | None:
        path = self._path(name)
        if not path.exists():
            return None
        return DeploymentRecord(**json.loads(path.read_text()))

    def save(self, record: DeploymentRecord) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(record.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
        os.replace(tmp, path)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def all(self) -> list[DeploymentRecord]:
        if not self.folder.exists():
            return []
        return [
            DeploymentRecord(**json.loads(p.read_text()))
            for p in sorted(self.folder.glob("*.json"))
        ]
