"""What the ``ferryman`` command loads at start: client commands never load the server.

Each check runs in a fresh interpreter (``sys.modules`` of the test process is shared
with every other test) and asserts on the modules, not on a time: timings live in
bench/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from typer.core import _TyperParameter

from ferryman.cli.main import COMMANDS

# Never needed by a client command: the server and engine code, the database layer, and
# the terminal rendering / HTTP stacks that only printing a table or calling the API uses.
SERVER_SIDE = ("ferryman.engine", "ferryman.server", "ferryman.proxy", "sqlalchemy")
NOT_FOR_HELP = ("rich", "pygments", "httpx", "click")
# what a command sending its request to a closed port prints (run() also exits 1 on an
# unexpected exception, so the exit code alone does not show the request was sent)
UNREACHABLE = (
    "ferryman: error: cannot reach the backup server at http://127.0.0.1:9: connection refused\n"
)


def loaded_after(args: list[str], before: str = "") -> tuple[int, str, str, set[str]]:
    """Exit code, stdout, stderr and top-level-or-ferryman module names after ``ferryman
    ARGS`` (``before``: a statement run first, in the fresh interpreter)."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        {before}
        from ferryman.cli.main import run
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = run({args!r})
        print(json.dumps([code, out.getvalue(), sorted(sys.modules)]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    code, out, modules = json.loads(done.stdout)
    return code, out, done.stderr, set(modules)


def under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_job_run_help_loads_only_the_job_commands() -> None:
    code, out, err, modules = loaded_after(["job", "run", "--help"])
    assert code == 0 and err == ""
    assert "Usage: ferryman job run [OPTIONS] {name}" in out and "--follow" in out
    assert under(modules, SERVER_SIDE + NOT_FOR_HELP) == []
    # nor pydantic: each command builds its own --help option, given the plain coercion
    # too (plain_params' get_help_option; without it, --help built a pydantic adapter)
    assert under(modules, ("pydantic", "typer._adapters")) == []
    commands = under(modules, ("ferryman.cli.commands",))
    assert commands == ["ferryman.cli.commands", "ferryman.cli.commands.job"]


def test_top_level_help_still_lists_every_command_in_order() -> None:
    code, out, err, modules = loaded_after(["--help"])
    assert code == 0 and err == ""
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == list(COMMANDS)
    assert under(modules, SERVER_SIDE) == []


def test_a_mistyped_command_is_still_suggested() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferryman.cli", "jb"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr == (
        "ferryman: error: No such command 'jb'. Did you mean 'job'? (see 'ferryman --help')\n"
    )


def test_a_mistyped_sub_command_is_still_suggested() -> None:
    """The job group builds its commands lazily; a typo in it is still named and its
    closest command suggested, as typer's eager group did, importing no other commands."""
    code, out, err, modules = loaded_after(["job", "rnu"])
    assert code == 2 and out == ""
    assert err == (
        "ferryman: error: No such command 'rnu'. Did you mean 'run'? (see 'ferryman job --help')\n"
    )
    assert under(modules, ("ferryman.cli.commands",)) == [
        "ferryman.cli.commands",
        "ferryman.cli.commands.job",
    ]


def test_a_command_calling_the_api_loads_no_httpx() -> None:
    """The client speaks http.client: httpx and httpcore (~50 ms of CPU to import and set
    up, before the request) are not loaded by a command (ferryman/cli/client.py)."""
    args = ["--server", "http://127.0.0.1:9", "--token", "t", "job", "list", "--json"]
    code, out, err, modules = loaded_after(args)
    assert code == 1 and out == ""  # nothing listens on port 9: the request was really sent
    assert err == UNREACHABLE  # not an unexpected error before the request (also exit 1)
    assert "ferryman.cli.client" in modules and "http.client" in modules
    assert under(modules, (*SERVER_SIDE, "httpx", "httpcore", "h11", "anyio")) == []
    assert under(modules, ("rich", "pygments", "urllib.request", "certifi")) == []


def test_parsing_options_does_not_load_pydantic() -> None:
    """typer builds a pydantic adapter per option; plain str/Path/flag options skip it."""
    args = ["--home", "/nonexistent/h", "--server", "http://127.0.0.1:9", "--token", "t"]
    code, out, err, modules = loaded_after([*args, "job", "run", "nightly", "--follow"])
    assert code == 1 and out == ""  # nothing listens on port 9: the request was really sent
    assert err == UNREACHABLE  # not an unexpected error in the options' coercion (also exit 1)
    assert "ferryman.cli.commands.job" in modules
    assert under(modules, ("pydantic", "pydantic_core", "typer._adapters")) == []


def test_without_the_plain_coercion_the_cli_falls_back_to_typers_own() -> None:
    """With typer internals plain_params needs missing (another typer), main.py's
    ImportError fallback leaves every option to typer's own (pydantic) coercion: the same
    command still parses its options and sends its request."""
    blocked = "sys.modules['ferryman.cli.plain_params'] = None  # import -> ImportError"
    args = ["--home", "/nonexistent/h", "--server", "http://127.0.0.1:9", "--token", "t"]
    code, out, err, modules = loaded_after([*args, "job", "run", "nightly", "--follow"], blocked)
    assert code == 1 and out == ""  # nothing listens on port 9: the request was really sent
    assert err == UNREACHABLE
    assert "ferryman.cli.commands.job" in modules
    assert "typer._adapters" in modules and "pydantic" in modules  # typer's own coercion


def all_typer_parameters() -> tuple[Any, list[Any]]:
    """The root command and every typer parameter of every command, built as the CLI
    builds them."""
    import typer

    from ferryman.cli.main import app

    found: list[Any] = []

    def walk(command: Any) -> None:
        found.extend(p for p in command.params if isinstance(p, _TyperParameter))
        for name in getattr(command, "commands", {}):
            walk(command.commands[name])

    root = typer.main.get_command(app)
    walk(root)
    return root, found


VALUES: list[Any] = ["x", "", "~/a b", "/tmp", "/nonexistent/file", "-", "yes", "no", "0", "1"]


def test_plain_coercion_gives_what_typers_own_gives() -> None:
    """For every parameter given the plain coercion, each value comes out the same (value
    and type) or fails with the same message as through typer's pydantic adapter."""
    from typer._click import Context
    from typer._click.exceptions import BadParameter
    from typer._coercion import build_runtime_param

    from ferryman.cli.plain_params import use_plain_coercion

    root, params = all_typer_parameters()
    ctx = Context(root)
    plain_kinds: set[str] = set()
    for param in params:
        typers = build_runtime_param(param.type_descriptor)
        holder = type("Holder", (), {"params": [param]})()
        use_plain_coercion(holder)
        plain = param._runtime_param
        if plain is None:
            continue  # kept typer's (a parser, choices, numbers, lists...)
        plain_kinds.add(type(plain).__name__)
        for value in [*VALUES, None, True, False]:
            outcomes = []
            for runtime in (typers, plain):
                try:
                    result = runtime.coerce(value, param=param, ctx=ctx)
                    outcomes.append((type(result), result))
                except BadParameter as exc:
                    outcomes.append((BadParameter, exc.format_message()))
            assert outcomes[0] == outcomes[1], (param.name, value)
        param._runtime_param = None
    assert plain_kinds == {"PlainStr", "PlainPath", "PlainBool"}


def test_a_sub_command_builds_only_itself_and_the_group_matches_typers() -> None:
    """``job run`` builds the run command alone; every group's help and every command's
    options are what typer's own (eager) build of the same app gives."""
    import importlib

    import typer

    from ferryman.cli.main import app

    root = typer.main.get_command(app)
    job = root.commands["job"]  # type: ignore[attr-defined]
    job.commands["run"]
    assert list(job.commands._built) == ["run"]
    for name, (module, attribute) in COMMANDS.items():
        target = getattr(importlib.import_module(f"ferryman.cli.commands.{module}"), attribute)
        if not isinstance(target, typer.Typer):
            continue
        eager_holder = typer.Typer(rich_markup_mode=None, pretty_exceptions_short=True)
        eager_holder.add_typer(target, name=name)
        eager: Any = typer.main.get_group(eager_holder).commands[name]
        lazy: Any = root.commands[name]  # type: ignore[attr-defined]
        assert list(lazy.commands) == list(eager.commands), name
        for command in eager.commands:
            built, expected = lazy.commands[command], eager.commands[command]
            assert built.help == expected.help, (name, command)
            assert [p.opts for p in built.params] == [p.opts for p in expected.params]
        with (
            typer.Context(lazy, info_name=name) as lazy_ctx,
            typer.Context(eager, info_name=name) as eager_ctx,
        ):
            assert lazy.get_help(lazy_ctx) == eager.get_help(eager_ctx), name


def test_following_into_a_pipe_loads_no_rich() -> None:
    """Progress lines off a terminal are written as they are (output.PlainLines); the
    lines themselves are compared with rich's in test_session_views.py."""
    script = textwrap.dedent(
        """
        import json, os, sys
        for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL"):
            os.environ.pop(name, None)
        from ferryman.cli.progress_view import follow_session
        ended = {"id": 7, "kind": "backup", "status": "success", "revision": 2, "tasks": [
            {"id": 1, "share": "docs", "state": "success", "proxy": "p",
             "stats": {"files": 3, "bytes_read": 2048, "bytes_transferred": 0}}]}
        class Client:
            def request(self, *args, **kwargs):
                return ended
        follow_session(Client(), {**ended, "status": "running", "revision": 1})
        print(json.dumps(sorted(sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    *lines, modules = done.stdout.splitlines()
    assert lines == [
        "task 1 docs: success on p, 3 files, 2.0 KiB read, 0 B sent",
        "session 7 backup ended SUCCESS: 3 files, 2.0 KiB read, 0 B sent. "
        "Details: ferryman session show 7",
    ]
    assert under(set(json.loads(modules)), ("rich", "pygments")) == []
