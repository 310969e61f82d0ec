"""``ferryman session …``: runs of jobs, restores and checks."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from ferryman.cli.options import JsonOption, ref
from ferryman.cli.output import (
    Column,
    field,
    format_bytes,
    format_duration,
    format_time,
    oldest_first,
    print_json,
    print_table,
    stdout_console,
)
from ferryman.cli.progress_view import exit_for_session, follow_session
from ferryman.cli.session_figures import counters, number, session_duration
from ferryman.cli.session_report import print_report
from ferryman.cli.state import api

app = typer.Typer(help="Sessions: runs of jobs, restores and checks.", no_args_is_help=True)


class SessionKind(StrEnum):
    BACKUP = "backup"
    RESTORE = "restore"
    CHECK = "check"
    MAINTENANCE = "maintenance"


SessionId = Annotated[int, typer.Argument(metavar="ID", help="Session id.")]


def _bytes_read(session: dict[str, Any]) -> str:
    return format_bytes(sum(number(counters(t), "bytes_read") for t in session.get("tasks") or []))


@app.command("list")
def list_sessions(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option(help="Only this job's sessions.")] = None,
    kind: Annotated[
        SessionKind | None, typer.Option(case_sensitive=False, help="Only this kind.")
    ] = None,
    last: Annotated[int | None, typer.Option(min=1, help="Only the newest N.")] = None,
    json: JsonOption = False,
) -> None:
    """List sessions (backups, restores, checks), oldest first."""
    params = {"job": job, "kind": kind.value if kind else None, "limit": last}
    sessions = oldest_first(api(ctx).get("/sessions", params), "created", "id")
    if json:
        print_json(sessions)
        return
    print_table(
        sessions,
        [
            Column("ID", field("id"), "right"),
            Column("KIND", field("kind")),
            Column("JOB", field("job")),
            Column("STATUS", field("status")),
            Column("CREATED", field("created", format_time)),
            Column("DURATION", lambda s: format_duration(session_duration(s))),
            Column("TASKS", lambda s: len(s.get("tasks") or []), "right"),
            Column("READ", _bytes_read, "right"),
        ],
        empty="no sessions",
    )


@app.command("show")
def show(ctx: typer.Context, session_id: SessionId, json: JsonOption = False) -> None:
    """The session report: status, per-task placement, figures, warnings."""
    session = api(ctx).get(f"/sessions/{ref(session_id)}")
    if json:
        print_json(session)
        return
    print_report(session, stdout_console())


@app.command("follow")
def follow(ctx: typer.Context, session_id: SessionId) -> None:
    """Live progress until the session ends; exit 0 on success or warning."""
    client = api(ctx)
    session = client.get(f"/sessions/{ref(session_id)}")
    final = follow_session(client, session)
    raise typer.Exit(exit_for_session(final))


@app.command("stop")
def stop(ctx: typer.Context, session_id: SessionId) -> None:
    """Stop a running session (its running tasks are cancelled)."""
    session = api(ctx).post(f"/sessions/{ref(session_id)}/stop")
    stdout_console().print(
        f"session {session_id}: {session.get('status', 'stopped')}", markup=False
    )
