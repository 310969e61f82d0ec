"""Ferryman through its real path, driven by the ``ferryman`` CLI as a user would.

A backup server with its embedded proxy runs in the background for the whole
tool run (it is a child of the harness, so its memory and the proxy's are in
every step's peak); each step is one CLI command that follows the session.
With ``proxy="standalone"`` the server runs without its embedded proxy and a
separate ``ferryman proxy run`` process, joined with a join token as an
administrator would, moves the data (the production shape).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.tools.base import CommandLog, ToolError, command_version

SHARE = "bench"
JOB = "bench"
STARTUP_SECONDS = 60.0
PROXY_MODES = ("embedded", "standalone")


def ferryman_command() -> list[str]:
    """The ``ferryman`` console script next to this Python (the project's venv)."""
    script = Path(sys.executable).with_name("ferryman")
    if script.exists():
        return [str(script)]
    found = shutil.which("ferryman")
    return [found] if found else [sys.executable, "-m", "ferryman.cli.main"]


def compile_package() -> None:
    """Write the ``ferryman`` package's bytecode, as installing a wheel does.

    The project's venv holds an editable install, which compiles nothing, and
    these machines set ``PYTHONDONTWRITEBYTECODE``: without this every CLI
    command of a step compiled its modules from source again (measured
    207 -> 187 ms wall, 125 -> 107 ms CPU for ``job run --follow``), a cost
    an installed product does not have.
    """
    spec = importlib.util.find_spec("ferryman")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", folder],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FerrymanCli:
    name = "ferryman"

    def __init__(self, proxy: str = "embedded") -> None:
        if proxy not in PROXY_MODES:
            raise ValueError(f"proxy must be one of {', '.join(PROXY_MODES)}, not {proxy!r}")
        self.proxy = proxy
        self._log: CommandLog | None = None
        self._home = Path()
        self._server: subprocess.Popen[bytes] | None = None
        self._proxy: subprocess.Popen[bytes] | None = None
        self._repo = Path()
        self.last_detail = ""

    def describe(self) -> str:
        version = command_version([*ferryman_command(), "--version"])
        return f"{version} via CLI: server + {self.proxy} proxy → local repository"

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self._log is not None, "setup() first"
        return self._log.run([*ferryman_command(), "--home", str(self._home), *args])

    def setup(self, workdir: Path, source: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        compile_package()
        self._home = workdir / "ferryman-home"
        self._log = CommandLog(workdir / "ferryman.log")
        self._cli("server", "init", "--listen", f"127.0.0.1:{free_port()}")
        standalone = self.proxy == "standalone"
        self._server = self._log.start(
            [*ferryman_command(), "--home", str(self._home), "server", "run"]
            + (["--no-embedded-proxy"] if standalone else [])
        )
        self._wait_for_server(proxy_online=not standalone)
        if standalone:
            self._start_proxy(workdir / "proxy-home")
            self._wait_for_server(proxy_online=True)
        self._cli("share", "add", SHARE, str(source))
        self._cli("job", "add", JOB, "--share", SHARE, "--repo", "default")
        repos = json.loads(self._cli("repo", "list", "--json").stdout)
        url = next(r["url"] for r in repos if r["name"] == "default")
        self._repo = Path(url.removeprefix("file://"))

    def _start_proxy(self, home: Path) -> None:
        """Join a standalone proxy with a one-time token and run it in the background."""
        assert self._log is not None
        token = self._cli("proxy", "join-token", "--ttl", "10m").stdout.strip().splitlines()[-1]
        url = json.loads((self._home / "client.json").read_text())["server"]
        proxy_run = [
            "proxy",
            "run",
            "--server",
            url,
            "--join-token",
            token,
            "--name",
            "bench-proxy",
        ]
        self._proxy = self._log.start([*ferryman_command(), "--home", str(home), *proxy_run])

    def _wait_for_server(self, proxy_online: bool) -> None:
        """Until the server answers, and (``proxy_online``) a proxy is online."""
        assert self._log is not None and self._server is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            for name, process in (("server", self._server), ("proxy", self._proxy)):
                if process is not None and process.poll() is not None:
                    tail = self._log.path.read_text(errors="replace").strip().splitlines()[-8:]
                    raise ToolError(
                        f"ferryman {name} exited ({process.returncode}); "
                        f"end of {self._log.path}:\n" + "\n".join(tail)
                    )
            try:
                proxies = json.loads(self._cli("proxy", "list", "--json").stdout)
            except (ToolError, ValueError):
                proxies = None
            if proxies is not None and (
                not proxy_online or any(p.get("state") == "online" for p in proxies)
            ):
                return
            if time.monotonic() > deadline:
                raise ToolError(f"ferryman server not ready after {STARTUP_SECONDS:.0f} s")
            time.sleep(0.3)

    def backup(self) -> None:
        out = self._cli("job", "run", JOB, "--follow").stdout.strip().splitlines()
        self.last_detail = out[-1] if out else ""  # "session N backup … ended SUCCESS …"

    def restore(self, target: Path) -> None:
        points = json.loads(self._cli("point", "list", "--json").stdout)
        if not points:
            raise ToolError("ferryman point list: no restore point")
        latest = max(points, key=lambda p: (str(p.get("time", "")), p["id"]))
        out = self._cli("restore", str(latest["id"]), "--to", str(target), "--follow")
        lines = out.stdout.strip().splitlines()
        self.last_detail = lines[-1] if lines else ""

    def repository(self) -> Path:
        return self._repo

    def background_pids(self) -> list[int]:
        return [p.pid for p in (self._server, self._proxy) if p is not None]

    def teardown(self) -> None:
        for process in (self._proxy, self._server):  # the proxy first: it reports to the server
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._proxy = self._server = None
