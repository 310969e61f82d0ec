"""A real backup server for the end-to-end tests, driven only through the CLI.

``server init`` and ``server run`` run as subprocesses in a temporary home on a free
loopback port, exactly as a user types them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopback_ports import ADDRESS_IN_USE, PortTaken, free_port, on_free_port, set_listen_port

FERRYMAN = [sys.executable, "-m", "ferryman.cli"]


@dataclass
class Installation:
    """One server home plus the running ``ferryman server run`` process."""

    home: Path
    work: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    proxies: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def ferryman(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one CLI command as a user would (``input``: its stdin); never raises on a
        non-zero exit."""
        return subprocess.run(
            [*FERRYMAN, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
        )

    def ok(self, *args: str, timeout: float = 120) -> str:
        """Run a command that must succeed; return its stdout."""
        done = self.ferryman(*args, timeout=timeout)
        assert done.returncode == 0, (
            f"ferryman {' '.join(args)} exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}\n{self.server_log()}"
        )
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def server_log(self) -> str:
        log = self.work / "server.log"
        if not log.exists():
            return ""
        return "server log (tail):\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-40:]
        )

    def start(self, embedded_proxy: bool = True) -> None:
        self.ok("server", "init", "--listen", f"127.0.0.1:{self.port}")
        # another program may take the port between init and run: run on another one then
        on_free_port(lambda port: self._run(port, embedded_proxy), self.port)

    def _run(self, port: int, embedded_proxy: bool) -> None:
        if port != self.port:
            set_listen_port(self.home, port)
            self.port = port
        log = (self.work / "server.log").open("wb")
        extra = [] if embedded_proxy else ["--no-embedded-proxy"]
        self.process = subprocess.Popen(
            [*FERRYMAN, "server", "run", *extra],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if ADDRESS_IN_USE in (self.work / "server.log").read_text(errors="replace"):
                    raise PortTaken(port)
                raise AssertionError(f"ferryman server run exited early\n{self.server_log()}")
            done = self.ferryman("proxy", "list", "--json", timeout=30)
            if done.returncode == 0 and (
                not embedded_proxy or any(p["state"] == "online" for p in json.loads(done.stdout))
            ):
                return
            time.sleep(0.3)
        raise AssertionError(
            f"the server did not come up with an online proxy\n{self.server_log()}"
        )

    def start_proxy(self, name: str, site: str | None = None, slots: int = 1) -> None:
        """Join a new proxy with a join token from the CLI and run it until ``stop``."""
        token = self.ok("proxy", "join-token", "--ttl", "5m").strip().splitlines()[-1]
        url = json.loads((self.home / "client.json").read_text())["server"]
        args = ["proxy", "run", "--server", url, "--join-token", token, "--name", name,
                "--slots", str(slots), "--home", str(self.work / f"proxy-{name}")]  # fmt: skip
        if site:
            args += ["--site", site]
        log = (self.work / f"proxy-{name}.log").open("wb")
        self.proxies[name] = subprocess.Popen(
            [*FERRYMAN, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_online(self, *names: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {p["name"]: p["state"] for p in self.json("proxy", "list")}
            if all(states.get(name) == "online" for name in names):
                return
            time.sleep(0.3)
        logs = "\n".join(
            (self.work / f"proxy-{n}.log").read_text(errors="replace")[-2000:] for n in names
        )
        raise AssertionError(f"proxies {names} not online: {states}\n{logs}")

    def stop(self) -> None:
        for proxy in self.proxies.values():
            if proxy.poll() is None:
                proxy.send_signal(signal.SIGTERM)
        for proxy in self.proxies.values():
            try:
                proxy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(timeout=10)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def new_installation(work: Path) -> Installation:
    home = work / "home"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FERRYMAN_")  # the caller's own installation must not leak in
    }
    env.update({"FERRYMAN_HOME": str(home), "COLUMNS": "200"})
    return Installation(home=home, work=work, port=free_port(), env=env)
