"""Where the CLI finds its server: options, environment, client config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferryman.cli.config import check_server_url, load_client_config, resolve_connection
from ferryman.cli.errors import CliError


def write_config(home: Path, **values: object) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "client.json").write_text(json.dumps(values))


def test_client_config_gives_server_token_and_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    write_config(tmp_path, server="https://127.0.0.1:8443/", token="t0k", ca=str(ca))
    conn = resolve_connection(tmp_path, None, None)
    assert conn.server == "https://127.0.0.1:8443"
    assert conn.token == "t0k"
    assert conn.ca_file == ca


def test_options_win_over_client_config(tmp_path: Path) -> None:
    write_config(tmp_path, server="https://127.0.0.1:8443", token="from-file")
    conn = resolve_connection(tmp_path, "http://127.0.0.1:9000", "from-option")
    assert (conn.server, conn.token) == ("http://127.0.0.1:9000", "from-option")


def test_relative_ca_is_inside_home(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "ca.pem").write_text("pem")
    write_config(tmp_path, server="https://h:1", ca="ca/ca.pem")
    assert resolve_connection(tmp_path, None, None).ca_file == tmp_path / "ca" / "ca.pem"


def test_no_config_and_no_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"no backup server configured.*server init"):
        resolve_connection(tmp_path, None, None)


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    write_config(tmp_path, server="https://h:1", ca=str(tmp_path / "gone.pem"))
    with pytest.raises(CliError, match=r"gone\.pem"):
        resolve_connection(tmp_path, None, None)


def test_broken_client_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "client.json").write_text("{not json")
    with pytest.raises(CliError, match=r"client\.json is not valid JSON"):
        load_client_config(tmp_path)


@pytest.mark.parametrize("url", ["127.0.0.1:8443", "ftp://h", "https://", "nonsense"])
def test_bad_server_url(url: str) -> None:
    with pytest.raises(CliError, match="invalid backup server URL"):
        check_server_url(url)


def test_ca_option_wins_and_must_exist(tmp_path: Path) -> None:
    mine = tmp_path / "other-ca.pem"
    mine.write_text("pem")
    write_config(tmp_path, server="https://h:1", ca=str(tmp_path / "unused.pem"))
    assert resolve_connection(tmp_path, None, None, mine).ca_file == mine
    with pytest.raises(CliError, match=r"--ca / FERRYMAN_CA"):
        resolve_connection(tmp_path, None, None, tmp_path / "nope.pem")
