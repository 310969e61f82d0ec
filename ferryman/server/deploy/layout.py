"""Where a deployed proxy lives on its host, and what runs it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

SERVICE_ACCOUNT = "ferryman-proxy"
UNIT_NAME = "ferryman-proxy.service"
ROOT_INSTALL_DIR = "/var/lib/ferryman-proxy"
USER_INSTALL_DIR = "~/.ferryman-proxy"


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy process is started with (never a secret: the join token is in proxy.env)."""

    server_url: str
    name: str
    site: str | None
    slots: int | None


@dataclass(frozen=True)
class Layout:
    """The install folder on the host.

    `venv/` (root-owned when installed as root), `home/` (the proxy's identity and cache),
    `run/` (pid files and log), `proxy.env` (the join token until the proxy joined),
    `ferryman-proxy` (the launcher the service runs) and `version` (written last).
    """

    root: str
    account: str | None  # the service account, when installed with root rights
    systemd: bool

    @property
    def venv(self) -> str:
        return f"{self.root}/venv"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def home(self) -> str:
        return f"{self.root}/home"

    @property
    def run(self) -> str:
        return f"{self.root}/run"

    @property
    def env_file(self) -> str:
        return f"{self.root}/proxy.env"

    @property
    def launcher(self) -> str:
        return f"{self.root}/ferryman-proxy"

    @property
    def version_file(self) -> str:
        return f"{self.root}/version"

    @property
    def log(self) -> str:
        return f"{self.run}/proxy.log"

    @property
    def pid_file(self) -> str:
        return f"{self.run}/supervisor.pid"

    @property
    def service_kind(self) -> str:
        return "systemd" if self.systemd else "supervised"

    def launcher_text(self, settings: ProxySettings) -> str:
        """The script the service runs: the proxy, with its settings, in the venv."""
        argv = [
            self.python,
            "-m",
            "ferryman.cli",
            "proxy",
            "run",
            "--server",
            settings.server_url,
            "--name",
            settings.name,
            "--home",
            self.home,
        ]
        if settings.site:
            argv += ["--site", settings.site]
        if settings.slots:
            argv += ["--slots", str(settings.slots)]
        return "#!/bin/sh\n# written by ferryman proxy deploy\nexec " + shlex.join(argv) + "\n"

    def unit_text(self) -> str:
        """The systemd unit: restart on failure, started at boot, as the service account."""
        lines = [
            "# written by ferryman proxy deploy",
            "[Unit]",
            "Description=Ferryman backup proxy",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=simple",
        ]
        if self.account:
            lines.append(f"User={self.account}")
            lines.append(f"Group={self.account}")
        lines += [
            f"WorkingDirectory={self.root}",
            f"EnvironmentFile=-{self.env_file}",
            f"ExecStart={self.launcher}",
            # /run/ferryman-proxy, the proxy's own: its restore workers' fork server keeps
            # its socket there, not in /tmp where a cleaner deletes it after ~10 days
            "RuntimeDirectory=ferryman-proxy",
            "RuntimeDirectoryMode=0700",
            "Restart=on-failure",
            "RestartSec=5",
            "KillSignal=SIGTERM",
            # running tasks checkpoint on SIGTERM; give them time
            "TimeoutStopSec=90",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
        return "\n".join(lines)
