"""``ferryman user …``: the people who sign in to the web console with a password."""

from __future__ import annotations

import getpass
import sys
from enum import StrEnum
from typing import Annotated

import typer

from ferryman.cli.errors import CliError
from ferryman.cli.options import JsonOption, ref
from ferryman.cli.output import Column, field, format_time, print_json, print_table, stdout_console
from ferryman.cli.state import api

app = typer.Typer(help="Console users: sign-in with a name and password.", no_args_is_help=True)


class RoleChoice(StrEnum):
    VIEWER = "viewer"
    RESTORE_OPERATOR = "restore-operator"
    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (else: asked twice).",
    ),
]


def read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or typed twice at a terminal without echo."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise CliError("no password on standard input (--password-stdin)")
        return password
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password: use --password-stdin")
    try:
        first = getpass.getpass("password: ")
        second = getpass.getpass("password (again): ")
    except EOFError:
        raise CliError("no password given") from None
    if first != second:
        raise CliError("the two passwords differ; nothing changed")
    return first


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ -).")],
    role: Annotated[RoleChoice, typer.Option("--role", case_sensitive=False, help="API role.")],
    password_stdin: PasswordStdin = False,
    json: JsonOption = False,
) -> None:
    """Create a console user with a role and a password."""
    password = read_password(password_stdin)
    created = api(ctx).post("/users", {"name": name, "role": role.value, "password": password})
    if json:
        print_json(created)
        return
    stdout_console().print(f"user {created['name']} added ({created['role']})", markup=False)


@app.command("list")
def list_users(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the console users."""
    users = api(ctx).get("/users")
    if json:
        print_json(users)
        return
    print_table(
        users,
        [
            Column("ID", field("id"), "right"),
            Column("NAME", field("name")),
            Column("ROLE", field("role")),
            Column("CREATED", field("created", format_time)),
            Column("LAST LOGIN", field("last_login", format_time)),
        ],
        empty="no users",
    )


@app.command("passwd")
def passwd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name or id.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a user's password (the user's console sessions end)."""
    password = read_password(password_stdin)
    api(ctx).post(f"/users/{ref(name)}/password", {"password": password})
    stdout_console().print(f"password of user {name} changed", markup=False)


@app.command("remove")
def remove(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name or id.")]
) -> None:
    """Remove a console user (signed out at once)."""
    api(ctx).delete(f"/users/{ref(name)}")
    stdout_console().print(f"user {name} removed", markup=False)
