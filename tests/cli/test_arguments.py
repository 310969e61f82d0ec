"""Argument validation happens before any request and ends in one line on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferryman.cli.commands.job import parse_proxies
from ferryman.cli.commands.proxy import parse_duration
from ferryman.cli.errors import CliError
from ferryman.cli.main import run
from ferryman.cli.output import printable

from .conftest import one_error_line


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["share", "add"]) == 2
    assert "Missing argument 'name'" in one_error_line(capsys)


def test_unknown_io_control_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["share", "add", "s", "/tmp", "--io-control", "fastest"]) == 2
    line = one_error_line(capsys)
    assert "'fastest' is not one of" in line and "below-normal" in line


def test_restore_needs_exactly_one_target(
    capsys: pytest.CaptureFixture[str], dead_server: str
) -> None:
    assert run(["--server", dead_server, "restore", "1"]) == 1
    assert "exactly one of --to URL or --in-place" in one_error_line(capsys)
    assert run(["--server", dead_server, "restore", "1", "--to", "/x", "--in-place"]) == 1
    assert "exactly one of" in one_error_line(capsys)


def test_bad_overwrite_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["restore", "1", "--to", "/x", "--overwrite", "always"]) == 2
    assert "'always' is not one of" in one_error_line(capsys)


def test_missing_passphrase_variable_is_named(
    capsys: pytest.CaptureFixture[str], dead_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRYMAN_TEST_NO_SUCH_VAR", raising=False)
    code = run(
        ["--server", dead_server, "repo", "add", "r", "/srv/repo",
         "--passphrase-env", "FERRYMAN_TEST_NO_SUCH_VAR"]
    )  # fmt: skip
    assert code == 1
    line = one_error_line(capsys)
    assert "FERRYMAN_TEST_NO_SUCH_VAR" in line and "not set" in line


def test_s3_keys_go_together(capsys: pytest.CaptureFixture[str], dead_server: str) -> None:
    code = run(["--server", dead_server, "repo", "add", "r", "s3://b/p", "--access-key-env", "K"])
    assert code == 1
    assert "--access-key-env and --secret-key-env go together" in one_error_line(capsys)


def test_negative_retention_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["job", "add", "j", "--share", "s", "--repo", "r", "--keep-last", "0"]) == 2
    assert "--keep-last" in one_error_line(capsys)


def test_unreachable_server(capsys: pytest.CaptureFixture[str], dead_server: str) -> None:
    assert run(["--server", dead_server, "share", "list"]) == 1
    line = one_error_line(capsys)
    assert f"cannot reach the backup server at {dead_server}: " in line


def test_no_server_configured(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(["--home", str(tmp_path), "job", "list"]) == 1
    assert "no backup server configured" in one_error_line(capsys)


def test_bad_listen_address(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(["--home", str(tmp_path), "server", "init", "--listen", "8443"]) == 1
    assert "invalid --listen '8443'" in one_error_line(capsys)


def test_server_run_needs_an_initialised_home(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["--home", str(tmp_path / "nothing"), "server", "run"]) == 1
    assert "ferryman server init" in one_error_line(capsys)


def test_group_alone_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["job"]) == 2
    out = capsys.readouterr().out
    assert "Usage: ferryman job" in out and "run" in out


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", "90s"), ("90s", "90s"), ("30m", "1800s"), ("1h30m", "5400s"),
                          ("2d", "172800s")]
)  # fmt: skip
def test_durations(text: str, seconds: str) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "0s", "-5m", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(CliError, match="invalid duration"):
        parse_duration(text)


def test_proxies_option() -> None:
    assert parse_proxies("auto") == "auto"
    assert parse_proxies("p1, p2") == ["p1", "p2"]
    with pytest.raises(CliError, match="invalid --proxies"):
        parse_proxies("p1,,p2")


def test_listed_names_stay_on_one_line() -> None:
    assert printable("new\nline.txt") == "new\\nline.txt"
    assert printable("café [x].txt") == "café [x].txt"


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_user_password_is_asked_twice_at_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dead_server: str
) -> None:
    typed: list[str] = []
    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: typed.pop(0))
    add = ["--server", dead_server, "user", "add", "eve", "--role", "viewer"]
    typed[:] = ["long enough", "long enougH"]
    assert run(add) == 1
    assert "the two passwords differ; nothing changed" in one_error_line(capsys)
    typed[:] = ["long enough", "long enough"]
    assert run(add) == 1  # the same twice: the request is sent (nothing listens there)
    assert "cannot reach the backup server" in one_error_line(capsys)
    assert typed == []
