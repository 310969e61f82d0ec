"""``ferryman proxy deploy | upgrade`` and ``remove --uninstall``: the server deploys over SSH.

The CLI only reads the login secrets (key file, password from an environment variable),
sends them with the request and prints the step lines the server streams back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ferryman.cli.errors import CliError
from ferryman.cli.options import env_secret, ref
from ferryman.cli.output import stdout_console
from ferryman.cli.state import api

IdentityOption = Annotated[
    Path | None,
    typer.Option("--identity", "-i", help="Private key file for the SSH login (OpenSSH format)."),
]
PassphraseEnvOption = Annotated[
    str | None,
    typer.Option("--passphrase-env", help="Environment variable holding the key's passphrase."),
]
PasswordEnvOption = Annotated[
    str | None,
    typer.Option("--password-env", help="Environment variable holding the SSH password."),
]


def login(
    identity: Path | None, passphrase_env: str | None, password_env: str | None
) -> dict[str, Any]:
    """The login part of a deploy/upgrade/uninstall request (read here, sent once)."""
    body: dict[str, Any] = {}
    if identity is not None:
        try:
            body["private_key"] = identity.expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the key file {identity}: {exc}") from exc
    if passphrase_env:
        body["passphrase"] = env_secret(passphrase_env, "--passphrase-env")
    if password_env:
        body["password"] = env_secret(password_env, "--password-env")
    if not body.get("private_key") and not body.get("password"):
        raise CliError("give --identity KEY or --password-env VAR for the SSH login")
    return body


def follow(events: Any) -> dict[str, Any]:
    """Print each streamed step as it ends; return the final event or raise on error."""
    console = stdout_console()
    for event in events:
        kind = event.get("event")
        if kind == "step":
            detail = f"  {event['detail']}" if event.get("detail") else ""
            console.print(f"{event['step']:<13} {event['seconds']:6.2f}s{detail}", markup=False)
            for line in event.get("lines") or []:
                console.print(line, markup=False)
        elif kind == "done":
            return dict(event)
        elif kind == "error":
            raise CliError(str(event.get("message", "the deployment failed")))
    raise CliError("the backup server ended the deployment without a result")


def deploy(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="ssh://user@host[:port]")],
    identity: IdentityOption = None,
    passphrase_env: PassphraseEnvOption = None,
    password_env: PasswordEnvOption = None,
    trust_host_key: Annotated[
        bool, typer.Option(help="Record the host key of a host seen for the first time.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Proxy name. Default: the host name.")] = None,
    site: Annotated[str | None, typer.Option(help="Site label (same site = close).")] = None,
    slots: Annotated[
        int | None, typer.Option(min=1, help="Task slots. Default: from cores and memory.")
    ] = None,
    sudo: Annotated[bool, typer.Option(help="Install as root through passwordless sudo.")] = False,
    force: Annotated[bool, typer.Option(help="Deploy even if soft requirements fail.")] = False,
    install_dir: Annotated[
        str | None,
        typer.Option(
            help="Install folder on the host. Default: /var/lib/ferryman-proxy "
            "(root) or ~/.ferryman-proxy."
        ),
    ] = None,
    server_url: Annotated[
        str | None,
        typer.Option(help="URL the proxy uses to reach the server. Default: its listen address."),
    ] = None,
) -> None:
    """Analyse a Linux host over SSH, install a proxy there and start it (idempotent)."""
    body = {
        "target": target,
        "trust_host_key": trust_host_key,
        "name": name,
        "site": site,
        "slots": slots,
        "sudo": sudo,
        "force": force,
        "install_dir": install_dir,
        "server_url": server_url,
        **login(identity, passphrase_env, password_env),
    }
    done = follow(api(ctx).stream("POST", "/proxies/deploy", body))
    stdout_console().print(
        f"proxy {done['proxy']} deployed: version {done['version']}, "
        f"{done['service']}, {done['seconds']:.1f}s",
        markup=False,
    )


def upgrade(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Proxy name.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every deployed proxy not at the server's version.")
    ] = False,
    identity: IdentityOption = None,
    passphrase_env: PassphraseEnvOption = None,
    password_env: PasswordEnvOption = None,
    force: Annotated[bool, typer.Option(help="Upgrade even if soft requirements fail.")] = False,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to let running tasks finish before stopping.")
    ] = 300.0,
) -> None:
    """Re-deploy proxies at the server's version: drain, reinstall, start, re-enable."""
    if (name is None) == (not all_):
        raise CliError("give a proxy NAME or --all")
    body = {
        "force": force,
        "drain_timeout": drain_timeout,
        **login(identity, passphrase_env, password_env),
    }
    client = api(ctx)
    if all_:
        listing = client.get("/deployments")
        names = [
            d["name"] for d in listing["deployments"] if d["outdated"] and d.get("registered", True)
        ]
        if not names:
            stdout_console().print(
                f"every deployed proxy runs {listing['server_version']}", markup=False
            )
            return
    else:
        names = [str(name)]
    for proxy in names:
        stdout_console().print(f"== {proxy}", markup=False)
        done = follow(client.stream("POST", f"/proxies/{ref(proxy)}/upgrade", body))
        stdout_console().print(
            f"proxy {proxy} at version {done['version']} ({done['seconds']:.1f}s)", markup=False
        )


def uninstall(ctx: typer.Context, name: str, body: dict[str, Any]) -> None:
    follow(api(ctx).stream("POST", f"/proxies/{ref(name)}/uninstall", body))
    stdout_console().print(f"proxy {name} uninstalled and removed", markup=False)
