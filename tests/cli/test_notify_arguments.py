"""`ferryman notify` and `server run` options are checked before any request: one line."""

from __future__ import annotations

import pytest

from ferryman.cli.main import run

from .conftest import one_error_line


@pytest.mark.parametrize(
    "args, message",
    [
        (["webhook", "h", "http://x/", "--on", "failed,sometimes"],
         "invalid --on 'failed,sometimes': sometimes is not a session status"),
        (["email", "m", "--smtp", "mail:99999", "--from", "a@b", "--to", "c@d"],
         "invalid --smtp 'mail:99999': expected HOST or HOST:PORT"),
        (["email", "m", "--smtp", "mail", "--from", "a@b", "--to", "c@d",
          "--password-env", "P"], "--password-env needs --user"),
        (["webhook", "h", "http://x/", "--secret-env", "FERRYMAN_TEST_NO_SUCH_VAR"],
         "environment variable FERRYMAN_TEST_NO_SUCH_VAR (named by --secret-env) is not set"),
    ],
)  # fmt: skip
def test_bad_notify_options(
    capsys: pytest.CaptureFixture[str], dead_server: str, args: list[str], message: str
) -> None:
    assert run(["--server", dead_server, "notify", "add", *args]) == 1
    assert message in one_error_line(capsys)


def test_tls_mode_choices(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["notify", "add", "email", "m", "--smtp", "h", "--from", "a@b", "--to", "c@d"]
    assert run([*args, "--tls", "maybe"]) == 2
    assert "starttls" in one_error_line(capsys)


def test_unknown_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["server", "run", "--log-format", "xml"]) == 2
    assert "'xml' is not one of 'text', 'json'" in one_error_line(capsys)
