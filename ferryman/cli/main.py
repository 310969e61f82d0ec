"""Entry point of the ``ferryman`` command: global options, sub-commands, error handling."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from ferryman import __version__
from ferryman.cli.commands import (
    job,
    notify,
    point,
    proxy,
    repo,
    restore,
    server,
    session,
    share,
    user,
)
from ferryman.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from ferryman.cli.state import CliState

app = typer.Typer(
    name="ferryman",
    help="Ferryman backup: the backup server, proxies, jobs, sessions and restores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"ferryman {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="FERRYMAN_HOME",
            help="Home folder (state, client config). Default: ~/.ferryman.",
            show_default=False,
        ),
    ] = None,
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="FERRYMAN_SERVER",
            help="Backup server URL. Default: from <home>/client.json.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="FERRYMAN_TOKEN",
            help="API token. Default: from <home>/client.json.",
            show_default=False,
        ),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            envvar="FERRYMAN_CA",
            help="CA certificate to verify the server with. Default: from <home>/client.json.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Ferryman backup."""
    ctx.obj = CliState(home_option=home, server_option=server_url, token_option=token, ca_option=ca)
    ctx.call_on_close(ctx.obj.close)


app.add_typer(server.app, name="server")
app.add_typer(proxy.app, name="proxy")
app.add_typer(repo.app, name="repo")
app.add_typer(share.app, name="share")
app.add_typer(job.app, name="job")
app.add_typer(session.app, name="session")
app.add_typer(point.app, name="point")
app.add_typer(notify.app, name="notify")
app.add_typer(user.app, name="user")
app.command("ls")(point.ls)
app.command("versions")(point.versions)
app.command("restore")(restore.restore)


def _error(message: str) -> None:
    """One line on stderr."""
    line = " ".join(message.split())
    sys.stderr.write(f"ferryman: error: {line}\n")
    sys.stderr.flush()


def run(args: list[str] | None = None) -> int:
    """Run the CLI with ``args`` and return the exit code; never lets a traceback out."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="ferryman", standalone_mode=False)
    except CliError as exc:
        _error(exc.message)
        return exc.exit_code
    except typer.TyperException as exc:  # typer's usage errors (bad option, missing argument…)
        return _usage_error(exc)
    except typer.Abort:
        _error("aborted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: never a bare traceback
        if os.environ.get("FERRYMAN_DEBUG"):
            traceback.print_exc()
        _error(f"unexpected {type(exc).__name__}: {exc} (set FERRYMAN_DEBUG=1 for details)")
        return EXIT_ERROR
    return result if isinstance(result, int) else 0


def _usage_error(exc: typer.TyperException) -> int:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        # ``ferryman repo`` alone: show that group's help, like --help would.
        typer.echo(ctx.get_help())
        return EXIT_USAGE
    exit_code = int(getattr(exc, "exit_code", EXIT_ERROR))
    message = exc.format_message().replace("Value error, ", "")
    if exit_code == EXIT_USAGE and ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    _error(message)
    return exit_code


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
