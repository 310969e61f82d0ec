"""`ferryman proxy deploy` against a real OpenSSH server on loopback, driven through the CLI.

The "host" is this machine reached through its own sshd (tests/integration/sshd.py); the
wheelhouse is built once per session (FERRYMAN_TEST_WHEELHOUSE reuses one across runs).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferryman import __version__

from .harness import ServerProcess, make_tree
from .sshd import SshServer, grant_sudo, start_sshd, stop_sshd

# FERRYMAN_TEST_DEPLOY_DIR: the root deployment installs there (e.g. a tmpfs when the disk
# is short) instead of the default, /var/lib/ferryman-proxy
DEPLOY_DIR = os.environ.get("FERRYMAN_TEST_DEPLOY_DIR")
ROOT_DIR = Path(DEPLOY_DIR) / "root" if DEPLOY_DIR else Path("/var/lib/ferryman-proxy")
ROOT_ARGS = ["--install-dir", str(ROOT_DIR)] if DEPLOY_DIR else []
ACCOUNT = "ferryman-proxy"
UPGRADED = f"{__version__}+upgrade1"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reuse = os.environ.get("FERRYMAN_TEST_WHEELHOUSE")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("wheelhouse")


def _stop_installed(root: Path) -> None:
    """Teardown safety net: stop a proxy a failed test left running, remove its files."""
    for name in ("supervisor.pid", "proxy.pid"):
        pid_file = root / "run" / name
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), 9)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path, wheelhouse: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path / "server",
        None,
        embedded=False,
        env={"FERRYMAN_WHEELHOUSE_DIR": str(wheelhouse)},
    ).start()
    yield srv
    srv.kill()


def cli(
    server: ServerProcess, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "FERRYMAN_SERVER": server.url,
        "FERRYMAN_TOKEN": server.token,
        "FERRYMAN_CA": server.ca,
        **(env or {}),
    }
    environment.pop("FERRYMAN_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "ferryman.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def ok(server: ServerProcess, *args: str, env: dict[str, str] | None = None) -> str:
    done = cli(server, *args, env=env)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}\n{server.log()}"
    return done.stdout


def failed(server: ServerProcess, *args: str, env: dict[str, str] | None = None) -> str:
    """A command that must fail with one clear line on stderr (no traceback)."""
    done = cli(server, *args, env=env)
    assert done.returncode == 1, f"{args}: {done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr + done.stdout
    return done.stderr


def proxy(server: ServerProcess, name: str) -> dict[str, object] | None:
    return next((p for p in server.get("/proxies") if p["name"] == name), None)


def processes_of(user: str) -> list[str]:
    done = subprocess.run(["ps", "-u", user, "-o", "pid=,args="], capture_output=True, text=True)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def throttle_pid(pid: int, run: float = 0.03, pause: float = 0.12) -> threading.Event:
    """Slow a process down (SIGSTOP/SIGCONT duty cycle) until the returned event is set."""
    done = threading.Event()

    def cycle() -> None:
        with contextlib.suppress(ProcessLookupError):
            while not done.is_set():
                os.kill(pid, signal.SIGSTOP)
                done.wait(pause)
                os.kill(pid, signal.SIGCONT)
                done.wait(run)
            os.kill(pid, signal.SIGCONT)

    threading.Thread(target=cycle, daemon=True).start()
    return done


def wait_for_running_task(server: ServerProcess, session_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = server.get(f"/sessions/{session_id}")
        if any(t["state"] == "running" for t in session["tasks"]):
            return
        assert session["status"] == "running", session
        time.sleep(0.1)
    raise AssertionError(f"no task of session {session_id} started")


def run_while(server: ServerProcess, args: list[str], condition: Any, then: Any) -> str:
    """Run a CLI command; once `condition()` holds while it runs, call `then()`. Its output."""
    environment = {
        **os.environ,
        "FERRYMAN_SERVER": server.url,
        "FERRYMAN_TOKEN": server.token,
        "FERRYMAN_CA": server.ca,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferryman.cli", *args],
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not condition():
            assert proc.poll() is None, "the command ended before the condition held"
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.1)
        then()
        out, err = proc.communicate(timeout=600)
    finally:
        then()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"{args}: {out}\n{err}"
    return out


def patched_tree(dest: Path, version: str) -> Path:
    """A copy of this source tree claiming another version: the 'upgraded server'."""
    shutil.copytree(
        REPO_ROOT / "ferryman", dest / "ferryman", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    init = dest / "ferryman" / "__init__.py"
    init.write_text(
        re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text())
    )
    return dest


def test_deploy_backup_redeploy_upgrade_uninstall(
    sshd: SshServer, server: ServerProcess, tmp_path: Path
) -> None:
    key = str(sshd.client_key)
    deploy = ["proxy", "deploy", sshd.url("root"), "--identity", key, "--name", "p1", *ROOT_ARGS]
    work = Path(tempfile.mkdtemp(prefix="ferryman-deploy-"))
    try:
        # an unknown host key is refused unless trusted explicitly
        error = failed(server, *deploy)
        assert "unknown host key for [127.0.0.1]:" in error and "--trust-host-key" in error
        assert proxy(server, "p1") is None and not ROOT_DIR.exists()

        out = ok(server, *deploy, "--trust-host-key")
        for step in (
            "connect",
            "analyse",
            "requirements",
            "wheelhouse",
            "prepare",
            "install",
            "configure",
            "service",
            "online",
        ):
            assert re.search(rf"^{step} +\d+\.\d\ds", out, re.M), (step, out)
        assert "recorded (trusted on first use)" in out
        assert re.search(r"ok   python +3\.\d+", out) and "suggested task slots:" in out
        assert "note systemd         no" in out and "supervised" in out
        assert "created service account ferryman-proxy" in out
        assert "new join token issued" in out
        first = proxy(server, "p1")
        assert first is not None and first["state"] == "online"
        assert first["version"] == __version__
        running = processes_of(ACCOUNT)
        assert any("ferryman.cli proxy run" in p for p in running), running
        assert not (ROOT_DIR / "proxy.env").exists()  # the used join token is not kept
        assert (ROOT_DIR / "venv").stat().st_uid == 0  # the service account cannot change it

        # a backup through the deployed proxy (running as the service account)
        os.chmod(work, 0o755)
        share = make_tree(work / "share", dirs=2, files=3)
        repo = work / "repo"
        repo.mkdir()
        shutil.chown(repo, ACCOUNT, ACCOUNT)
        server.post("/repositories", {"name": "r1", "url": str(repo), "passphrase": "pw"})
        server.post("/shares", {"name": "s1", "url": str(share)})
        server.post(
            "/jobs", {"name": "j1", "shares": ["s1"], "repository": "r1", "proxies": ["p1"]}
        )
        session = server.wait_session(server.post("/jobs/j1/run")["id"])
        assert session["status"] == "success", session
        assert [t["proxy"] for t in session["tasks"]] == ["p1"]

        # re-deploying a sound install changes nothing
        supervisor = (ROOT_DIR / "run" / "supervisor.pid").read_text()
        again = ok(server, *deploy)
        assert "already installed, verified" in again
        assert "identity kept" in again and "already running" in again
        assert (ROOT_DIR / "run" / "supervisor.pid").read_text() == supervisor
        assert proxy(server, "p1")["id"] == first["id"]  # type: ignore[index]

        # ... and repairs a broken one, draining it first: a backup is running on it
        # (the proxy is slowed down so that it still runs when the drain starts)
        make_tree(work / "big", dirs=2, files=2, big=64 << 20)
        server.post("/shares", {"name": "big", "url": str(work / "big")})
        server.post(
            "/jobs", {"name": "j2", "shares": ["big"], "repository": "r1", "proxies": ["p1"]}
        )
        brake = throttle_pid(int((ROOT_DIR / "run" / "proxy.pid").read_text()), pause=0.4)
        try:
            running = server.post("/jobs/j2/run")["id"]
            wait_for_running_task(server, running)
            site = next((ROOT_DIR / "venv" / "lib").glob("python3*/site-packages"))
            (site / "ferryman" / "cli" / "main.py").unlink()
            # full speed again once the deployment disabled the proxy with the task running
            repaired = run_while(
                server,
                deploy,
                lambda: (proxy(server, "p1") or {}).get("state") == "draining",
                brake.set,
            )
        finally:
            brake.set()
        assert "file(s) missing or changed" in repaired
        assert re.search(r"^drain .*its 1 running task\(s\) finished", repaired, re.M), repaired
        assert server.wait_session(running)["status"] == "success"
        assert proxy(server, "p1")["state"] == "online"  # type: ignore[index]
        assert (site / "ferryman" / "cli" / "main.py").exists()

        # the server is upgraded: its proxy is now out of date, upgrade drains and returns
        server.stop()
        tree = patched_tree(tmp_path / "upgraded", UPGRADED)
        # PYTHONSAFEPATH: the current directory (this checkout) must not come first
        server.extra_env.update(PYTHONPATH=str(tree), PYTHONSAFEPATH="1")
        server.start()
        assert server.get("/health")["version"] == UPGRADED
        server.wait_proxies({"p1"})
        listing = server.get("/deployments")
        assert [(d["name"], d["outdated"]) for d in listing["deployments"]] == [("p1", True)]
        upgraded = ok(server, "proxy", "upgrade", "--all", "--identity", key)
        assert "== p1" in upgraded and "drain" in upgraded and "stop" in upgraded
        assert f"proxy p1 at version {UPGRADED}" in upgraded
        after = proxy(server, "p1")
        assert after is not None and after["version"] == UPGRADED
        assert after["state"] == "online" and after["enabled"] is True
        assert after["id"] == first["id"]  # same identity: no new join
        assert "every deployed proxy runs" in ok(
            server, "proxy", "upgrade", "--all", "--identity", key
        )

        # uninstall: nothing left running, no files, no account, certificate revoked
        out = ok(server, "proxy", "remove", "p1", "--uninstall", "--identity", key)
        assert "proxy p1 uninstalled and removed" in out
        assert proxy(server, "p1") is None
        assert not ROOT_DIR.exists()
        with pytest.raises(KeyError):
            pwd.getpwnam(ACCOUNT)
        assert not [p for p in processes_of("root") if str(ROOT_DIR) in p]

        # the host key changes (reinstalled host, or a man in the middle): refused
        sshd.new_host_key()
        error = failed(server, *deploy, "--trust-host-key")
        assert "has CHANGED" in error and "SHA256:" in error and "known_hosts" in error
        assert not ROOT_DIR.exists()
    finally:
        _stop_installed(ROOT_DIR)
        subprocess.run(["userdel", ACCOUNT], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A real tmpfs of that size, writable by everyone (skips the test if it cannot mount)."""
    folder = Path(tempfile.mkdtemp(prefix="ferryman-small-"))
    os.chmod(folder, 0o755)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(folder)],
        capture_output=True,
    )
    try:
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
        folder.rmdir()


def test_password_login_requirement_failures_and_force(
    sshd: SshServer, server: ServerProcess
) -> None:
    env = {"SSH_PASSWORD": sshd.password}
    deploy = [
        "proxy",
        "deploy",
        sshd.url(sshd.user),
        "--password-env",
        "SSH_PASSWORD",
        "--trust-host-key",
        "--slots",
        "1",
    ]
    wrong = failed(server, *deploy[:3], "--password-env", "NOPE")
    assert "environment variable NOPE (named by --password-env) is not set" in wrong
    denied = failed(server, *deploy, env={"SSH_PASSWORD": "not-the-password"})
    assert "login refused" in denied

    # hard: the user may not write where the proxy would go
    error = failed(server, *deploy, "--name", "x", "--install-dir", "/root/fp", env=env)
    assert "the host does not meet the requirements: install folder:" in error
    assert "Permission denied" in error

    # hard: too little free disk there (a real 1 MiB file system); --force does not help
    with small_disk("1m") as tiny:
        error = failed(
            server, *deploy, "--name", "x", "--install-dir", str(tiny / "fp"), "--force", env=env
        )
        assert "the host does not meet the requirements: free disk:" in error
        assert "needs 400 MiB" in error
        assert list(tiny.iterdir()) == []  # nothing was written
    assert proxy(server, "x") is None

    # soft: less free disk than recommended (600 MiB): refused, then --force overrides it
    with small_disk("600m") as disk:
        root = disk / "fp"
        try:
            error = failed(server, *deploy, "--name", "u1", "--install-dir", str(root), env=env)
            assert (
                "free disk: needs 400 MiB, 1.0 GiB recommended (soft; --force overrides)" in error
            )
            assert not root.exists()
            out = ok(
                server, *deploy, "--name", "u1", "--install-dir", str(root), "--force", env=env
            )
            assert "WARN free disk" in out and "met, --force overrides: free disk" in out
            assert f"as {sshd.user}" in out and "service account" not in out
            assert proxy(server, "u1")["state"] == "online"  # type: ignore[index]
            assert any("ferryman.cli proxy run" in p for p in processes_of(sshd.user))
            assert (root / "venv").stat().st_uid == pwd.getpwnam(sshd.user).pw_uid

            ok(
                server,
                "proxy",
                "remove",
                "u1",
                "--uninstall",
                "--password-env",
                "SSH_PASSWORD",
                env=env,
            )
            assert proxy(server, "u1") is None and not root.exists()
            assert not [p for p in processes_of(sshd.user) if "ferryman" in p]
        finally:
            _stop_installed(root)


def test_sudo_installs_as_root_under_the_service_account(
    sshd: SshServer, server: ServerProcess
) -> None:
    if not grant_sudo(sshd.user):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("sudo is required under CI (apt-get install sudo)")
        pytest.skip("sudo is not installed")
    key = str(sshd.client_key)
    deploy = [
        "proxy",
        "deploy",
        sshd.url(sshd.user),
        "--identity",
        key,
        "--trust-host-key",
        "--sudo",
        "--name",
        "s1",
        "--slots",
        "1",
    ]
    with small_disk("600m") as disk:
        root = disk / "fp"
        try:
            out = ok(server, *deploy, "--install-dir", str(root), "--force")
            assert f"as {sshd.user}" in out and "created service account ferryman-proxy" in out
            assert proxy(server, "s1")["state"] == "online"  # type: ignore[index]
            assert any("ferryman.cli proxy run" in p for p in processes_of(ACCOUNT))
            assert (root / "venv").stat().st_uid == 0
            assert (root / "home").stat().st_uid == pwd.getpwnam(ACCOUNT).pw_uid
            ok(server, "proxy", "remove", "s1", "--uninstall", "--identity", key)
            assert proxy(server, "s1") is None and not root.exists()
            with pytest.raises(KeyError):
                pwd.getpwnam(ACCOUNT)
        finally:
            _stop_installed(root)
            subprocess.run(["userdel", ACCOUNT], capture_output=True)
