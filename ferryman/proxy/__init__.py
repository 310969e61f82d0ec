"""General-purpose backup proxy: registers with the server, heartbeats, runs tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def run_proxy(
    server_url: str,
    join_token: str | None,
    name: str | None = None,
    site: str | None = None,
    slots: int | None = None,
    home: str | Path | None = None,
    **options: Any,
) -> None:
    """Join (first time) and run a remote proxy until SIGTERM/SIGINT. Blocking."""
    from ferryman.proxy.service import run_remote_proxy

    run_remote_proxy(
        server_url, join_token, name=name, site=site, slots=slots, home=home, **options
    )


__all__ = ["run_proxy"]
