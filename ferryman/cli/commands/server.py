"""``ferryman server …``: create a backup server home and run the server."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from typing import Annotated

import typer

from ferryman.cli.errors import EXIT_ADDRESS_IN_USE, CliError
from ferryman.cli.output import stdout_console
from ferryman.cli.state import get_state

app = typer.Typer(help="The backup server: initialise its home, run it.", no_args_is_help=True)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def check_listen(listen: str) -> str:
    """``HOST:PORT`` with a port in 1..65535."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"invalid --listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8443")
    return listen


@app.command("init")
def init(
    ctx: typer.Context,
    listen: Annotated[
        str, typer.Option(help="Address the server will listen on (HOST:PORT).")
    ] = "127.0.0.1:8443",
    db: Annotated[
        str | None,
        typer.Option(
            help="Configuration database URL (postgresql://…). Default: SQLite in the home."
        ),
    ] = None,
    admin_user: Annotated[
        str | None,
        typer.Option(
            "--admin-user",
            metavar="NAME",
            help="Also add a console user with the administrator role; the password is "
            "read from the first line of stdin (asked twice at a terminal).",
        ),
    ] = None,
) -> None:
    """Create the server home: database, CA, administrator token, default repository."""
    listen = check_listen(listen)
    from ferryman.server import InitError, init_server  # server code: imported only to start it

    user = None
    if admin_user is not None:
        from ferryman.cli.commands.user import read_password

        user = (admin_user, read_password(from_stdin=not sys.stdin.isatty()))
    try:
        result = init_server(home=get_state(ctx).home, listen=listen, db_url=db, admin_user=user)
    except InitError as exc:
        raise CliError(str(exc)) from exc
    console = stdout_console()
    console.print(f"server home:    {result.home}", markup=False)
    console.print(f"server URL:     {result.url}", markup=False)
    console.print(f"client config:  {result.client_config} (administrator token)", markup=False)
    console.print(
        f"web console:    {result.url.rstrip('/')}/ (sign in with the token, or a user from "
        "'ferryman user add')",
        markup=False,
    )
    if admin_user is not None:
        console.print(f"console user:   {admin_user} (administrator)", markup=False)
    console.print("next:           ferryman server run", markup=False)


@app.command("run")
def run(
    ctx: typer.Context,
    listen: Annotated[
        str | None, typer.Option(help="Override the listen address from 'server init'.")
    ] = None,
    embedded_proxy: Annotated[
        bool,
        typer.Option("--embedded-proxy/--no-embedded-proxy", help="Run the embedded proxy."),
    ] = True,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            envvar="FERRYMAN_LOG_FORMAT",
            case_sensitive=False,
            help="Log lines on stderr: text, or json (one object per line). Default: text.",
            show_default=False,
        ),
    ] = None,
    metrics_public: Annotated[
        bool,
        typer.Option(
            "--metrics-public",
            help="Serve GET /metrics without a token (default: a viewer token is needed).",
        ),
    ] = False,
    catch_up: Annotated[
        bool | None,
        typer.Option(
            "--catch-up/--no-catch-up",
            help="Run once each job that missed scheduled runs while the server was down. "
            "Default: the server setting catch_up (on).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the backup server (API, dispatcher, scheduler, embedded proxy) until stopped."""
    listen = check_listen(listen) if listen else None
    from ferryman.logs import configure_logging
    from ferryman.server import run_server
    from ferryman.server.server_run import AddressInUse

    configure_logging(log_format.value if log_format else "text")
    if metrics_public:
        os.environ["FERRYMAN_METRICS_PUBLIC"] = "true"  # a server setting, read at start
    from ferryman.server.scheduler import ScheduleError

    try:
        run_server(
            home=get_state(ctx).home,
            listen=listen,
            embedded_proxy=embedded_proxy,
            catch_up=catch_up,
        )
    except FileNotFoundError as exc:  # not a server home: the message says to run 'server init'
        raise CliError(str(exc)) from exc
    except AddressInUse as exc:
        raise CliError(str(exc), EXIT_ADDRESS_IN_USE) from exc
    except ScheduleError as exc:  # a bad time zone in server.json
        raise CliError(str(exc)) from exc
