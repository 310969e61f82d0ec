"""Real server and proxy processes on loopback, each with its own home, for integration tests."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from loopback_ports import ADDRESS_IN_USE, PortTaken, free_port, on_free_port, set_listen_port

from ferryman.server.init import init_server

FAST_SCRYPT = 2**10
# short timings so failover and recovery happen within seconds
TEST_ENV = {
    "FERRYMAN_HEARTBEAT_INTERVAL": "0.5",
    "FERRYMAN_LEASE_SECONDS": "3",
    "FERRYMAN_OFFLINE_AFTER": "3",
    "FERRYMAN_POLL_TIMEOUT": "5",
    "FERRYMAN_DISPATCH_INTERVAL": "0.2",
    "FERRYMAN_CHECKPOINT_INTERVAL": "0.5",
    "FERRYMAN_LOG_LEVEL": "INFO",
}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TEST_ENV)
    env.update(extra or {})
    env.pop("FERRYMAN_HOME", None)
    return env


class ServerProcess:
    def __init__(
        self,
        home: Path,
        db_url: str | None = None,
        embedded: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.embedded = embedded
        self.extra_env = env or {}
        result = init_server(home, f"127.0.0.1:{self.port}", db_url, scrypt_n=FAST_SCRYPT)
        self.url = result.url
        self.token = result.token
        self.ca = str(home / "ca" / "ca.pem")
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(
            base_url=f"{self.url}/api/v1",
            verify=ssl.create_default_context(cafile=self.ca),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=90,
        )

    def start(self) -> ServerProcess:
        if self.proc is None:  # first start: another program may have taken the port since init
            started: ServerProcess = on_free_port(self._start_on, self.port)
            return started
        return self._start_on(self.port)

    def _start_on(self, port: int) -> ServerProcess:
        if port != self.port:
            set_listen_port(self.home, port)
            self.port = port
            self.url = f"https://127.0.0.1:{port}"
            self.api.base_url = httpx.URL(f"{self.url}/api/v1")
        logged = len(self.log(tail=False))
        code = (
            "from ferryman.server import run_server; "
            f"run_server({str(self.home)!r}, embedded_proxy={self.embedded})"
        )
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(self.extra_env),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if ADDRESS_IN_USE in self.log(tail=False)[logged:]:
                    raise PortTaken(port)
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if self.api.get("/health", timeout=1).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self, tail: bool = True) -> str:
        path = self.home / "server.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-5000:] if tail else text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def throttle(self) -> threading.Event:
        assert self.proc is not None
        return throttle(self.proc)

    # --- API helpers --------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        response = self.api.request(method, path, json=body)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.text}"
        elif response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body)

    def join_token(self, ttl: str = "10m") -> str:
        return str(self.post("/proxies/join-tokens", {"ttl": ttl})["token"])

    def wait_session(self, session_id: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        revision = -1
        while time.monotonic() < deadline:
            session = self.get(f"/sessions/{session_id}/follow?revision={revision}&timeout=5")
            if session["status"] != "running":
                return dict(session)
            revision = session["revision"]
        raise AssertionError(f"session {session_id} still running: {json.dumps(session)[:2000]}")

    def wait_proxies(self, names: set[str], timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proxies = self.get("/proxies")
            online = {p["name"] for p in proxies if p["state"] == "online"}
            if names <= online:
                return list(proxies)
            time.sleep(0.2)
        raise AssertionError(f"proxies {names} not online: {self.get('/proxies')}")

    def wait_probes(self, proxy: str, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.get(f"/proxies/{proxy}")
            if len(view["probes"]) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"proxy {proxy} has not probed {count} targets")


def throttle(
    proc: subprocess.Popen[bytes], run: float = 0.03, pause: float = 0.12
) -> threading.Event:
    """Slow a process down (SIGSTOP/SIGCONT duty cycle) until the returned event is set."""
    done = threading.Event()

    def cycle() -> None:
        while not done.is_set() and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGSTOP)
                done.wait(pause)
                proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                return
            done.wait(run)
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)

    threading.Thread(target=cycle, daemon=True).start()
    return done


class ProxyProcess:
    def __init__(
        self,
        server: ServerProcess,
        home: Path,
        name: str,
        site: str | None = None,
        slots: int = 1,
        hide: Path | None = None,
    ) -> None:
        self.server = server
        self.home = home
        self.name = name
        self.site = site
        self.slots = slots
        self.hide = hide  # a folder made invisible to this proxy (its own mount namespace)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, token: str | None = None) -> ProxyProcess:
        token = token if token is not None else self.server.join_token()
        self.home.mkdir(parents=True, exist_ok=True)
        code = (
            "from ferryman.proxy import run_proxy; "
            f"run_proxy({self.server.url!r}, {token!r}, name={self.name!r}, site={self.site!r}, "
            f"slots={self.slots}, home={str(self.home)!r}, poll_timeout=5)"
        )
        argv = [sys.executable, "-c", code]
        if self.hide is not None:
            script = f'mount -t tmpfs none "{self.hide}" && exec "$@"'
            argv = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                *argv,
            ]
        log = open(self.home / "proxy.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env())
        return self

    def log(self) -> str:
        path = self.home / "proxy.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def throttle(self) -> threading.Event:
        assert self.proc is not None
        return throttle(self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def make_tree(
    root: Path, dirs: int = 3, files: int = 5, size: int = 2000, seed: int = 1, big: int = 0
) -> Path:
    """A small source tree with text and random content; `big` adds random files of that size."""
    import random

    rng = random.Random(seed)
    for d in range(dirs):
        folder = root / f"dir{d}" / "sub"
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            (folder / f"file{f}.txt").write_text(f"{d}-{f} " * (size // 8))
            (folder.parent / f"r{f}.bin").write_bytes(rng.randbytes(size))
    (root / "top.txt").write_text("top level file\n")
    os.symlink("top.txt", root / "link")
    if big:
        pieces = max(1, big // (8 << 20))
        for i in range(pieces):
            (root / f"dir{i % dirs}" / f"big{i:03d}.bin").write_bytes(rng.randbytes(big // pieces))
    return root


def assert_same_tree(a: Path, b: Path) -> int:
    """Compare content, types, symlinks and modes; returns the number of files compared."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(a):
        rel = os.path.relpath(dirpath, a)
        other = b / rel
        assert sorted(os.listdir(other)) == sorted(dirnames + filenames), rel
        for name in filenames:
            pa, pb = Path(dirpath) / name, other / name
            if pa.is_symlink():
                assert os.readlink(pa) == os.readlink(pb), pa
                continue
            assert filecmp.cmp(pa, pb, shallow=False), pa
            assert pa.stat().st_mode == pb.stat().st_mode, pa
            count += 1
    return count
