"""Joining and mutual TLS against a real server: single-use expiring tokens, client
certificates required on the proxy routes, revocation effective at once."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ferryman.proxy.client import HttpsChannel, JoinError, join_or_load
from ferryman.proxy.protocol import Heartbeat
from ferryman.proxy.service import ProxyRevoked
from ferryman.server.ca import CertificateAuthority

from .harness import ServerProcess


def _join(server: ServerProcess, token: str, name: str, home: Path):  # type: ignore[no-untyped-def]
    return join_or_load(server.url, token, name=name, site="lab", slots=2, home=home)


def test_join_tokens_and_client_certificates(
    tmp_path: Path, make_server: Callable[..., ServerProcess]
) -> None:
    server = make_server(embedded=False)
    token = server.join_token()
    identity = _join(server, token, "p1", tmp_path / "p1")
    assert identity.proxy_id > 0 and identity.cert.exists()
    assert (identity.key.stat().st_mode & 0o777) == 0o600

    with pytest.raises(JoinError, match="already used"):
        _join(server, token, "p2", tmp_path / "p2")
    short = server.join_token("1s")
    time.sleep(1.5)
    with pytest.raises(JoinError, match="expired"):
        _join(server, short, "p3", tmp_path / "p3")
    with pytest.raises(JoinError, match="unknown join token"):
        _join(server, "fmj_nope_" + token.split("_")[2], "p4", tmp_path / "p4")
    forged = token.rsplit("_", 1)[0] + "_" + "0" * 64
    with pytest.raises(JoinError, match="does not match"):
        _join(server, forged, "p5", tmp_path / "p5")
    # a name can be joined only once
    with pytest.raises(JoinError, match="already exists"):
        _join(server, server.join_token(), "p1", tmp_path / "p1b")

    channel = HttpsChannel(identity)
    reply = channel.heartbeat(Heartbeat(slots=2, version="t", site="lab"))
    assert reply.heartbeat_interval > 0
    listed = {p["name"]: p for p in server.get("/proxies")}
    assert listed["p1"]["state"] == "online" and listed["p1"]["site"] == "lab"

    # no client certificate: refused
    plain = ssl.create_default_context(cafile=server.ca)
    r = httpx.post(
        f"{server.url}/proxy/v1/heartbeat", json={"slots": 1, "version": "x"}, verify=plain
    )
    assert r.status_code == 401 and "certificate" in r.json()["detail"]
    # a certificate from another CA: the TLS handshake fails
    other = CertificateAuthority.create(tmp_path / "o.pem", tmp_path / "o.key")
    other.issue_server_certificate(tmp_path / "c.pem", tmp_path / "c.key", "127.0.0.1")
    foreign = ssl.create_default_context(cafile=server.ca)
    foreign.load_cert_chain(str(tmp_path / "c.pem"), str(tmp_path / "c.key"))
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{server.url}/proxy/v1/heartbeat", json={}, verify=foreign)

    # removing the proxy revokes its certificate at once, even on an open connection
    server.call("DELETE", "/proxies/p1", expect=204)
    with pytest.raises(ProxyRevoked):
        channel.heartbeat(Heartbeat(slots=2, version="t"))
    channel.close()
    assert server.stop() == 0
