"""The embedded proxy: runs inside the server process, same protocol over an in-process channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ferryman.proxy.protocol import (
    Heartbeat,
    HeartbeatReply,
    PollReply,
    TaskProgress,
    TaskResult,
)
from ferryman.proxy.service import ProxyService


class Gateway(Protocol):
    """The server-side object the embedded channel calls (the server's ProxyGateway)."""

    def heartbeat(self, proxy_id: int, beat: Heartbeat) -> HeartbeatReply: ...
    def poll(self, proxy_id: int, timeout: float) -> PollReply: ...
    def progress(self, proxy_id: int, update: TaskProgress) -> None: ...
    def result(self, proxy_id: int, result: TaskResult) -> None: ...


class InProcessChannel:
    """`ProxyChannel` that calls the gateway directly (messages are still validated models)."""

    def __init__(self, gateway: Gateway, proxy_id: int) -> None:
        self.gateway = gateway
        self.proxy_id = proxy_id

    def heartbeat(self, beat: Heartbeat) -> HeartbeatReply:
        return self.gateway.heartbeat(self.proxy_id, beat)

    def poll(self, timeout: float) -> PollReply:
        return self.gateway.poll(self.proxy_id, timeout)

    def progress(self, update: TaskProgress) -> None:
        self.gateway.progress(self.proxy_id, update)

    def result(self, result: TaskResult) -> None:
        self.gateway.result(self.proxy_id, result)


def start_embedded_proxy(
    gateway: Gateway, proxy_id: int, home: Path, slots: int, site: str | None = None, **options: Any
) -> ProxyService:
    service = ProxyService(
        InProcessChannel(gateway, proxy_id),
        slots=slots,
        site=site,
        cache_dir=home / "cache",
        **options,
    )
    service.start()
    return service
