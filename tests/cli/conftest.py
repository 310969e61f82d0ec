"""Helpers shared by the CLI argument tests."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def dead_server() -> str:
    """A loopback URL nothing listens on: a command that sends a request fails loudly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``ferryman: error: ...`` line on stderr (no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ferryman: error: ")
    assert "Traceback" not in err
    return lines[0]
