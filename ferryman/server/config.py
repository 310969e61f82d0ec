"""Server settings stored in `<home>/server.json`, with environment overrides for tests."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1:8443"
    db_url: str = ""
    # how often proxies heartbeat, and how long a task lease lasts without one
    heartbeat_interval: float = 5.0
    lease_seconds: float = 30.0
    # a proxy is offline when its last heartbeat is older than this
    offline_after: float = 20.0
    poll_timeout: float = 20.0
    probe_max_age: float = 300.0
    max_attempts: int = 5
    # a task no online proxy can reach fails after waiting this long
    unreachable_timeout: float = 300.0
    # shares above these sizes (from the previous run) are split into partitions
    partition_min_bytes: int = 4 * 1024**3
    partition_min_files: int = 500_000
    max_partitions: int = 16
    dispatch_interval: float = 0.5
    embedded_slots: int = 0  # 0 = derived from CPU cores and memory
    # where proxy deployment caches wheelhouses ("" = <home>/deploy/wheelhouse)
    wheelhouse_dir: str = ""
    # how often a backup task saves a checkpoint a resumed task continues from
    checkpoint_interval: float = 30.0
    # GET /metrics without a token (`server run --metrics-public`)
    metrics_public: bool = False
    # cron schedules and retention days are evaluated in this IANA time zone ("Europe/Paris")
    timezone: str = "UTC"
    # at start-up, run once each job that missed one or more scheduled runs while down
    catch_up: bool = True
    # how often the scheduler looks at the schedules (seconds)
    schedule_interval: float = 1.0
    # garbage collection after retention also rewrites live packs filled below this fraction
    gc_repack_below: float = 0.5
    # ended sessions (with their tasks and throughput samples) are removed this many days
    # after they end, except each job's newest; 0 keeps them forever (ferryman.server.history)
    history_days: int = 365

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"https://{host}:{self.port}"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ServerConfig:
        if not path.exists():
            raise FileNotFoundError(
                f"{path.parent} is not a Ferryman server home (no server.json); "
                "run `ferryman server init` first"
            )
        raw = json.loads(path.read_text())
        known = {f.name: f for f in fields(cls)}
        config = cls(**{k: v for k, v in raw.items() if k in known})
        config.apply_environment()
        return config

    def apply_environment(self) -> None:
        """`FERRYMAN_<SETTING>` overrides a setting (used by tests for short timings)."""
        for f in fields(self):
            value = os.environ.get(f"FERRYMAN_{f.name.upper()}")
            if value is None or f.name in ("db_url",):
                continue
            current = getattr(self, f.name)
            if isinstance(current, bool):
                setattr(self, f.name, value.strip().lower() in ("1", "true", "yes", "on"))
            else:
                setattr(self, f.name, type(current)(value))


def validate_listen(listen: str) -> str:
    _, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return listen
