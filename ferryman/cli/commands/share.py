"""``ferryman share …``: the sources that jobs back up."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from ferryman.cli.errors import CliError
from ferryman.cli.options import JsonOption, env_secret, ref
from ferryman.cli.output import (
    Column,
    field,
    oldest_first,
    print_json,
    print_table,
    stdout_console,
)
from ferryman.cli.state import api

app = typer.Typer(help="Shares: the sources jobs back up.", no_args_is_help=True)


class IoControl(StrEnum):
    LOWER = "lower"
    BELOW_NORMAL = "below-normal"
    NORMAL = "normal"
    ABOVE_NORMAL = "above-normal"
    FASTER = "faster"
    ADAPTIVE = "adaptive"


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Share name.")],
    url: Annotated[
        str,
        typer.Argument(
            help="A local or mounted folder, s3://bucket[/prefix]?endpoint=URL, "
            "or smb://[DOMAIN;]user@host[:port]/share[/path]."
        ),
    ],
    site: Annotated[
        str | None, typer.Option(help="Site label (proxies on it count as close).")
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", metavar="GLOB", help="Only matching paths.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", metavar="GLOB", help="Skip matching paths.")
    ] = None,
    io_control: Annotated[
        IoControl,
        typer.Option(
            "--io-control",
            case_sensitive=False,
            help="Impact on the source: caps proxies at once (1, 1, 2, 4, unlimited); "
            "adaptive: 2 proxies, each lowering its parallel reads while the source is slow.",
        ),
    ] = IoControl.NORMAL,
    access_key_env: Annotated[
        str | None,
        typer.Option(
            "--access-key-env", metavar="VAR", help="s3:// shares: env variable with the key id."
        ),
    ] = None,
    secret_key_env: Annotated[
        str | None,
        typer.Option(
            "--secret-key-env", metavar="VAR", help="s3:// shares: env variable with the secret."
        ),
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            metavar="VAR",
            help="smb:// shares: env variable with the user's password (stored as a secret).",
        ),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            "--snapshot",
            metavar="PROVIDER",
            help="Read a snapshot: btrfs[:DIR], nas-dir:GLOB or command.",
        ),
    ] = None,
    snapshot_create: Annotated[
        str | None,
        typer.Option(
            "--snapshot-create", metavar="CMD", help="command: prints the folder to read."
        ),
    ] = None,
    snapshot_delete: Annotated[
        str | None,
        typer.Option("--snapshot-delete", metavar="CMD", help="command: removes that folder."),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Register a share."""
    body: dict[str, Any] = {
        "name": name,
        "url": url,
        "site": site,
        "include": include or [],
        "exclude": exclude or [],
        "io_control": io_control.value,
    }
    if (access_key_env is None) != (secret_key_env is None):
        raise CliError("--access-key-env and --secret-key-env go together")
    if access_key_env and secret_key_env:
        if not url.startswith("s3://"):
            raise CliError("--access-key-env/--secret-key-env only apply to s3:// shares")
        body["access_key"] = env_secret(access_key_env, "--access-key-env")
        body["secret_key"] = env_secret(secret_key_env, "--secret-key-env")
    if url.startswith("smb://"):
        if password_env is None:
            raise CliError("an smb:// share needs --password-env VAR (the user's password)")
        body["password"] = env_secret(password_env, "--password-env")
    elif password_env is not None:
        raise CliError("--password-env only applies to smb:// shares")
    for key, value in (
        ("snapshot", snapshot),
        ("snapshot_create", snapshot_create),
        ("snapshot_delete", snapshot_delete),
    ):
        if value is not None:
            body[key] = value
    created = api(ctx).post("/shares", body)
    if json:
        print_json(created)
        return
    stdout_console().print(f"share {created['name']} added ({created['url']})", markup=False)


@app.command("list")
def list_shares(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the shares."""
    shares = oldest_first(api(ctx).get("/shares"), "created", "id")
    if json:
        print_json(shares)
        return
    print_table(
        shares,
        [
            Column("ID", field("id"), "right"),
            Column("NAME", field("name")),
            Column("URL", field("url")),
            Column("SITE", field("site")),
            Column("IO CONTROL", field("io_control")),
            Column("INCLUDE", field("include")),
            Column("EXCLUDE", field("exclude")),
        ],
        empty="no shares",
    )


@app.command("remove")
def remove(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Share name or id.")]
) -> None:
    """Remove a share (refused while a job uses it)."""
    api(ctx).delete(f"/shares/{ref(name)}")
    stdout_console().print(f"share {name} removed", markup=False)
