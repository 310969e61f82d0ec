"""End to end through the CLI only: install, share, job, run, browse, restore, compare."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from .connect_proxy import ConnectProxy
from .installation import FERRYMAN, Installation, new_installation

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = new_installation(tmp_path_factory.mktemp("cli-e2e"))
    try:
        installation.start()
        yield installation
    finally:
        installation.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small share: nested folders, empty and binary files, a symlink."""
    root = tmp_path_factory.mktemp("share")
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "a.txt").write_text("hello ferryman\n" * 100)
    (root / "empty").write_bytes(b"")
    (root / "docs" / "random.bin").write_bytes(os.urandom(300_000))
    (root / "docs" / "deep" / "er" / "note.md").write_text("# deep\n")
    (root / "link").symlink_to("a.txt")
    return root


def tree(root: Path) -> dict[str, bytes | str]:
    """Relative path -> file content (or symlink target / 'dir')."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_bytes()
    return found


def ensure_docs_job(server: Installation, source: Path) -> None:
    """The share, job and first backup of the round-trip test, when run alone (-k)."""
    if "docs-job" in [j["name"] for j in server.json("job", "list")]:
        return
    server.ok("share", "add", "docs", str(source))
    server.ok("job", "add", "docs-job", "--share", "docs", "--repo", "default")
    server.ok("job", "run", "docs-job", "--follow")


def one_error_line(done: object) -> str:
    err: str = done.stderr  # type: ignore[attr-defined]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ferryman: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_backup_browse_restore_roundtrip(server: Installation, source: Path) -> None:
    server.ok("share", "add", "docs", str(source))
    server.ok("job", "add", "docs-job", "--share", "docs", "--repo", "default")

    followed = server.ok("job", "run", "docs-job", "--follow")
    assert "ended SUCCESS" in followed

    points = server.json("point", "list")
    assert [p["share"] for p in points] == ["docs"]
    point = points[-1]
    assert point["job"] == "docs-job"
    assert point["files"] >= 4

    top = {entry["name"]: entry for entry in server.json("ls", str(point["id"]))}
    assert {"a.txt", "empty", "docs", "link"} <= set(top)
    assert top["docs"]["type"] == "dir" and top["link"]["type"] == "symlink"
    assert top["a.txt"]["size"] == len("hello ferryman\n" * 100)
    listing = server.ok("ls", str(point["id"]), "/docs")
    assert "random.bin" in listing and "deep/" in listing

    target = server.work / "restored"
    restored = server.ok("restore", str(point["id"]), "--to", str(target), "--follow")
    assert "ended SUCCESS" in restored
    assert tree(target) == tree(source)

    sessions = server.json("session", "list", "--job", "docs-job", "--kind", "backup")
    backup = sessions[-1]
    assert backup["kind"] == "backup" and backup["status"] == "success"
    assert all(t["proxy"] and t["reason"] for t in backup["tasks"])
    restores = server.json("session", "list", "--kind", "restore", "--last", "1")
    assert len(restores) == 1 and restores[0]["kind"] == "restore"
    assert restores[0]["status"] == "success"
    report = server.ok("session", "show", str(backup["id"]))
    assert "status:     SUCCESS" in report
    assert "why this proxy:" in report
    assert "transferred" in report


def test_overwrite_policies(server: Installation, source: Path) -> None:
    """Restoring over existing files: skip, if-newer, keep-both and replace as documented."""
    ensure_docs_job(server, source)
    first = server.json("point", "list", "--share", "docs")[0]["id"]
    original = ("hello ferryman\n" * 100).encode()
    target = server.work / "overwrite"

    def restore_a(policy: str) -> None:
        server.ok("restore", str(first), "--path", "/a.txt", "--to", str(target),
                  "--overwrite", policy, "--follow")  # fmt: skip

    restore_a("replace")
    local = target / "a.txt"
    assert local.read_bytes() == original

    local.write_bytes(b"local edit")
    future = time.time() + 3600
    os.utime(local, (future, future))
    restore_a("skip")
    assert local.read_bytes() == b"local edit"
    restore_a("if-newer")  # the local copy is newer: kept
    assert local.read_bytes() == b"local edit"
    restore_a("keep-both")
    assert local.read_bytes() == b"local edit"
    assert (target / "a.txt.restored").read_bytes() == original
    os.utime(local, (0, 0))
    restore_a("if-newer")  # now the stored copy is newer: restored
    assert local.read_bytes() == original
    local.write_bytes(b"local edit")
    restore_a("replace")
    assert local.read_bytes() == original


def test_adaptive_io_share_backs_up_and_reports_its_parallelism(
    server: Installation, source: Path
) -> None:
    server.ok("share", "add", "calm", str(source), "--io-control", "adaptive")
    share = next(s for s in server.json("share", "list") if s["name"] == "calm")
    assert (share["io_control"], share["max_proxies"]) == ("adaptive", 2)
    server.ok("job", "add", "calm-job", "--share", "calm", "--repo", "default")
    assert "ended SUCCESS" in server.ok("job", "run", "calm-job", "--follow")
    backup = server.json("session", "list", "--job", "calm-job", "--kind", "backup")[-1]
    adaptive = backup["tasks"][0]["stats"]["io_adaptive"]
    # a share this small is read before a baseline is learned: nothing to lower
    assert adaptive["changes"] == 0 and adaptive["min_parallelism"] >= 1
    report = server.ok("session", "show", str(backup["id"]))
    assert f"adaptive I/O:    parallelism {adaptive['max_parallelism']} (0 changes)" in report


def test_second_run_by_id_then_follow(server: Installation, source: Path) -> None:
    ensure_docs_job(server, source)
    (source / "a.txt").write_text("changed\n")
    session_id = server.ok("job", "run", "docs-job").strip()
    assert session_id.isdigit(), session_id
    followed = server.ferryman("session", "follow", session_id)
    assert followed.returncode == 0, followed.stderr
    shown = server.json("session", "show", session_id)
    assert shown["id"] == int(session_id) and shown["status"] == "success"
    versions = server.json("versions", "docs", "/a.txt")
    assert len(versions) == 2
    assert versions[0]["time"] <= versions[1]["time"]
    # a single file from the newest point, to another folder
    target = server.work / "single"
    server.ok("restore", str(versions[-1]["point"]), "--path", "/a.txt", "--to", str(target),
              "--follow")  # fmt: skip
    assert (target / "a.txt").read_text() == "changed\n"


def test_lists_have_stable_json_shapes(server: Installation) -> None:
    proxies = server.json("proxy", "list")
    assert any(p["state"] == "online" for p in proxies)
    for proxy in proxies:
        assert {"id", "name", "state", "slots", "busy_slots", "last_heartbeat"} <= set(proxy)
    repos = server.json("repo", "list")
    assert "default" in [r["name"] for r in repos]
    assert all("passphrase" not in r for r in repos)
    for command in (("share", "list"), ("job", "list"), ("session", "list"), ("point", "list")):
        items = server.json(*command)
        assert isinstance(items, list)
        assert all(isinstance(item["id"], int) for item in items)
        ids = [item["id"] for item in items]
        assert ids == sorted(ids), f"{command}: not oldest first"
    table = server.ok("proxy", "list")
    assert "NAME" in table and "online" in table


def test_join_token_alone_on_last_line(server: Installation) -> None:
    out = server.ok("proxy", "join-token", "--ttl", "10m")
    token = out.strip().splitlines()[-1]
    assert token and " " not in token


def test_wrong_input_is_one_clear_line(server: Installation, tmp_path: Path) -> None:
    done = server.ferryman("job", "add", "j1", "--share", "no-such-share", "--repo", "default")
    assert done.returncode == 1
    assert "no-such-share" in one_error_line(done)

    done = server.ferryman("share", "add", "cronshare", str(tmp_path))
    assert done.returncode == 0, done.stderr
    done = server.ferryman(
        "job", "add", "j2", "--share", "cronshare", "--repo", "default", "--schedule", "61 * * x"
    )
    assert done.returncode == 1
    assert "schedule" in one_error_line(done).lower()

    done = server.ferryman("share", "add", "badurl", "ftp://example.com/x")
    assert done.returncode == 1
    assert "ftp" in one_error_line(done)

    done = server.ferryman("share", "add", "relative", "some/folder")
    assert done.returncode == 1
    assert "absolute path" in one_error_line(done)

    done = server.ferryman("repo", "add", "r2", str(tmp_path / "repo"), "--passphrase-env",
                           "FERRYMAN_TEST_UNSET")  # fmt: skip
    assert done.returncode == 1
    assert "FERRYMAN_TEST_UNSET" in one_error_line(done)

    done = server.ferryman("session", "show", "999999")
    assert done.returncode == 1
    one_error_line(done)

    done = server.ferryman("restore", "999999", "--to", str(tmp_path / "x"))
    assert done.returncode == 1
    one_error_line(done)

    done = server.ferryman("job", "run", "no-such-job")
    assert done.returncode == 1
    assert "no-such-job" in one_error_line(done)

    done = server.ferryman("server", "init", "--listen", "127.0.0.1:9")
    assert done.returncode == 1
    assert "already a Ferryman server home" in one_error_line(done)


def test_wrong_token_is_refused(server: Installation) -> None:
    done = server.ferryman("job", "list", env={"FERRYMAN_TOKEN": "not-a-token"})
    assert done.returncode == 1
    assert "not authenticated" in one_error_line(done)


def test_wrong_ca_is_named(server: Installation) -> None:
    done = server.ferryman("--ca", certifi.where(), "job", "list")
    assert done.returncode == 1
    line = one_error_line(done)
    assert "does not verify against" in line and "cacert.pem" in line


def test_without_a_ca_the_systems_trusted_cas_verify_the_server(
    server: Installation, tmp_path: Path
) -> None:
    """No CA anywhere: verified against the system's trusted CAs (which SSL_CERT_FILE
    replaces, as OpenSSL's default paths do), never unverified."""
    client = json.loads((server.home / "client.json").read_text())
    home = tmp_path / "no-ca-home"  # no client.json: server and token from the environment
    env = {"FERRYMAN_HOME": str(home), "FERRYMAN_SERVER": client["server"],
           "FERRYMAN_TOKEN": client["token"]}  # fmt: skip
    done = server.ferryman("job", "list", "--json", env={**env, "SSL_CERT_FILE": ""})
    assert done.returncode == 1
    assert "does not verify against the system's trusted CAs" in one_error_line(done)
    done = server.ferryman("job", "list", "--json", env={**env, "SSL_CERT_FILE": client["ca"]})
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)


def test_https_goes_through_the_environments_proxy(server: Installation) -> None:
    """HTTPS_PROXY: a CONNECT tunnel to the server, TLS verified inside it."""
    proxy = ConnectProxy()
    threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        env = {"HTTPS_PROXY": url, "NO_PROXY": "", "no_proxy": ""}
        done = server.ferryman("job", "list", "--json", env=env)
        assert done.returncode == 0, done.stderr
        [request] = proxy.requests  # HTTP/1.0 or 1.1 depending on the Python release
        assert request.startswith(f"CONNECT 127.0.0.1:{server.port} HTTP/1.")
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_json_output_is_valid_json_even_when_empty(server: Installation, tmp_path: Path) -> None:
    server.ok("share", "add", "never-backed-up", str(tmp_path))
    out = server.ok("point", "list", "--share", "never-backed-up", "--json")
    assert json.loads(out) == []


def test_stop_a_waiting_session(server: Installation, source: Path) -> None:
    """With every proxy disabled the task waits; stopping it ends the session 'stopped'."""
    ensure_docs_job(server, source)
    server.ok("proxy", "disable", "embedded")
    try:
        session_id = server.ok("job", "run", "docs-job").strip()
        shown = server.json("session", "show", session_id)
        assert shown["status"] == "running"
        assert [t["state"] for t in shown["tasks"]] == ["waiting"]
        assert "stopped" in server.ok("session", "stop", session_id)
        followed = server.ferryman("session", "follow", session_id)
        assert followed.returncode == 3, followed.stdout + followed.stderr
        assert "ended STOPPED" in followed.stdout
    finally:
        server.ok("proxy", "enable", "embedded")


def test_remote_proxy_joins_runs_a_pinned_job_and_is_removed(
    server: Installation, source: Path
) -> None:
    token = server.ok("proxy", "join-token", "--ttl", "5m").strip().splitlines()[-1]
    url = json.loads((server.home / "client.json").read_text())["server"]
    proxy_home = server.work / "proxy-p1"
    log = (server.work / "proxy-p1.log").open("wb")
    proxy = subprocess.Popen(
        [*FERRYMAN, "proxy", "run", "--server", url, "--join-token", token,
         "--name", "p1", "--site", "lab", "--slots", "1", "--home", str(proxy_home)],
        env=server.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline and state != "online":
            state = {p["name"]: p["state"] for p in server.json("proxy", "list")}.get("p1")
            time.sleep(0.3)
        assert state == "online", (server.work / "proxy-p1.log").read_text()
        p1 = next(p for p in server.json("proxy", "list") if p["name"] == "p1")
        assert (p1["site"], p1["slots"]) == ("lab", 1)

        # the join token was single use
        again = server.ferryman("proxy", "run", "--server", url, "--join-token", token,
                                "--name", "p9", "--home", str(server.work / "p9"))  # fmt: skip
        assert again.returncode == 1
        assert "cannot join the backup server" in one_error_line(again)

        server.ok("share", "add", "pinshare", str(source))
        server.ok(
            "job", "add", "pinned", "--share", "pinshare", "--repo", "default", "--proxies", "p1"
        )  # fmt: skip
        assert "ended SUCCESS" in server.ok("job", "run", "pinned", "--follow")
        pinned = server.json("session", "list", "--job", "pinned", "--kind", "backup")[-1]
        assert [t["proxy"] for t in pinned["tasks"]] == ["p1"]

        # a restart with the same home needs no join token
        proxy.terminate()
        assert proxy.wait(timeout=60) == 0
        proxy = subprocess.Popen(
            [*FERRYMAN, "proxy", "run", "--server", url, "--home", str(proxy_home)],
            env=server.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        server.wait_online("p1")

        server.ok("proxy", "remove", "p1")
        assert proxy.wait(timeout=60) == 1
        assert "ferryman: error: " in (server.work / "proxy-p1.log").read_text()
        assert "p1" not in [p["name"] for p in server.json("proxy", "list")]
    finally:
        if proxy.poll() is None:
            proxy.terminate()
            proxy.wait(timeout=30)


def test_repositories_add_check_remove(server: Installation, tmp_path: Path) -> None:
    location = str(tmp_path / "repo2")
    env = {"REPO_PASS": "correct horse battery staple", "WRONG_PASS": "not it"}
    done = server.ferryman("repo", "add", "r2", location, "--passphrase-env", "REPO_PASS", env=env)
    assert done.returncode == 0, done.stderr
    assert "r2" in [r["name"] for r in server.json("repo", "list")]

    checked = server.ferryman("repo", "check", "r2")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ended SUCCESS" in checked.stdout
    full = server.json("repo", "check", "default", "--read-data")
    assert full["kind"] == "check" and full["status"] == "success"

    # the same location with another passphrase is refused, and nothing is saved
    done = server.ferryman("repo", "add", "r3", location, "--passphrase-env", "WRONG_PASS", env=env)
    assert done.returncode == 1
    assert "r3" in one_error_line(done)
    assert "r3" not in [r["name"] for r in server.json("repo", "list")]

    server.ok("repo", "remove", "r2")
    assert "r2" not in [r["name"] for r in server.json("repo", "list")]


def test_share_and_job_lifecycle(server: Installation, tmp_path: Path) -> None:
    server.ok("share", "add", "tmpshare", str(tmp_path), "--site", "hq", "--include", "*.txt",
              "--exclude", "*.tmp", "--io-control", "below-normal")  # fmt: skip
    share = next(s for s in server.json("share", "list") if s["name"] == "tmpshare")
    assert (share["site"], share["include"], share["exclude"]) == ("hq", ["*.txt"], ["*.tmp"])
    assert share["io_control"] == "below-normal"
    server.ok("job", "add", "tmpjob", "--share", "tmpshare", "--repo", "default",
              "--schedule", "0 3 * * *", "--keep-last", "3", "--keep-daily", "7",
              "--priority", "70")  # fmt: skip
    job = next(j for j in server.json("job", "list") if j["name"] == "tmpjob")
    assert (job["schedule"], job["keep_last"], job["keep_daily"], job["priority"]) == (
        "0 3 * * *", 3, 7, 70
    )  # fmt: skip

    done = server.ferryman("share", "remove", "tmpshare")
    assert done.returncode == 1
    assert "tmpjob" in one_error_line(done)  # still used by the job

    server.ok("job", "disable", "tmpjob")
    assert not next(j for j in server.json("job", "list") if j["name"] == "tmpjob")["enabled"]
    server.ok("job", "enable", "tmpjob")
    assert next(j for j in server.json("job", "list") if j["name"] == "tmpjob")["enabled"]
    server.ok("job", "remove", "tmpjob")
    server.ok("share", "remove", "tmpshare")
    assert "tmpshare" not in [s["name"] for s in server.json("share", "list")]
