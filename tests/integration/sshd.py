"""A real OpenSSH server for deployment tests: own config, host key and authorized keys.

Started on a free loopback port with `sshd -D -e -f CONFIG`; root may log in with a key
only, and a test user (created with useradd, removed afterwards) logs in with a key or
a password. Without sshd the tests skip locally and FAIL under CI (`CI=true`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from loopback_ports import ADDRESS_IN_USE, PortTaken, listens, on_free_port

SSHD = "/usr/sbin/sshd"
TEST_USER = "ferrytest"


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"OpenSSH server is required under CI: {reason}")
    pytest.skip(f"OpenSSH server not available: {reason}")


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


@dataclass
class SshServer:
    folder: Path
    port: int
    client_key: Path  # authorized for root and the test user
    user: str
    password: str
    proc: subprocess.Popen[bytes] | None = None
    created_user: bool = False
    authorized: Path | None = None  # the authorized_keys folder

    @property
    def host_key(self) -> Path:
        return self.folder / "ssh_host_ed25519_key"

    def url(self, user: str = "root") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}"

    def new_host_key(self) -> None:
        """Replace the host key (what a reinstalled host, or a man in the middle, looks like)."""
        self.stop()
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        keygen(self.host_key)
        self.start()

    def start(self) -> None:
        path = self.folder / "sshd.log"
        logged = len(path.read_text(errors="replace")) if path.exists() else 0
        log = open(self.folder / "sshd.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = (self.folder / "sshd.log").read_text(errors="replace")
                if ADDRESS_IN_USE in text[logged:]:
                    raise PortTaken(self.port)
                raise RuntimeError(text[-2000:])
            if listens(self.proc.pid, self.port):  # sshd, not another program on the port
                return
            time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_sshd(folder: Path) -> SshServer:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        unavailable(f"{SSHD} or ssh-keygen missing (apt-get install openssh-server)")
    if os.geteuid() != 0:
        unavailable("the tests log in as root and create a user: run them as root")
    folder.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    keygen(folder / "ssh_host_ed25519_key")
    client = keygen(folder / "client_key")
    created = False
    if subprocess.run(["id", "-u", TEST_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True)
        created = True
    password = secrets.token_urlsafe(12)
    subprocess.run(["chpasswd"], input=f"{TEST_USER}:{password}\n".encode(), check=True)
    # sshd reads a user's authorized keys as that user: keep them out of pytest's 0700 folders
    authorized = Path(tempfile.mkdtemp(prefix="ferryman-sshd-keys-"))
    os.chmod(authorized, 0o755)
    for user in ("root", TEST_USER):
        (authorized / user).write_text(client.with_suffix(".pub").read_text())
    os.chmod(folder, 0o755)

    def start(port: int) -> SshServer:
        (folder / "sshd_config").write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {folder / 'ssh_host_ed25519_key'}\n"
            f"PidFile {folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}/%u\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            f"AllowUsers root {TEST_USER}\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel ERROR\n"
        )
        server = SshServer(
            folder, port, client, TEST_USER, password, created_user=created, authorized=authorized
        )
        server.start()
        return server

    server: SshServer = on_free_port(start)
    return server


SUDOERS = Path("/etc/sudoers.d/ferryman-deploy-test")


def grant_sudo(user: str) -> bool:
    """Passwordless sudo for the test user (what `deploy --sudo` needs); False without sudo."""
    if shutil.which("sudo") is None:
        return False
    SUDOERS.write_text(f"{user} ALL=(root) NOPASSWD: ALL\n")
    os.chmod(SUDOERS, 0o440)
    return True


def stop_sshd(server: SshServer) -> None:
    server.stop()
    SUDOERS.unlink(missing_ok=True)
    if server.authorized is not None:
        shutil.rmtree(server.authorized, ignore_errors=True)
    if server.created_user:
        subprocess.run(["userdel", "-r", TEST_USER], capture_output=True)
