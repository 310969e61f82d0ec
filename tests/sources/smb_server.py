"""A real Samba ``smbd`` for tests, configured in a temporary folder and started on loopback.

Everything smbd writes (configuration, password database, locks, state, logs)
lives under the temporary folder; it listens on a free port of 127.0.0.1 only.
The SMB user ``backup`` is mapped to the Unix account running the tests
(``username map``), so no system account is created. Needs root (smbd refuses
to serve otherwise). Without smbd the tests are skipped locally and FAIL under
CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from loopback_ports import ADDRESS_IN_USE, PortTaken, listens, on_free_port

SMB_USER = "backup"
SMB_PASSWORD = "Secr3t-backup"
# a second SMB user mapped to the unprivileged Unix account "nobody": permission tests
LIMITED_USER = "limited"
LIMITED_PASSWORD = "Secr3t-limited"
LIMITED_UNIX = "nobody"


@dataclass
class SambaServer:
    """A running smbd; ``share_dir(name)`` is the folder behind share ``name``."""

    root: Path
    port: int
    shares: dict[str, Path]
    user: str = SMB_USER
    password: str = SMB_PASSWORD
    limited_user: str = LIMITED_USER
    limited_password: str = LIMITED_PASSWORD
    pid: int = 0  # the main smbd (leader of the process group of all its workers)
    proc: subprocess.Popen[bytes] | None = None
    launch: Callable[[], subprocess.Popen[bytes]] | None = None

    def url(self, share: str, path: str = "", user: str | None = None) -> str:
        tail = f"/{path}" if path else ""
        return f"smb://{user or self.user}@127.0.0.1:{self.port}/{share}{tail}"

    def drop_connections(self) -> int:
        """Kill the smbd worker serving each client connection (smbd forks one per
        connection): clients see their TCP connection reset, as when a NAS restarts its
        service; the daemon goes on accepting new connections. Returns how many."""
        pids = self._serving()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def freeze_connections(self) -> list[int]:
        """Stop (SIGSTOP) the smbd workers serving client connections: the connections
        stay open but nothing answers, as with a hung server. Returns their pids (the
        caller kills them: a stopped process ignores the SIGTERM that ends smbd)."""
        pids = self._serving()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def _serving(self) -> list[int]:
        pids = serving_pids(self.port)
        for _ in range(20):  # /proc/net/tcp is read in pages: an entry may be missed
            if pids:
                break
            time.sleep(0.02)
            pids = serving_pids(self.port)
        return pids

    def stop(self) -> None:
        """Kill smbd and all its workers at once: the server is gone (for good, unless
        ``start`` follows)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def start(self) -> None:
        """Start smbd again after ``stop`` (same port, configuration and state)."""
        assert self.launch is not None
        self.proc = self.launch()
        self.pid = self.proc.pid


def serving_pids(port: int) -> list[int]:
    """Processes holding an established TCP connection whose local port is ``port``
    (the smbd workers serving clients), found through /proc/net/tcp socket inodes."""
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
    return pids


class SambaUnavailable(Exception):
    """smbd cannot run here (not installed, not root)."""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"smbd is required under CI: {reason}")
    pytest.skip(f"smbd not available: {reason}")


def _config(root: Path, port: int, shares: dict[str, Path]) -> str:
    unix_user = os.environ.get("USER") or "root"
    (root / "users.map").write_text(f"{unix_user} = {SMB_USER}\n{LIMITED_UNIX} = {LIMITED_USER}\n")
    lines = [
        "[global]",
        "server role = standalone server",
        f"smb ports = {port}",
        "interfaces = 127.0.0.1",
        "bind interfaces only = yes",
        "disable netbios = yes",
        f"private dir = {root}/private",
        f"lock directory = {root}/lock",
        f"state directory = {root}/state",
        f"cache directory = {root}/cache",
        f"pid directory = {root}/run",
        f"ncalrpc dir = {root}/ncalrpc",
        f"passdb backend = tdbsam:{root}/private/passdb.tdb",
        f"username map = {root}/users.map",
        f"log file = {root}/log/smbd.log",
        "log level = 1",
        "max log size = 0",
        "load printers = no",
        "printing = bsd",
        "printcap name = /dev/null",
        "disable spoolss = yes",
        "map to guest = never",
        "server min protocol = SMB2_10",
        "kernel oplocks = no",
        # DOS attributes and NT security descriptors kept in xattrs, as on a Samba NAS
        "store dos attributes = yes",
        "ea support = yes",
        "vfs objects = acl_xattr",
        "acl_xattr:ignore system acls = yes",
    ]
    for name, path in shares.items():
        lines += [f"[{name}]", f"path = {path}", "read only = no", "create mask = 0644"]
    return "\n".join(lines) + "\n"


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"smbd exited with {proc.returncode}: {tail}")
        if listens(proc.pid, port):  # smbd itself, not another program holding the port
            return
        time.sleep(0.1)
    raise RuntimeError("smbd did not start listening within 20 s")


@contextlib.contextmanager
def run_samba(share_names: list[str]) -> Iterator[SambaServer]:
    """Configure and start smbd serving ``share_names`` (fresh empty folders); stop it after.

    Raises ``SambaUnavailable`` when smbd cannot run here (not installed, not root).
    Used by the tests (``start_samba``) and by ``bench/sources/bench_smb.py``.
    """
    smbd = shutil.which("smbd") or ("/usr/sbin/smbd" if os.path.exists("/usr/sbin/smbd") else None)
    pdbedit = shutil.which("pdbedit")
    if smbd is None or pdbedit is None:
        raise SambaUnavailable("smbd/pdbedit not found (apt-get install samba)")
    if os.geteuid() != 0:
        raise SambaUnavailable("smbd must run as root")
    root = Path(tempfile.mkdtemp(prefix="ferryman-smb-"))
    root.chmod(0o755)  # the limited user must reach the shares below
    for sub in ("private", "lock", "state", "cache", "run", "ncalrpc", "log"):
        (root / sub).mkdir()
    shares = {name: root / "shares" / name for name in share_names}
    for path in shares.values():
        path.mkdir(parents=True)
        path.chmod(0o755)
    (root / "shares").chmod(0o755)
    conf = root / "smb.conf"
    conf.write_text(_config(root, 445, shares))  # for pdbedit (it refuses port 0); set at start
    unix_user = os.environ.get("USER") or "root"
    for account, password in ((unix_user, SMB_PASSWORD), (LIMITED_UNIX, LIMITED_PASSWORD)):
        subprocess.run(
            [pdbedit, "-s", str(conf), "-a", "-u", account, "-t"],
            input=f"{password}\n{password}\n".encode(),
            check=True,
            capture_output=True,
        )
    log = root / "log" / "smbd.log"

    port = 0

    def launch() -> subprocess.Popen[bytes]:
        logged = len(log.read_text(errors="replace")) if log.exists() else 0
        with open(root / "log" / "stderr", "ab") as err:
            proc = subprocess.Popen(
                [smbd, "--foreground", "--no-process-group", "-s", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # smbd signals its process group when it stops
            )
        try:
            _wait_listening(port, proc, log)
        except RuntimeError:
            if ADDRESS_IN_USE in log.read_text(errors="replace")[logged:]:
                raise PortTaken(port) from None
            raise
        return proc

    def start(chosen: int) -> subprocess.Popen[bytes]:
        nonlocal port
        port = chosen
        conf.write_text(_config(root, port, shares))
        return launch()

    server = SambaServer(root, 0, shares, launch=launch)
    try:
        server.proc = on_free_port(start)
        server.port, server.pid = port, server.proc.pid
        yield server
    finally:
        # smbd leads its own process group (its workers included): stop them all
        proc = server.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def start_samba(share_names: list[str]) -> Iterator[SambaServer]:
    """For fixtures: ``run_samba``, skipped locally and failed under CI when unavailable."""
    try:
        server = run_samba(share_names)
        running = server.__enter__()
    except SambaUnavailable as exc:
        _unavailable(str(exc))
        return
    try:
        yield running
    finally:
        server.__exit__(None, None, None)
