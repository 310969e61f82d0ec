"""A real backup server and real proxy processes for the cluster benchmarks.

The server home is made with ``ferryman.server.init.init_server`` (what ``ferryman
server init`` does) and the server runs as ``ferryman --home H server run
--no-embedded-proxy``; every proxy is a ``ferryman proxy run`` process with its
own home and a single-use join token, optionally started inside a network
namespace (``ip netns exec``). The benchmarks talk to the server through its
REST API with httpx, as any client would.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.tools.ferryman import ferryman_command
from ferryman.server.init import init_server


class FleetError(RuntimeError):
    """A server or proxy of the benchmark did not start or answer as expected."""


PRIORITY_NICE = -10


def nice_prefix(priority: bool) -> list[str]:
    """``nice -n -10`` when asked and allowed (root): on a shared machine other work then
    yields the CPU to the benchmark's processes, as on a machine of their own."""
    return ["nice", "-n", str(PRIORITY_NICE)] if priority and os.geteuid() == 0 else []


def raise_own_priority(priority: bool) -> bool:
    """The same for the benchmark's own process (its API clients); True when done."""
    if not (priority and os.geteuid() == 0):
        return False
    os.nice(PRIORITY_NICE - os.nice(0))
    return True


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Server:
    """A backup server process (no embedded proxy) and an authenticated API client."""

    def __init__(
        self,
        home: Path,
        listen: str,
        db_url: str | None = None,
        env: dict[str, str] | None = None,
        priority: bool = False,
    ) -> None:
        self.home = home
        self.priority = priority
        result = init_server(home, listen, db_url)
        self.url = result.url
        self.token = result.token
        self.db_url = result.db_url
        self.ca = str(home / "ca" / "ca.pem")
        self.env = {**os.environ, **(env or {})}
        self.env.pop("FERRYMAN_HOME", None)
        self.log_path = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = self.client()

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/v1",
            verify=ssl.create_default_context(cafile=self.ca),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
        )

    def start(self, timeout: float = 60) -> Server:
        argv = [
            *nice_prefix(self.priority),
            *ferryman_command(),
            *("--home", str(self.home), "server", "run"),
        ]
        argv.append("--no-embedded-proxy")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FleetError(f"server exited ({self.proc.returncode}):\n{_tail(self.log_path)}")
            try:
                if self.api.get("/health", timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise FleetError(f"server not answering after {timeout:.0f} s:\n{_tail(self.log_path)}")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.api.request(method, path, json=body)
        if response.status_code >= 400:
            raise FleetError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body)

    def join_token(self) -> str:
        return str(self.post("/proxies/join-tokens", {"ttl": "30m"})["token"])

    def wait_proxies(self, names: set[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            online = {p["name"] for p in self.get("/proxies") if p["state"] == "online"}
            if names <= online:
                return
            time.sleep(0.3)
        raise FleetError(f"proxies {sorted(names)} not online after {timeout:.0f} s")

    def wait_session(self, session_id: int, timeout: float = 1800) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        revision = -1
        while time.monotonic() < deadline:
            session = self.get(f"/sessions/{session_id}/follow?revision={revision}&timeout=10")
            if session["status"] != "running":
                return dict(session)
            revision = session["revision"]
        raise FleetError(f"session {session_id} still running after {timeout:.0f} s")

    def stop(self) -> None:
        self.api.close()
        stop_process(self.proc)


class Proxy:
    """A ``ferryman proxy run`` process, in the host's network or in a namespace."""

    def __init__(
        self,
        server_url: str,
        home: Path,
        name: str,
        slots: int = 1,
        netns: str | None = None,
        priority: bool = False,
    ) -> None:
        self.priority = priority
        self.server_url = server_url
        self.home = home
        self.name = name
        self.slots = slots
        self.netns = netns
        self.log_path = home / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self, token: str) -> list[str]:
        argv = [
            *ferryman_command(),
            "proxy",
            "run",
            "--home",
            str(self.home),
            "--server",
            self.server_url,
            "--join-token",
            token,
            "--name",
            self.name,
            "--slots",
            str(self.slots),
        ]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return [*nice_prefix(self.priority), *argv]

    def start(self, token: str, env: dict[str, str] | None = None) -> Proxy:
        self.home.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, **(env or {})}
        environment.pop("FERRYMAN_HOME", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(token),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise FleetError(
                f"proxy {self.name} exited ({self.proc.returncode}):\n{_tail(self.log_path)}"
            )

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only the process group we started."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def stop_all(procs: Sequence[Proxy | Server]) -> None:
    for item in procs:
        try:
            item.stop()
        except Exception as exc:  # keep stopping the others
            print(f"could not stop {item}: {exc}")
