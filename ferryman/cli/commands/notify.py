"""``ferryman notify …``: where session reports are sent (webhooks, e-mail)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from ferryman.cli.errors import CliError
from ferryman.cli.options import JsonOption, env_secret, ref
from ferryman.cli.output import (
    Column,
    field,
    format_time,
    oldest_first,
    print_json,
    print_table,
    stdout_console,
)
from ferryman.cli.state import api

app = typer.Typer(
    help="Notifications: send session reports to a webhook or by e-mail.", no_args_is_help=True
)
add_app = typer.Typer(help="Add a notification target.", no_args_is_help=True)
app.add_typer(add_app, name="add")

STATUSES = ("success", "warning", "failed", "stopped")
OnOption = Annotated[
    str,
    typer.Option(
        "--on",
        metavar="STATUSES",
        help="Session statuses to report, comma-separated: success,warning,failed,stopped or all.",
    ),
]
Name = Annotated[str, typer.Argument(metavar="NAME", help="Name of the notification target.")]


class TlsMode(StrEnum):
    STARTTLS = "starttls"
    SSL = "ssl"
    NONE = "none"


def parse_on(text: str) -> list[str]:
    """``failed,warning`` -> ``["failed", "warning"]``; ``all`` -> every status."""
    wanted = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not wanted or "all" in wanted:
        return ["all"]
    unknown = [w for w in wanted if w not in STATUSES]
    if unknown:
        raise CliError(
            f"invalid --on {text!r}: {', '.join(unknown)} is not a session status "
            f"(choose from {', '.join(STATUSES)} or all)"
        )
    return wanted


def parse_smtp(text: str) -> tuple[str, int | None]:
    """``mail.example.com:587`` -> (host, 587); the port is optional."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise CliError(f"invalid --smtp {text!r}: expected HOST or HOST:PORT")
    return host, int(port) if port else None


def _print_added(target: dict[str, Any]) -> None:
    stdout_console().print(
        f"notification target {target.get('name')} added ({target.get('kind')}, "
        f"on {','.join(target.get('on') or [])})",
        markup=False,
    )


@add_app.command("webhook")
def add_webhook(
    ctx: typer.Context,
    name: Name,
    url: Annotated[str, typer.Argument(metavar="URL", help="http:// or https:// URL to POST to.")],
    secret_env: Annotated[
        str | None,
        typer.Option(
            "--secret-env",
            metavar="VAR",
            help="Environment variable holding a key: the body is signed with HMAC-SHA256 "
            "(header X-Ferryman-Signature).",
        ),
    ] = None,
    on: OnOption = "all",
    json: JsonOption = False,
) -> None:
    """POST each session report as JSON to URL."""
    body: dict[str, Any] = {"name": name, "kind": "webhook", "url": url, "on": parse_on(on)}
    if secret_env:
        body["secret"] = env_secret(secret_env, "--secret-env")
    target = api(ctx).post("/notifications", body)
    if json:
        print_json(target)
        return
    _print_added(target)


@add_app.command("email")
def add_email(
    ctx: typer.Context,
    name: Name,
    smtp: Annotated[
        str, typer.Option("--smtp", metavar="HOST[:PORT]", help="SMTP server of the mail.")
    ],
    sender: Annotated[str, typer.Option("--from", metavar="ADDRESS", help="Sender address.")],
    to: Annotated[
        list[str], typer.Option("--to", metavar="ADDRESS", help="Recipient (repeatable).")
    ],
    user: Annotated[str | None, typer.Option(help="SMTP login user.")] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env", metavar="VAR", help="Environment variable: SMTP login password."
        ),
    ] = None,
    tls: Annotated[
        TlsMode,
        typer.Option(
            case_sensitive=False,
            help="starttls (default port 587), ssl (465) or none (25).",
        ),
    ] = TlsMode.STARTTLS,
    on: OnOption = "all",
    json: JsonOption = False,
) -> None:
    """Mail each session report (subject: kind, job, status) to the recipients."""
    host, port = parse_smtp(smtp)
    if password_env and not user:
        raise CliError("--password-env needs --user")
    body: dict[str, Any] = {
        "name": name,
        "kind": "email",
        "host": host,
        "port": port,
        "tls": tls.value,
        "sender": sender,
        "to": to,
        "user": user,
        "on": parse_on(on),
    }
    if password_env:
        body["password"] = env_secret(password_env, "--password-env")
    target = api(ctx).post("/notifications", body)
    if json:
        print_json(target)
        return
    _print_added(target)


def _where(target: dict[str, Any]) -> str:
    if target.get("kind") == "webhook":
        return str(target.get("url"))
    return f"{','.join(target.get('to') or [])} via {target.get('host')}:{target.get('port')}"


def _last(target: dict[str, Any]) -> str:
    last = target.get("last_delivery")
    if not last:
        return "-"
    what = f"session {last['session']}" if last.get("session") else "test"
    text = (
        f"{last.get('status')} ({what}, {format_time(last.get('finished') or last.get('created'))})"
    )
    if last.get("error"):
        text += f": {last['error']}"
    return text


@app.command("list")
def list_targets(ctx: typer.Context, json: JsonOption = False) -> None:
    """Notification targets and the outcome of their last delivery."""
    targets = oldest_first(api(ctx).get("/notifications"), "created", "id")
    if json:
        print_json(targets)
        return
    print_table(
        targets,
        [
            Column("NAME", field("name")),
            Column("KIND", field("kind")),
            Column("ON", lambda t: ",".join(t.get("on") or [])),
            Column("TO", _where),
            Column("LAST DELIVERY", _last),
        ],
        empty="no notification targets",
    )


@app.command("test")
def test(ctx: typer.Context, name: Name) -> None:
    """Send a test message now; exit 1 with the reason when it cannot be delivered."""
    delivery = api(ctx).post(f"/notifications/{ref(name)}/test", timeout=60)
    if delivery.get("status") != "delivered":
        raise CliError(f"test message to {name} not delivered: {delivery.get('error')}")
    stdout_console().print(f"test message to {name} delivered", markup=False)


@app.command("remove")
def remove(ctx: typer.Context, name: Name) -> None:
    """Remove a notification target (its delivery history goes with it)."""
    api(ctx).delete(f"/notifications/{ref(name)}")
    stdout_console().print(f"notification target {name} removed", markup=False)
