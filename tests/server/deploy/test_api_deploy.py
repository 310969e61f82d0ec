"""The deployment endpoints refuse bad input with a clear 4xx before any SSH is attempted."""

from __future__ import annotations

import json
import socket

from ..conftest import Api


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_input_errors_roles_and_unknown_proxies(api: Api) -> None:
    key = {"private_key": "not a key"}
    cases = [
        ({"target": "no-user-here", **key}, "target: bad target 'no-user-here'"),
        ({"target": "ssh://root@h:70000", **key}, "port must be 1-65535"),
        ({"target": "ssh://root@h"}, "give a private key (--identity) or a password"),
        ({"target": "ssh://root@h", "name": "../x", **key}, "name: '../x' must be"),
        ({"target": "ssh://root@h", "install_dir": "rel/dir", **key}, "install_dir: an absolute"),
        ({"target": "ssh://root@h", "slots": 0, **key}, "slots:"),
    ]
    for body, message in cases:
        r = api.call("POST", "/proxies/deploy", json=body)
        assert r.status_code == 422 and message in r.json()["detail"], (body, r.text)

    viewer = api.post("/tokens", {"name": "v", "role": "viewer"})["token"]
    r = api.call("POST", "/proxies/deploy", json={"target": "ssh://root@h", **key}, token=viewer)
    assert r.status_code == 403
    assert api.call("GET", "/deployments", token=viewer).status_code == 200
    listing = api.get("/deployments")
    assert listing["deployments"] == [] and listing["server_version"]

    for action in ("upgrade", "uninstall"):
        r = api.call("POST", f"/proxies/nope/{action}", json={"password": "x"})
        assert r.status_code == 404 and "was not deployed by this server" in r.json()["detail"]


def test_an_unreachable_host_ends_the_stream_with_one_error_line(api: Api) -> None:
    body = {"target": f"ssh://root@127.0.0.1:{closed_port()}", "password": "secret-pw"}
    r = api.call("POST", "/proxies/deploy", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in r.text.splitlines()]
    assert [e["event"] for e in events] == ["error"]
    assert events[0]["message"].startswith(f"cannot reach {body['target']}")
    assert "secret-pw" not in r.text
