"""``ferryman repo …``: backup repositories (local folders, S3-compatible buckets)."""

from __future__ import annotations

import getpass
import sys
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
from ferryman.cli.progress_view import exit_for_session, follow_session
from ferryman.cli.state import api

app = typer.Typer(help="Backup repositories.", no_args_is_help=True)

# The server waits up to 120 s for a proxy to attach a new repository.
REPOSITORY_ATTACH_SECONDS = 150.0


def _passphrase(variable: str | None) -> str:
    if variable:
        return env_secret(variable, "--passphrase-env")
    if not sys.stdin.isatty():
        raise CliError(
            "a repository passphrase is needed: put it in an environment variable "
            "and pass --passphrase-env VAR"
        )
    first = getpass.getpass("Repository passphrase: ")
    if not first:
        raise CliError("the passphrase is empty")
    if getpass.getpass("Repeat the passphrase: ") != first:
        raise CliError("the passphrases do not match")
    return first


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Repository name.")],
    url: Annotated[
        str, typer.Argument(help="Absolute path, or s3://BUCKET/PREFIX?endpoint=…&region=….")
    ],
    passphrase_env: Annotated[
        str | None,
        typer.Option(
            "--passphrase-env",
            metavar="VAR",
            help="Environment variable holding the passphrase (else asked on a terminal).",
        ),
    ] = None,
    access_key_env: Annotated[
        str | None,
        typer.Option("--access-key-env", metavar="VAR", help="Environment variable: S3 key id."),
    ] = None,
    secret_key_env: Annotated[
        str | None,
        typer.Option(
            "--secret-key-env", metavar="VAR", help="Environment variable: S3 secret key."
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Register a repository (initialised when the location is empty)."""
    if (access_key_env is None) != (secret_key_env is None):
        raise CliError("--access-key-env and --secret-key-env go together")
    body: dict[str, Any] = {"name": name, "url": url}
    if access_key_env and secret_key_env:
        if not url.startswith("s3://"):
            raise CliError("--access-key-env/--secret-key-env only apply to s3:// repositories")
        body["access_key"] = env_secret(access_key_env, "--access-key-env")
        body["secret_key"] = env_secret(secret_key_env, "--secret-key-env")
    body["passphrase"] = _passphrase(passphrase_env)
    # The server has a proxy open (or initialise) the repository before answering.
    created = api(ctx).post("/repositories", body, timeout=REPOSITORY_ATTACH_SECONDS)
    if json:
        print_json(created)
        return
    stdout_console().print(f"repository {created['name']} added ({created['url']})", markup=False)


@app.command("list")
def list_repositories(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the repositories."""
    repos = oldest_first(api(ctx).get("/repositories"), "created", "id")
    if json:
        print_json(repos)
        return
    print_table(
        repos,
        [
            Column("ID", field("id"), "right"),
            Column("NAME", field("name")),
            Column("URL", field("url")),
            Column("MAX TASKS", field("max_tasks"), "right"),
            Column("CREATED", field("created", format_time)),
        ],
        empty="no repositories",
    )


@app.command("check")
def check(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Repository name or id.")],
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also read and verify every stored chunk.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Wait for the result (default).")
    ] = True,
    json: JsonOption = False,
) -> None:
    """Check a repository's integrity (runs as a session on a proxy)."""
    _run_session(ctx, f"/repositories/{ref(name)}/check", {"read_data": read_data}, follow, json)


@app.command("gc")
def gc(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Repository name or id.")],
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Wait for the result (default).")
    ] = True,
    json: JsonOption = False,
) -> None:
    """Reclaim the space of deleted restore points (runs as a session on a proxy)."""
    _run_session(ctx, f"/repositories/{ref(name)}/gc", None, follow, json)


def _run_session(
    ctx: typer.Context, path: str, body: dict[str, Any] | None, follow: bool, json: bool
) -> None:
    """Start a repository session; print its id (or JSON), or follow it to its end."""
    client = api(ctx)
    session = client.post(path, body)
    if not follow:
        if json:
            print_json(session)
        else:
            typer.echo(session["id"])
        return
    final = follow_session(client, session, live=not json)
    if json:
        print_json(final)
    raise typer.Exit(exit_for_session(final))


@app.command("remove")
def remove(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Repository name or id.")]
) -> None:
    """Forget a repository (its stored data is not deleted)."""
    api(ctx).delete(f"/repositories/{ref(name)}")
    stdout_console().print(f"repository {name} removed (its data was left in place)", markup=False)
