"""Starting, stopping and checking the proxy service on the host: systemd or supervised."""

from __future__ import annotations

import shlex

from ferryman.server.deploy.connection import HostConnection
from ferryman.server.deploy.errors import DeployError
from ferryman.server.deploy.layout import UNIT_NAME, Layout

UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"


def _stop_supervised(layout: Layout) -> str:
    q = shlex.quote
    # the supervisor forwards SIGTERM and waits for the proxy; proxy.pid covers a killed one
    return f"""
for f in {q(layout.pid_file)} {q(layout.run + "/proxy.pid")}; do
  [ -f "$f" ] || continue
  pid=$(cat "$f" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
done
"""


async def stop(host: HostConnection, layout: Layout) -> None:
    """Stop the proxy (its running tasks checkpoint and go back to the queue)."""
    if layout.systemd:
        await host.run(
            f"if [ -f {UNIT_PATH} ]; then systemctl stop {UNIT_NAME}; fi",
            what="stopping the service",
        )
    await host.run(_stop_supervised(layout), what="stopping the proxy")


async def start(host: HostConnection, layout: Layout, restart: bool) -> str:
    """Start (or restart) the service; returns how it runs."""
    q = shlex.quote
    if layout.systemd:
        verb = "restart" if restart else "start"
        await host.run(
            f"cat > {UNIT_PATH}.tmp && mv {UNIT_PATH}.tmp {UNIT_PATH} && "
            f"systemctl daemon-reload && systemctl enable {UNIT_NAME} >/dev/null 2>&1 && "
            f"systemctl {verb} {UNIT_NAME}",
            input=layout.unit_text(),
            what="installing the systemd unit",
        )
        return f"systemd unit {UNIT_NAME} ({verb}ed, enabled at boot)"
    if restart:
        await host.run(_stop_supervised(layout), what="stopping the proxy")
    command = (
        f"setsid {q(layout.python)} -m ferryman.proxy.supervise "
        f"--pid-file {q(layout.pid_file)} --env-file {q(layout.env_file)} -- {q(layout.launcher)}"
    )
    if layout.account:
        command = f"runuser -u {q(layout.account)} -- {command}"
    started = await host.run(
        f"cd {q(layout.root)} && {{ {command} >> {q(layout.log)} 2>&1 < /dev/null & }}; "
        f"i=0; while [ ! -f {q(layout.pid_file)} ] && [ $i -lt 200 ]; do sleep 0.05; "
        f"i=$((i+1)); done; [ -f {q(layout.pid_file)} ]",
        check=False,
    )
    if started.status != 0:
        log = await recent_log(host, layout, 5)
        raise DeployError(f"the supervised proxy did not start; its log ends with:\n{log}")
    return "supervised background process (restarted on failure; not started at boot)"


async def running(host: HostConnection, layout: Layout) -> bool:
    if layout.systemd:
        result = await host.run(f"systemctl is-active --quiet {UNIT_NAME}", check=False)
        return result.status == 0
    q = shlex.quote
    result = await host.run(
        f'pid=$(cat {q(layout.pid_file)} 2>/dev/null) && kill -0 "$pid" 2>/dev/null',
        check=False,
    )
    return result.status == 0


async def recent_log(host: HostConnection, layout: Layout, lines: int = 15) -> str:
    if layout.systemd:
        command = f"journalctl -u {UNIT_NAME} -n {lines} --no-pager 2>/dev/null"
    else:
        command = f"tail -n {lines} {shlex.quote(layout.log)} 2>/dev/null"
    result = await host.run(command, check=False)
    return result.stdout.strip()


async def remove(host: HostConnection, layout: Layout) -> None:
    """Stop and remove the service definition."""
    if layout.systemd:
        await host.run(
            f"if [ -f {UNIT_PATH} ]; then systemctl disable --now {UNIT_NAME} >/dev/null 2>&1; "
            f"rm -f {UNIT_PATH}; systemctl daemon-reload; fi",
            what="removing the systemd unit",
        )
    await host.run(_stop_supervised(layout), what="stopping the proxy")
