"""One SSH connection to the host being deployed: host key checked, commands, uploads."""

from __future__ import annotations

import asyncio
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from ferryman.server.deploy.errors import DeployError
from ferryman.server.deploy.host_keys import KnownHosts, fingerprint
from ferryman.server.deploy.target import Credentials, SshTarget

CONNECT_TIMEOUT = 15.0
UPLOAD_CHUNK = 1 << 20
# AES-GCM first: with AES-NI it moves a bundle several times faster than ChaCha20 here
CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]

# asyncssh logs every command line and channel at INFO: noise in the server log
logging.getLogger("asyncssh").setLevel(logging.WARNING)


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str


class HostConnection:
    """Runs shell snippets on the host, as root through `sudo -n` when asked."""

    def __init__(self, conn: asyncssh.SSHClientConnection, target: SshTarget, sudo: bool) -> None:
        self.conn = conn
        self.target = target
        self.sudo = sudo
        self.host_key_status = ""
        self.host_key_fingerprint = ""

    @classmethod
    async def open(
        cls,
        target: SshTarget,
        credentials: Credentials,
        known_hosts: KnownHosts,
        *,
        trust_host_key: bool,
        sudo: bool,
    ) -> HostConnection:
        try:
            offered = await asyncssh.get_server_host_key(
                target.host,
                target.port,
                options=asyncssh.SSHClientConnectionOptions(connect_timeout=CONNECT_TIMEOUT),
            )
        except (OSError, asyncssh.Error) as exc:
            raise DeployError(f"cannot reach {target}: {_reason(exc)}") from exc
        if offered is None:
            raise DeployError(f"{target} offered no host key")
        status = known_hosts.check(target.host, target.port, offered, trust_host_key)
        keys = None
        if credentials.private_key:
            try:
                keys = [
                    asyncssh.import_private_key(credentials.private_key, credentials.passphrase)
                ]
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise DeployError(f"cannot read the private key: {exc}") from exc
        try:
            conn = await asyncssh.connect(
                target.host,
                target.port,
                username=target.user,
                known_hosts=([offered], [], []),
                client_keys=keys,
                password=credentials.password,
                agent_path=None,
                config=None,
                connect_timeout=CONNECT_TIMEOUT,
                keepalive_interval=15,
                encryption_algs=CIPHERS,
                window=8 << 20,
                max_pktsize=256 << 10,
            )
        except asyncssh.PermissionDenied as exc:
            raise DeployError(f"{target}: login refused ({_reason(exc)})") from exc
        except (OSError, asyncssh.Error) as exc:
            raise DeployError(f"cannot connect to {target}: {_reason(exc)}") from exc
        host = cls(conn, target, sudo)
        host.host_key_status = status
        host.host_key_fingerprint = fingerprint(offered)
        return host

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()

    @property
    def local_address(self) -> str:
        """This server's address as the host sees it (the source of the SSH connection)."""
        sockname = self.conn.get_extra_info("sockname")
        return str(sockname[0]) if sockname else "127.0.0.1"

    def _wrap(self, script: str) -> str:
        command = "sh -c " + shlex.quote(script)
        return f"sudo -n {command}" if self.sudo else command

    async def run(
        self,
        script: str,
        *,
        input: str | None = None,
        stdin: Path | None = None,
        check: bool = True,
        what: str = "command",
        timeout: float = 300,
    ) -> CommandResult:
        """Run a POSIX shell snippet; `check` turns a non-zero status into a DeployError."""
        try:
            async with asyncio.timeout(timeout):
                out, err, status = await self._exchange(script, input, stdin)
        except TimeoutError as exc:
            raise DeployError(
                f"{what} on {self.target.host} timed out after {timeout:.0f}s"
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            raise DeployError(f"{what} on {self.target.host} failed: {_reason(exc)}") from exc
        if check and status != 0:
            detail = (err.strip() or out.strip()).splitlines()
            last = detail[-1] if detail else f"exit status {status}"
            if self.sudo and "sudo" in last and "password" in last:
                last += " (--sudo needs passwordless sudo: NOPASSWD in sudoers)"
            raise DeployError(f"{what} on {self.target.host} failed: {last}")
        return CommandResult(status, out, err)

    async def _exchange(
        self, script: str, input: str | None, stdin: Path | None
    ) -> tuple[str, str, int]:
        # bytes, written in large chunks: asyncssh's own file redirect moves a bundle ~4x slower
        async with self.conn.create_process(self._wrap(script), encoding=None) as process:
            if input is not None:
                process.stdin.write(input.encode())
            if stdin is not None:
                with open(stdin, "rb") as f:
                    while chunk := f.read(UPLOAD_CHUNK):
                        process.stdin.write(chunk)
                        await process.stdin.drain()
            process.stdin.write_eof()
            result = await process.wait()
        status = result.exit_status if result.exit_status is not None else 255
        return _text(result.stdout), _text(result.stderr), status


def _text(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
