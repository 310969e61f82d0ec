"""The proxy side of smb:// shares against a real smbd: probes, task sources and restore targets."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sources.smb_server import SambaServer, start_samba

from ferryman.proxy.probing import probe
from ferryman.proxy.protocol import ProbeRequest, RepositoryAccess, ShareSpec, TaskAssignment
from ferryman.proxy.smb_access import SmbShareError, smb_restore_target, smb_source
from ferryman.proxy.task_runner import execute
from ferryman.repository import Repository, open_backend
from ferryman.sources import smb_session
from ferryman.sources.smb import SmbDir


@pytest.fixture(scope="module")
def samba() -> Iterator[SambaServer]:
    yield from start_samba(["data"])


def test_probe_logs_in_measures_and_scans(samba: SambaServer) -> None:
    top = samba.shares["data"] / "top"
    (top / "d").mkdir(parents=True)
    (top / "d" / "f1").write_bytes(b"x" * 5000)
    (top / "d" / "f2").write_bytes(b"y" * 100)
    (top / "g").write_bytes(b"z" * 300_000)
    request = ProbeRequest(
        kind="share",
        target_id=1,
        url=samba.url("data", "top"),
        credentials={"password": samba.password},
        scan=True,
    )
    result = probe(request)
    assert result.ok, result.error
    assert result.rtt_ms is not None and result.rtt_ms > 0
    assert result.throughput and result.throughput > 0  # g was read
    assert result.scan == {"files": 3, "bytes": 305_100, "top": {"d": [2, 5100], "g": [1, 300_000]}}


def test_probe_with_a_wrong_password_says_so_in_one_line(samba: SambaServer) -> None:
    request = ProbeRequest(
        kind="share", target_id=1, url=samba.url("data"), credentials={"password": "wrong"}
    )
    result = probe(request)
    assert not result.ok and result.error is not None
    assert "wrong user name or password" in result.error and "\n" not in result.error
    assert "wrong" not in result.error.replace("wrong user", "")  # the password is not echoed


def test_restore_target_must_be_the_points_own_share(samba: SambaServer) -> None:
    share = ShareSpec(
        id=1, name="files", url=samba.url("data"), credentials={"password": samba.password}
    )
    target = smb_restore_target(samba.url("data", "elsewhere/inside"), share)
    assert target.description == samba.url("data", "elsewhere/inside")
    assert target.password == samba.password  # the share's stored password
    target.close()
    other = f"smb://someone@127.0.0.1:{samba.port}/data"
    with pytest.raises(SmbShareError, match="no password is known"):
        smb_restore_target(other, share)
    with pytest.raises(SmbShareError, match="no password is known"):
        smb_restore_target(samba.url("data"), None)
    assert smb_source(share).description == samba.url("data")
    with pytest.raises(SmbShareError, match="sent no password"):
        smb_source(share.model_copy(update={"credentials": None}))


@pytest.fixture
def doomed() -> Iterator[SambaServer]:
    """An smbd of its own, for a test that kills it."""
    yield from start_samba(["data"])


def _backup_losing_its_share(
    doomed: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> TaskAssignment:
    """A backup task of a share whose smbd dies at the 50th file opened, and a repository
    for it."""
    top = doomed.shares["data"] / "top"
    for d in range(3):
        (top / f"d{d}").mkdir(parents=True)
        for i in range(40):
            (top / f"d{d}" / f"f{i}").write_bytes(os.urandom(4000 + i))
    backend = open_backend(str(tmp_path / "repo"))
    Repository.init(backend, "pw", scrypt_n=1 << 10, cache_dir=tmp_path / "c").close()
    real_open_file, opened = SmbDir.open_file, [0]

    def open_file(self: SmbDir, name: bytes) -> Any:
        opened[0] += 1
        if opened[0] == 50:
            doomed.stop()  # smbd and its workers gone: nothing to reconnect to
        return real_open_file(self, name)

    monkeypatch.setattr(SmbDir, "open_file", open_file)
    return TaskAssignment(
        task_id=7,
        session_id=1,
        kind="backup",
        repository=RepositoryAccess(id=1, name="r", url=str(tmp_path / "repo"), passphrase="pw"),
        share=ShareSpec(
            id=3,
            name="dept",
            url=doomed.url("data", "top"),
            credentials={"password": doomed.password},
        ),
    )


def _restore_points(tmp_path: Path) -> list[Any]:
    repo = Repository.open(open_backend(str(tmp_path / "repo")), "pw", cache_dir=tmp_path / "c")
    try:
        return list(repo.list_restore_points())
    finally:
        repo.close()


def test_a_share_lost_mid_backup_fails_the_task_as_unreachable_so_it_is_retried(
    doomed: SambaServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(smb_session, "RECONNECT_DELAYS", (0.0, 0.05, 0.1))
    cancel = threading.Event()
    task = _backup_losing_its_share(doomed, tmp_path, monkeypatch)
    result = execute(task, tmp_path / "cache", lambda _: None, cancel)
    assert result.state == "failed"
    assert result.output == {"unreachable": "share"}  # the server requeues it (maybe elsewhere)
    error = result.error or ""
    assert "lost the connection to SMB server" in error and "could not reconnect" in error
    assert "\n" not in error and doomed.password not in error
    assert not any(r.exc_info for r in caplog.records)  # no traceback in the proxy's log
    assert _restore_points(tmp_path) == []


def test_a_task_stopped_while_its_share_is_reconnecting_stops_at_once_and_is_not_retried(
    doomed: SambaServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # without the stop, these waits would hold the task for 90 s before it failed
    monkeypatch.setattr(smb_session, "RECONNECT_DELAYS", (30.0, 30.0, 30.0))
    cancel = threading.Event()
    task = _backup_losing_its_share(doomed, tmp_path, monkeypatch)
    caplog.set_level(logging.WARNING, logger="ferryman")
    reconnecting = threading.Thread(
        target=lambda: _stop_once_reconnecting(caplog, cancel), daemon=True
    )
    reconnecting.start()
    started = time.monotonic()
    result = execute(task, tmp_path / "cache", lambda _: None, cancel)
    took = time.monotonic() - started
    reconnecting.join()
    assert result.state == "stopped", result.error  # an administrator's stop: not requeued
    assert "unreachable" not in result.output
    assert took < 30, f"the stop waited out a reconnection delay ({took:.1f} s)"
    lost = [
        r.getMessage() for r in caplog.records if "stopped while reconnecting" in r.getMessage()
    ]
    assert lost and "(0 attempt(s)" in lost[0], lost
    assert _restore_points(tmp_path) == []


def _stop_once_reconnecting(caplog: pytest.LogCaptureFixture, cancel: threading.Event) -> None:
    """Set ``cancel`` as soon as the proxy logs that it lost the share and is reconnecting."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any("reconnecting" in r.getMessage() for r in list(caplog.records)):
            break
        time.sleep(0.02)
    cancel.set()


def test_a_probe_whose_connection_drops_fails_at_once_with_the_reason(
    samba: SambaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = samba.shares["data"] / "probe-drop"
    top.mkdir()
    (top / "f").write_bytes(b"x" * 1000)
    real_open_file = SmbDir.open_file

    def open_file(self: SmbDir, name: bytes) -> Any:
        samba.drop_connections()  # while the probe samples a read
        return real_open_file(self, name)

    monkeypatch.setattr(SmbDir, "open_file", open_file)
    request = ProbeRequest(
        kind="share",
        target_id=1,
        url=samba.url("data", "probe-drop"),
        credentials={"password": samba.password},
    )
    result = probe(request)  # a probe measures the link as it is: no reconnection
    assert not result.ok and result.error is not None
    assert "lost the connection to SMB server" in result.error, result.error
    assert "reconnect" not in result.error and "\n" not in result.error
