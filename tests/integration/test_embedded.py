"""Embedded-only installation: one server process is the whole product."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .harness import ServerProcess, assert_same_tree, make_tree


def test_backup_browse_restore_on_the_embedded_proxy(
    tmp_path: Path, make_server: Callable[..., ServerProcess]
) -> None:
    source = make_tree(tmp_path / "src")
    server = make_server()
    proxies = server.wait_proxies({"embedded"})
    assert proxies[0]["embedded"] is True and proxies[0]["slots"] >= 1
    server.post("/shares", {"name": "docs", "url": str(source)})
    server.post("/jobs", {"name": "nightly", "shares": ["docs"], "repository": "default"})
    session = server.wait_session(server.post("/jobs/nightly/run")["id"])
    assert session["status"] == "success", session
    task = session["tasks"][0]
    assert task["proxy"] == "embedded" and task["state"] == "success" and task["reason"]
    assert task["stats"]["files"] == 32 and task["stats"]["bytes_read"] > 0
    points = server.get("/points?job=nightly")
    assert len(points) == 1 and points[0]["share"] == "docs" and points[0]["files"] == 32
    top = {e["name"]: e["type"] for e in server.get(f"/points/{points[0]['id']}/ls")}
    assert top == {
        "dir0": "dir",
        "dir1": "dir",
        "dir2": "dir",
        "top.txt": "file",
        "link": "symlink",
    }
    versions = server.get("/versions?share=docs&path=/top.txt")
    assert [v["point"] for v in versions] == [points[0]["id"]]

    # a second run reads only what changed
    (source / "dir1" / "sub" / "file0.txt").write_text("changed")
    second = server.wait_session(server.post("/jobs/nightly/run")["id"])
    assert second["status"] == "success"
    assert second["tasks"][0]["stats"]["files_read"] == 1

    restore = server.post("/restores", {"point": points[0]["id"], "to": str(tmp_path / "out")})
    done = server.wait_session(restore["id"])
    assert done["status"] == "success" and done["kind"] == "restore", done
    (source / "dir1" / "sub" / "file0.txt").write_text("1-0 " * 250)  # back to the first state
    assert assert_same_tree(source, tmp_path / "out") == 31

    check = server.wait_session(server.post("/repositories/default/check", {})["id"])
    assert check["status"] == "success", check

    # adding a repository: a proxy initialises it (empty location) or opens it (passphrase)
    secret = "correct-horse-battery-staple-42"
    second = {"name": "second", "url": str(tmp_path / "repo2"), "passphrase": secret}
    assert server.post("/repositories", second)["name"] == "second"
    wrong = {"name": "again", "url": str(tmp_path / "repo2"), "passphrase": "wrong"}
    r = server.api.post("/repositories", json=wrong)
    assert r.status_code == 400 and "cannot use repository 'again'" in r.json()["detail"]
    assert [x["name"] for x in server.get("/repositories")] == ["default", "second"]
    assert secret not in server.api.get("/repositories/second").text
    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log and secret not in log
    database = server.home / "ferryman.db"  # SQLite (the PostgreSQL variant has no file)
    if database.exists():
        assert secret.encode() not in database.read_bytes()
