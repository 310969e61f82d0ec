"""``ferryman proxy …``: run a proxy service, join tokens, the proxy inventory."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ferryman.cli.commands import proxy_deploy
from ferryman.cli.commands.server import LogFormat
from ferryman.cli.config import check_server_url, resolve_home
from ferryman.cli.errors import CliError
from ferryman.cli.options import JsonOption, ref
from ferryman.cli.output import (
    Column,
    field,
    format_time,
    oldest_first,
    print_json,
    print_table,
    stdout_console,
)
from ferryman.cli.state import api, get_state

app = typer.Typer(help="Backup proxies: run one, join tokens, the inventory.", no_args_is_help=True)


@app.command("run")
def run(
    ctx: typer.Context,
    server: Annotated[str, typer.Option("--server", help="Backup server URL (https://HOST:PORT).")],
    join_token: Annotated[
        str | None,
        typer.Option(
            "--join-token",
            envvar="FERRYMAN_JOIN_TOKEN",
            help="One-time token from 'ferryman proxy join-token' (first start only).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Proxy name. Default: the host name.")] = None,
    site: Annotated[str | None, typer.Option(help="Site label (same site = close).")] = None,
    slots: Annotated[
        int | None,
        typer.Option(min=1, help="Task slots. Default: derived from CPU cores and memory."),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Proxy home folder. Default: the global --home."),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            envvar="FERRYMAN_LOG_FORMAT",
            case_sensitive=False,
            help="Log lines on stderr: text, or json (one object per line). Default: text.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Join the backup server with a join token, then run as a proxy until stopped."""
    from ferryman.logs import configure_logging
    from ferryman.proxy import run_proxy  # started here only: the CLI is otherwise an API client
    from ferryman.proxy.client import JoinError
    from ferryman.proxy.service import ProxyRevoked

    server_url = check_server_url(server)
    proxy_home = resolve_home(home) if home is not None else get_state(ctx).home
    configure_logging(log_format.value if log_format else "text")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        run_proxy(
            server_url=server_url,
            join_token=join_token,
            name=name,
            site=site,
            slots=slots,
            home=proxy_home,
        )
    except JoinError as exc:
        raise CliError(f"cannot join the backup server at {server_url}: {exc}") from exc
    except ProxyRevoked as exc:
        raise CliError(str(exc)) from exc


@app.command("join-token")
def join_token(
    ctx: typer.Context,
    ttl: Annotated[
        str, typer.Option(help="How long the token stays valid: 90s, 30m, 1h, 2d.")
    ] = "1h",
) -> None:
    """Create a single-use join token; it is printed alone on the last line."""
    answer = api(ctx).post("/proxies/join-tokens", {"ttl": parse_duration(ttl)})
    token = answer.get("token") if isinstance(answer, dict) else None
    if not token:
        raise CliError("the backup server did not return a join token")
    expires = format_time(answer.get("expires"))
    typer.echo(f"join token (single use, expires {expires}):", err=True)
    typer.echo(token)


def parse_duration(text: str) -> str:
    """Validate a duration like ``90``, ``90s``, ``30m``, ``1h``, ``2d``, ``1h30m``."""
    cleaned = text.strip().lower()
    if not re.fullmatch(r"(\d+)|((\d+d)?(\d+h)?(\d+m)?(\d+s)?)", cleaned) or not cleaned:
        raise CliError(f"invalid duration {text!r}: use e.g. 90s, 30m, 1h, 2d")
    seconds = 0
    if cleaned.isdigit():
        seconds = int(cleaned)
    else:
        units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        for number, unit in re.findall(r"(\d+)([dhms])", cleaned):
            seconds += int(number) * units[unit]
    if seconds <= 0:
        raise CliError(f"invalid duration {text!r}: must be more than zero")
    return f"{seconds}s"


@app.command("list")
def list_proxies(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the proxies: state, site, slots, load, last heartbeat."""
    proxies = oldest_first(api(ctx).get("/proxies"), "created", "id")
    if json:
        print_json(proxies)
        return
    print_table(
        proxies,
        [
            Column("NAME", field("name")),
            Column("STATE", field("state")),
            Column("SITE", field("site")),
            Column("SLOTS", lambda p: f"{p.get('busy_slots', 0)}/{p.get('slots', '-')}"),
            Column("TASKS", lambda p: len(p.get("running_tasks") or []), "right"),
            Column("VERSION", field("version")),
            Column("LAST HEARTBEAT", field("last_heartbeat", format_time)),
            Column("PROBES", _probes),
        ],
        empty="no proxies",
    )


def _probes(proxy: dict[str, Any]) -> str:
    probes = proxy.get("probes") or []
    if not probes:
        return "-"
    failed = [p for p in probes if not p.get("ok")]
    text = f"{len(probes) - len(failed)}/{len(probes)} ok"
    if failed:
        text += " (fails: " + ", ".join(str(p.get("target")) for p in failed) + ")"
    return text


@app.command("enable")
def enable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Proxy name.")]) -> None:
    """Let the proxy take tasks again."""
    answer = api(ctx).post(f"/proxies/{ref(name)}/enable")
    stdout_console().print(f"proxy {name}: {answer.get('state', 'enabled')}", markup=False)


@app.command("disable")
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Proxy name.")]) -> None:
    """Stop giving the proxy new tasks (its running tasks finish)."""
    answer = api(ctx).post(f"/proxies/{ref(name)}/disable")
    stdout_console().print(f"proxy {name}: {answer.get('state', 'disabled')}", markup=False)


app.command("deploy")(proxy_deploy.deploy)
app.command("upgrade")(proxy_deploy.upgrade)


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Proxy name.")],
    uninstall: Annotated[
        bool, typer.Option(help="Also stop it and remove its files from its host (over SSH).")
    ] = False,
    identity: proxy_deploy.IdentityOption = None,
    passphrase_env: proxy_deploy.PassphraseEnvOption = None,
    password_env: proxy_deploy.PasswordEnvOption = None,
) -> None:
    """Remove the proxy: its certificate is revoked at once, its tasks are requeued."""
    if uninstall:
        body = proxy_deploy.login(identity, passphrase_env, password_env)
        proxy_deploy.uninstall(ctx, name, body)
        return
    api(ctx).delete(f"/proxies/{ref(name)}")
    stdout_console().print(f"proxy {name} removed", markup=False)
