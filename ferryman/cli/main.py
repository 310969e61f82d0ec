"""Entry point of the ``ferryman`` command: global options, sub-commands, error handling."""

from __future__ import annotations

import copy
import gc
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ferryman import __version__
from ferryman.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from ferryman.cli.state import CliState

try:  # typer's internals as of the pinned release; another typer keeps its own coercion
    from ferryman.cli.plain_params import use_plain_coercion
except ImportError:  # pragma: no cover - only with a typer other than the pinned one

    def use_plain_coercion(command: Any) -> Any:
        return command


# The top-level commands, in the order ``ferryman --help`` lists them: name -> (module of
# ferryman.cli.commands, attribute). An attribute named ``app`` is a sub-command group
# (a typer app), anything else one command function. A command's module is imported, and
# its click command built, only when that command is looked up: ``ferryman job run`` never
# imports the other command modules nor builds their options (docs/cli.md, "Start-up").
COMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("point", "ls"),
    "versions": ("point", "versions"),
    "restore": ("restore", "restore"),
    "server": ("server", "app"),
    "proxy": ("proxy", "app"),
    "repo": ("repo", "app"),
    "share": ("share", "app"),
    "job": ("job", "app"),
    "session": ("session", "app"),
    "point": ("point", "app"),
    "notify": ("notify", "app"),
    "user": ("user", "app"),
}


class LazyCommands(MutableMapping[str, Any]):
    """A group's name -> click command mapping that builds each command on first access.

    Iterating (names, for suggestions and the help's order) builds nothing; looking one
    up builds only that one, the way typer would have built it eagerly.
    """

    def __init__(self, loaders: dict[str, Callable[[], Any]]) -> None:
        self._loaders = dict(loaders)
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = self._loaders[name]()  # KeyError: no such command
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaders[name] = lambda: command
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaders[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


class LazyGroup(TyperGroup):
    """The root ``ferryman`` group: its sub-commands come from :data:`COMMANDS`, lazily."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(
            {name: _loader(name, *where) for name, where in COMMANDS.items()}
        )

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: TyperGroup's would build every command


def _loader(name: str, module: str, attribute: str) -> Callable[[], Any]:
    def load() -> Any:
        target = getattr(importlib.import_module(f"ferryman.cli.commands.{module}"), attribute)
        # A one-entry typer app with the root's settings, so the command is built exactly
        # as ``app.add_typer``/``app.command`` on the root would have built it.
        holder = typer.Typer(
            rich_markup_mode=app.rich_markup_mode,
            pretty_exceptions_short=app.pretty_exceptions_short,
            suggest_commands=app.suggest_commands,
        )
        if isinstance(target, typer.Typer) and not target.registered_groups:
            return _lazy_group(holder, target, name)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name)(target)
        return use_plain_coercion(typer.main.get_group(holder).commands[name])

    return load


def _lazy_group(holder: typer.Typer, target: typer.Typer, name: str) -> Any:
    """The group of ``target``'s commands, each built on first access: ``job run`` builds
    its own options, not those of the other job commands.

    The group itself is built by typer from a copy without commands; each command is then
    built by typer's own ``get_command_from_info`` with the root's settings, exactly as
    typer builds the commands of a group added with ``add_typer``.
    """
    bare = copy.copy(target)
    bare.registered_commands = []
    holder.add_typer(bare, name=name)
    group = use_plain_coercion(typer.main.get_group(holder).commands[name])

    def loader(info: Any) -> Callable[[], Any]:
        return lambda: use_plain_coercion(
            typer.main.get_command_from_info(
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
        )

    group.commands = LazyCommands(
        {
            info.name
            or typer.main.get_command_name(getattr(info.callback, "__name__", "")): loader(info)
            for info in target.registered_commands
        }
    )
    return group


app = typer.Typer(
    cls=LazyGroup,
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


def _error(message: str) -> None:
    """One line on stderr."""
    line = " ".join(message.split())
    sys.stderr.write(f"ferryman: error: {line}\n")
    sys.stderr.flush()


def run(args: list[str] | None = None) -> int:
    """Run the CLI with ``args`` and return the exit code; never lets a traceback out."""
    command = use_plain_coercion(typer.main.get_command(app))  # no pydantic for plain options
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
    code = run()
    # Everything left is the interpreter's own teardown: its garbage collections walk
    # every object the imports made (~40 ms of a 0.3 s command); frozen, they are skipped.
    # Files are still flushed and closed and atexit handlers still run.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # ``python -m ferryman.cli.main`` (bench/tools/ferryman.py's fallback)
    main()
