"""The proxy side of smb:// shares against a real smbd: probes, task sources and restore targets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sources.smb_server import SambaServer, start_samba

from ferryman.proxy.probing import probe
from ferryman.proxy.protocol import ProbeRequest, ShareSpec
from ferryman.proxy.smb_access import SmbShareError, smb_restore_target, smb_source


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
