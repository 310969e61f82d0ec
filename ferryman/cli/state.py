"""Per-invocation state shared by the commands: the home folder and a lazily built API client."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ferryman.cli.config import resolve_connection, resolve_home

if TYPE_CHECKING:
    from ferryman.cli.client import ApiClient


@dataclass
class CliState:
    """What the global options decided; the client is only built when a command needs it."""

    home_option: Path | None = None
    server_option: str | None = None
    token_option: str | None = None
    ca_option: Path | None = None
    _client: ApiClient | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        return resolve_home(self.home_option)

    def client(self) -> ApiClient:
        if self._client is None:
            from ferryman.cli.client import ApiClient  # ssl, http.client: only for API calls

            connection = resolve_connection(
                self.home, self.server_option, self.token_option, self.ca_option
            )
            self._client = ApiClient(connection)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def get_state(ctx: typer.Context) -> CliState:
    """The CliState of this invocation (set up by the top-level callback)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def api(ctx: typer.Context) -> ApiClient:
    """Shortcut for commands: the API client of this invocation."""
    return get_state(ctx).client()
