"""An SMB share end to end through the CLI: a real server and proxy, a real smbd on loopback.

``share add smb://… --password-env``, backup runs, restores to a local folder and
back into the share, and a wrong password named in the task's placement reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sources.smb_server import SambaServer, start_samba

from .installation import Installation, new_installation

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def samba() -> Iterator[SambaServer]:
    yield from start_samba(["files"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = new_installation(tmp_path_factory.mktemp("cli-smb"))
    try:
        installation.start()
        yield installation
    finally:
        installation.stop()


def tree(root: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return found


def test_smb_share_backup_and_restores_through_the_cli(
    server: Installation, samba: SambaServer
) -> None:
    data = samba.shares["files"] / "dept"
    (data / "reports" / "2026").mkdir(parents=True)
    (data / "reports" / "2026" / "q3.txt").write_text("quarter three\n" * 500)
    (data / "Überblick.md").write_text("# überblick\n")
    (data / "empty").write_bytes(b"")
    (data / "image.bin").write_bytes(os.urandom(1_500_000))
    url = samba.url("files", "dept")
    env = {"SMB_PASSWORD": samba.password}

    added = server.ferryman("share", "add", "dept", url, "--password-env", "SMB_PASSWORD", env=env)
    assert added.returncode == 0, added.stderr
    shown = {s["name"]: s for s in server.json("share", "list")}["dept"]
    assert shown["url"] == url and samba.password not in str(shown)
    assert samba.password not in server.ok("share", "list")

    server.ok("job", "add", "dept-job", "--share", "dept", "--repo", "default")
    assert "ended SUCCESS" in server.ok("job", "run", "dept-job", "--follow")
    (data / "reports" / "2026" / "q4.txt").write_text("quarter four\n")
    assert "ended SUCCESS" in server.ok("job", "run", "dept-job", "--follow")
    backups = server.json("session", "list", "--job", "dept-job", "--kind", "backup")
    second = server.json("session", "show", str(backups[-1]["id"]))
    stats = second["tasks"][0]["stats"]
    assert stats["files_read"] == 1 and stats["files_unchanged"] == 4, stats

    point = server.json("point", "list", "--share", "dept")[-1]
    local = server.work / "dept-restored"
    done = server.ok("restore", str(point["id"]), "--to", str(local), "--follow")
    assert "ended SUCCESS" in done
    assert tree(local) == tree(data)

    copy_url = samba.url("files", "dept-copy")
    done = server.ok("restore", str(point["id"]), "--to", copy_url, "--follow")
    assert "ended SUCCESS" in done
    assert tree(samba.shares["files"] / "dept-copy") == tree(data)


def test_wrong_password_is_named_in_the_task_reason(
    server: Installation, samba: SambaServer
) -> None:
    (samba.shares["files"] / "other").mkdir(exist_ok=True)
    env = {"BAD_PASSWORD": "not-it"}
    url = samba.url("files", "other")
    added = server.ferryman("share", "add", "bad", url, "--password-env", "BAD_PASSWORD", env=env)
    assert added.returncode == 0, added.stderr
    server.ok("job", "add", "bad-job", "--share", "bad", "--repo", "default")
    session_id = server.ok("job", "run", "bad-job").strip()
    reason = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "wrong user name or password" not in reason:
        task = server.json("session", "show", session_id)["tasks"][0]
        assert task["state"] == "waiting"  # never placed on a proxy that cannot log in
        reason = " | ".join(p["reason"] for p in task["passed_over"])
        time.sleep(0.3)
    assert "cannot reach share 'bad'" in reason and "wrong user name or password" in reason
    assert "not-it" not in reason and "\n" not in reason
    assert "wrong user name or password" in server.ok("session", "show", session_id)
    server.ok("session", "stop", session_id)

    missing = server.ferryman("share", "add", "nopw", url)
    assert missing.returncode != 0
    assert "--password-env" in missing.stderr and "Traceback" not in missing.stderr
