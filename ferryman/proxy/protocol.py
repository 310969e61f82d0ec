"""Messages between proxies and the server (pydantic). The server imports these, never the reverse.

Remote proxies exchange them as JSON over mutual TLS (`/proxy/v1/...`); the
embedded proxy passes the same objects through an in-process channel.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

TaskKind = Literal[
    "backup", "assemble", "restore", "check", "browse", "attach", "scan", "maintenance"
]
FinalState = Literal["success", "warning", "failed", "stopped"]


class TaskReassigned(Exception):
    """The server gave this task to another proxy (our lease expired): drop it."""


class ProxyInfo(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    site: str | None = None
    slots: int = Field(ge=1, le=1024)
    version: str
    addresses: list[str] = []
    capabilities: dict[str, Any] = {}


class JoinRequest(ProxyInfo):
    token: str = Field(min_length=1)
    csr_pem: str = Field(min_length=1)


class JoinResponse(BaseModel):
    proxy_id: int
    name: str
    certificate_pem: str
    ca_pem: str


class ProbeRequest(BaseModel):
    kind: Literal["share", "repository"]
    target_id: int
    url: str
    credentials: dict[str, str] | None = None
    # also count files and bytes per top-level entry (a share never backed up yet)
    scan: bool = False


class ProbeResult(BaseModel):
    kind: Literal["share", "repository"]
    target_id: int
    url: str
    ok: bool
    rtt_ms: float | None = None
    throughput: float | None = None  # bytes/s of a short sample read (shares)
    error: str | None = None
    # {"files", "bytes", "top": {name: [files, bytes]}} when a scan was asked and finished
    scan: dict[str, Any] | None = None


class Heartbeat(BaseModel):
    slots: int = Field(ge=1, le=1024)
    version: str
    site: str | None = None
    addresses: list[str] = []
    capabilities: dict[str, Any] = {}
    running_tasks: list[int] = []
    probe_results: list[ProbeResult] = []


class HeartbeatReply(BaseModel):
    keep_tasks: list[int] = []
    cancel_tasks: list[int] = []
    probes: list[ProbeRequest] = []
    heartbeat_interval: float = 5.0


class RepositoryAccess(BaseModel):
    id: int
    name: str
    url: str
    passphrase: str = Field(repr=False)
    access_key: str | None = Field(default=None, repr=False)
    secret_key: str | None = Field(default=None, repr=False)


class ShareSpec(BaseModel):
    id: int
    name: str
    url: str
    include: list[str] = []
    exclude: list[str] = []
    # e.g. {"password": ...} for an smb:// share (decrypted by the server for this task)
    credentials: dict[str, str] | None = Field(default=None, repr=False)
    # snapshot provider of a local share: {"provider": "btrfs"|"nas-dir"|"command", ...}
    snapshot: dict[str, Any] | None = None
    # the share's I/O control level; "adaptive" makes the backup follow source latency
    io_control: str = "normal"


class TaskAssignment(BaseModel):
    task_id: int
    session_id: int
    kind: TaskKind
    attempt: int = 1
    repository: RepositoryAccess | None = None
    share: ShareSpec | None = None
    # {"index": i, "count": n, "paths": [...]} for one partition of a share
    partition: dict[str, Any] | None = None
    # kind-specific: restore {point_id, paths, target, overwrite}; assemble {results}; ...
    params: dict[str, Any] = {}


class PollReply(BaseModel):
    tasks: list[TaskAssignment] = []
    # connectivity probes the server wants now (new share/repository, stale cache)
    probes: list[ProbeRequest] = []


class TaskProgress(BaseModel):
    task_id: int
    progress: dict[str, Any]


class TaskResult(BaseModel):
    task_id: int
    state: FinalState
    stats: dict[str, Any] = {}
    warnings: list[dict[str, Any]] = []
    error: str | None = None
    output: dict[str, Any] = {}


class ProxyChannel(Protocol):
    """What a proxy needs from the server: HTTPS + mTLS when remote, in-process when embedded."""

    def heartbeat(self, beat: Heartbeat) -> HeartbeatReply: ...

    def poll(self, timeout: float) -> PollReply: ...

    def progress(self, update: TaskProgress) -> None:
        """Raises TaskReassigned when the task is no longer ours."""

    def result(self, result: TaskResult) -> None:
        """Raises TaskReassigned when the task is no longer ours."""
