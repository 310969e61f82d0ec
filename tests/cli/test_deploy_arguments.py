"""`proxy deploy | upgrade | remove --uninstall`: bad input ends in one line, before any request."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ferryman.cli.main import run

from .conftest import one_error_line


@pytest.fixture
def dead_server() -> list[str]:
    """Global options pointing at a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return ["--server", f"http://127.0.0.1:{sock.getsockname()[1]}", "--token", "t"]


def test_login_options(
    dead_server: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = "ssh://root@10.0.0.9"
    assert run([*dead_server, "proxy", "deploy", target]) == 1
    assert "give --identity KEY or --password-env VAR" in one_error_line(capsys)
    missing = tmp_path / "nope"
    assert run([*dead_server, "proxy", "deploy", target, "--identity", str(missing)]) == 1
    assert f"cannot read the key file {missing}" in one_error_line(capsys)
    assert run([*dead_server, "proxy", "deploy", target, "--password-env", "FM_UNSET_VAR"]) == 1
    assert "FM_UNSET_VAR (named by --password-env) is not set" in one_error_line(capsys)
    assert run([*dead_server, "proxy", "remove", "p1", "--uninstall"]) == 1
    assert "give --identity KEY or --password-env VAR" in one_error_line(capsys)


def test_upgrade_needs_a_name_or_all(
    dead_server: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([*dead_server, "proxy", "upgrade", "--password-env", "X"]) == 1
    assert "give a proxy NAME or --all" in one_error_line(capsys)
    assert run([*dead_server, "proxy", "upgrade", "p1", "--all", "--password-env", "X"]) == 1
    assert "give a proxy NAME or --all" in one_error_line(capsys)


def test_a_dead_server_is_one_clear_line(
    dead_server: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert run([*dead_server, "proxy", "deploy", "ssh://root@h", "--identity", str(key)]) == 1
    assert "cannot reach the backup server at http://127.0.0.1:" in one_error_line(capsys)
