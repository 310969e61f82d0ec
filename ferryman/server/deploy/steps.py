"""Deploy, upgrade and uninstall, step by step: each step is reported with its timing.

`deploy()` is also the upgrade: it compares what is installed with the bundle of the
server's version, drains the proxy before replacing a running install, and brings it
back. Every step checks before it acts, so a re-run repairs and otherwise changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ferryman
from ferryman.server.context import ServerContext
from ferryman.server.db.models import utcnow
from ferryman.server.deploy import control, install, service
from ferryman.server.deploy.analysis import HostReport, analyse, evaluate, report_lines
from ferryman.server.deploy.connection import HostConnection
from ferryman.server.deploy.errors import DeployError, RequirementsNotMet
from ferryman.server.deploy.host_keys import KnownHosts
from ferryman.server.deploy.layout import (
    ROOT_INSTALL_DIR,
    SERVICE_ACCOUNT,
    USER_INSTALL_DIR,
    Layout,
    ProxySettings,
)
from ferryman.server.deploy.records import DeploymentRecord, DeploymentRecords
from ferryman.server.deploy.target import Credentials, SshTarget
from ferryman.server.deploy.wheelhouse import Bundle, HostPlatform, ensure_bundle

ONLINE_TIMEOUT = 90.0
DRAIN_TIMEOUT = 300.0

Event = dict[str, Any]


@dataclass
class DeployRequest:
    target: SshTarget
    credentials: Credentials
    trust_host_key: bool = False
    name: str | None = None
    site: str | None = None
    slots: int | None = None
    sudo: bool = False
    force: bool = False
    install_dir: str | None = None
    server_url: str | None = None
    drain_timeout: float = DRAIN_TIMEOUT


def deploy_folder(ctx: ServerContext) -> Path:
    return ctx.home.root / "deploy"


def known_hosts(ctx: ServerContext) -> KnownHosts:
    return KnownHosts(deploy_folder(ctx) / "known_hosts")


def records(ctx: ServerContext) -> DeploymentRecords:
    return DeploymentRecords(deploy_folder(ctx) / "proxies")


def wheelhouse_root(ctx: ServerContext) -> Path:
    configured = getattr(ctx.config, "wheelhouse_dir", "")
    return Path(configured).expanduser() if configured else deploy_folder(ctx) / "wheelhouse"


class StepClock:
    """Times each step; `done()` returns the event line for it."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = self.started

    def done(self, step: str, detail: str = "", **extra: Any) -> Event:
        now = time.monotonic()
        event = {
            "event": "step",
            "step": step,
            "detail": detail,
            "seconds": round(now - self.last, 2),
        }
        event.update(extra)
        self.last = now
        return event

    @property
    def total(self) -> float:
        return round(time.monotonic() - self.started, 2)


async def _connect(
    ctx: ServerContext, target: SshTarget, credentials: Credentials, trust: bool, sudo: bool
) -> HostConnection:
    host = await HostConnection.open(
        target, credentials, known_hosts(ctx), trust_host_key=trust, sudo=sudo
    )
    if sudo:
        await host.run("true", what="sudo -n (passwordless sudo)")
    return host


def _server_address(ctx: ServerContext, host: HostConnection, override: str | None) -> str:
    if override:
        return override.rstrip("/")
    listen_host = ctx.config.host
    if listen_host in ("0.0.0.0", "::", ""):
        listen_host = host.local_address  # the address the host reached us from
    if ":" in listen_host:
        listen_host = f"[{listen_host}]"
    return f"https://{listen_host}:{ctx.config.port}"


def _split_url(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise DeployError(f"bad server URL {url!r}: use https://HOST:PORT")
    return host.strip("[]"), int(port)


async def deploy(ctx: ServerContext, request: DeployRequest) -> AsyncIterator[Event]:
    """Deploy (or repair, or upgrade) a proxy; yields step events, ends with done or error."""
    clock = StepClock()
    version = ferryman.__version__
    host: HostConnection | None = None
    drained_from: bool | None = None
    name = request.name
    try:
        host = await _connect(
            ctx, request.target, request.credentials, request.trust_host_key, request.sudo
        )
        yield clock.done(
            "connect",
            f"{request.target} as {request.target.user}, host key "
            f"{host.host_key_fingerprint} {host.host_key_status}",
        )

        root_rights = request.sudo or request.target.user == "root"
        install_dir = await install.resolve_root(
            host, request.install_dir or (ROOT_INSTALL_DIR if root_rights else USER_INSTALL_DIR)
        )
        server_url = _server_address(ctx, host, request.server_url)
        server_host, server_port = _split_url(server_url)
        facts = await analyse(host, install_dir, server_host, server_port)
        report = evaluate(facts)
        yield {
            **clock.done("analyse", f"{facts.hostname or request.target.host}"),
            "report": report.to_json(),
            "lines": report_lines(report),
        }
        _judge(report, request.force)
        yield clock.done("requirements", _requirements_summary(report, request.force))

        name = name or facts.hostname or request.target.host
        layout = Layout(
            install_dir,
            SERVICE_ACCOUNT if root_rights else None,
            systemd=facts.systemd and root_rights,
        )
        platform = HostPlatform.from_facts(facts)
        bundle: Bundle = await asyncio.to_thread(ensure_bundle, wheelhouse_root(ctx), platform)
        yield clock.done(
            "wheelhouse",
            f"ferryman {version} for {platform.key}, "
            f"{bundle.size / 1024**2:.0f} MiB, "
            f"{'cached' if bundle.cached else 'built now'}",
        )

        python = facts.python_path or "python3"
        yield clock.done("prepare", await install.prepare(host, layout, python))

        state = await install.verify(host, layout, bundle, python)
        was_running = await service.running(host, layout)
        proxy_known = await asyncio.to_thread(control.proxy_exists, ctx, name)
        if state == "ok":
            yield clock.done("install", f"ferryman {version} already installed, verified")
        else:
            if was_running and proxy_known:
                drained_from = await asyncio.to_thread(control.set_enabled, ctx, name, False)
                running, left = await _drain(ctx, name, request.drain_timeout)
                if running == 0:
                    detail = "disabled; no running tasks"
                elif left == 0:
                    detail = f"disabled; its {running} running task(s) finished"
                else:
                    detail = (
                        f"disabled; {left} task(s) still running after "
                        f"{request.drain_timeout:.0f}s: they checkpoint and requeue"
                    )
                yield clock.done("drain", detail)
            if was_running:
                await service.stop(host, layout)
                was_running = False
                yield clock.done("stop", f"stopped the {layout.service_kind} proxy")
            reason = (
                f"was: {state}"
                if facts.installed_version is None
                else (f"replacing {facts.installed_version} ({state})")
            )
            await install.install_bundle(host, layout, bundle, python)
            yield clock.done("install", f"ferryman {version} into {layout.venv} ({reason})")

        token = await _join_token(ctx, host, layout, name, request.target)
        settings = ProxySettings(server_url, name, request.site, request.slots)
        record = {"version": version, "name": name, "server": server_url}
        changed = await install.configure(host, layout, settings, token, record)
        yield clock.done(
            "configure",
            (
                "new join token issued for this deployment"
                if token
                else "identity kept (already joined)"
            )
            + ("; launcher updated" if changed else ""),
        )

        since = utcnow()
        if was_running and not changed and token is None:
            how = f"{layout.service_kind} proxy already running"
            since = utcnow() - dt.timedelta(seconds=ctx.config.offline_after)
        else:
            how = await service.start(host, layout, restart=was_running)
        yield clock.done("service", how)

        await _wait_online(ctx, host, layout, name, version, since)
        if token is not None:
            await install.forget_join_token(host, layout)
        if drained_from is not None:
            await asyncio.to_thread(control.set_enabled, ctx, name, drained_from)
            drained_from = None
        yield clock.done("online", f"proxy {name} online with version {version}")

        records(ctx).save(
            DeploymentRecord(
                name=name,
                target=str(request.target),
                sudo=request.sudo,
                install_dir=install_dir,
                account=layout.account,
                service=layout.service_kind,
                server_url=server_url,
                site=request.site,
                slots=request.slots,
                version=version,
                deployed=utcnow().isoformat(timespec="seconds"),
            )
        )
        yield {
            "event": "done",
            "proxy": name,
            "version": version,
            "seconds": clock.total,
            "service": layout.service_kind,
        }
    except DeployError as exc:
        yield {"event": "error", "message": str(exc), "seconds": clock.total}
    finally:
        if drained_from is not None and name is not None:
            await asyncio.to_thread(control.set_enabled, ctx, name, drained_from)
        if host is not None:
            await host.close()


def _judge(report: HostReport, force: bool) -> None:
    hard = report.hard_failures
    soft = report.soft_failures
    if hard or (soft and not force):
        missing = [f"{c.name}: {c.message or c.value}" for c in hard]
        missing += [f"{c.name}: {c.message or c.value} (soft; --force overrides)" for c in soft]
        raise RequirementsNotMet("the host does not meet the requirements: " + "; ".join(missing))


def _requirements_summary(report: HostReport, force: bool) -> str:
    soft = report.soft_failures
    if soft and force:
        return "met, --force overrides: " + ", ".join(c.name for c in soft)
    return "met"


async def _drain(ctx: ServerContext, name: str, timeout: float) -> tuple[int, int]:
    """Wait for the (disabled) proxy's tasks to end: (running at first, still running)."""
    deadline = time.monotonic() + timeout
    first: int | None = None
    while True:
        left = await asyncio.to_thread(control.active_tasks, ctx, name)
        first = left if first is None else first
        if left == 0 or time.monotonic() > deadline:
            return first, left
        await asyncio.sleep(0.5)


async def _join_token(
    ctx: ServerContext, host: HostConnection, layout: Layout, name: str, target: SshTarget
) -> str | None:
    """A fresh token unless the host holds an identity the server still knows."""
    on_host = await install.has_identity(host, layout)
    on_server = await asyncio.to_thread(control.proxy_exists, ctx, name)
    if on_host and on_server:
        return None
    if on_server:
        record = records(ctx).get(name)
        if record is None or SshTarget.parse(record.target).host != target.host:
            raise DeployError(
                f"a proxy named {name!r} already exists and was not deployed to this host; "
                "choose another --name or remove it first"
            )
        # its identity on the host is gone: the old certificate is useless, revoke it
        await asyncio.to_thread(control.remove_proxy, ctx, name, f"proxy '{name}' redeployed")
    if on_host:
        await install.reset_identity(host, layout)
    return await asyncio.to_thread(control.new_join_token, ctx)


async def _wait_online(
    ctx: ServerContext,
    host: HostConnection,
    layout: Layout,
    name: str,
    version: str,
    since: dt.datetime,
) -> None:
    deadline = time.monotonic() + ONLINE_TIMEOUT
    while time.monotonic() < deadline:
        if await asyncio.to_thread(control.online_with, ctx, name, version, since):
            return
        await asyncio.sleep(0.2)
    log = await service.recent_log(host, layout)
    raise DeployError(
        f"proxy {name} did not come online within {ONLINE_TIMEOUT:.0f}s; its log ends with:\n{log}"
    )


async def uninstall(
    ctx: ServerContext, name: str, credentials: Credentials
) -> AsyncIterator[Event]:
    """Stop the service, remove files and account on the host, then remove (revoke) the proxy."""
    clock = StepClock()
    host: HostConnection | None = None
    try:
        record = records(ctx).get(name)
        if record is None:
            raise DeployError(
                f"proxy {name!r} was not deployed by this server; nothing to uninstall "
                "(remove it without --uninstall)"
            )
        target = SshTarget.parse(record.target)
        host = await _connect(ctx, target, credentials, False, record.sudo)
        yield clock.done("connect", f"{target}, host key {host.host_key_fingerprint} known")
        layout = Layout(record.install_dir, record.account, systemd=record.service == "systemd")
        await service.remove(host, layout)
        yield clock.done("stop", f"{layout.service_kind} proxy stopped and removed")
        await install.uninstall_files(host, layout)
        yield clock.done(
            "remove files",
            f"{layout.root}" + (f", service account {layout.account}" if layout.account else ""),
        )
        removed = await asyncio.to_thread(
            control.remove_proxy, ctx, name, f"proxy '{name}' was uninstalled; requeued"
        )
        records(ctx).delete(name)
        yield clock.done("revoke", "certificate revoked" if removed else "was not registered")
        yield {"event": "done", "proxy": name, "seconds": clock.total}
    except DeployError as exc:
        yield {"event": "error", "message": str(exc), "seconds": clock.total}
    finally:
        if host is not None:
            await host.close()


def upgrade_request(
    ctx: ServerContext,
    name: str,
    credentials: Credentials,
    force: bool = False,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> DeployRequest:
    """The deploy request that re-deploys a proxy as it was, at the server's version."""
    record = records(ctx).get(name)
    if record is None:
        raise DeployError(f"proxy {name!r} was not deployed by this server: cannot upgrade it")
    return DeployRequest(
        target=SshTarget.parse(record.target),
        credentials=credentials,
        name=record.name,
        site=record.site,
        slots=record.slots,
        sudo=record.sudo,
        force=force,
        install_dir=record.install_dir,
        server_url=record.server_url,
        drain_timeout=drain_timeout,
    )
