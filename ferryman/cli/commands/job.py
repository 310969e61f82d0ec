"""``ferryman job …``: what to back up, where to, when, and for how long."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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
from ferryman.cli.progress_view import exit_for_session, follow_session
from ferryman.cli.state import api

app = typer.Typer(help="Backup jobs.", no_args_is_help=True)


def parse_proxies(value: str) -> str | list[str]:
    """``auto`` or a comma-separated list of proxy names."""
    if value.strip().lower() == "auto":
        return "auto"
    names = [part.strip() for part in value.split(",")]
    if not names or any(not part for part in names):
        raise CliError(f"invalid --proxies {value!r}: use 'auto' or NAME1,NAME2")
    return names


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Job name.")],
    share: Annotated[list[str], typer.Option("--share", help="Share to back up (repeatable).")],
    repo: Annotated[str, typer.Option("--repo", help="Repository to write to.")],
    schedule: Annotated[
        str | None, typer.Option(help="Cron expression, e.g. '0 2 * * *'. Default: manual only.")
    ] = None,
    keep_last: Annotated[int | None, typer.Option(min=1, help="Keep the last N points.")] = None,
    keep_daily: Annotated[int | None, typer.Option(min=1, help="Keep N daily points.")] = None,
    keep_weekly: Annotated[int | None, typer.Option(min=1, help="Keep N weekly points.")] = None,
    keep_monthly: Annotated[int | None, typer.Option(min=1, help="Keep N monthly points.")] = None,
    proxies: Annotated[str, typer.Option(help="'auto' or P1,P2: proxies allowed.")] = "auto",
    priority: Annotated[
        int | None, typer.Option(min=0, max=100, help="0-100, higher runs first. Default: 50.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Create a backup job."""
    body: dict[str, Any] = {
        "name": name,
        "shares": share,
        "repository": repo,
        "schedule": schedule,
        "keep_last": keep_last,
        "keep_daily": keep_daily,
        "keep_weekly": keep_weekly,
        "keep_monthly": keep_monthly,
        "proxies": parse_proxies(proxies),
    }
    if priority is not None:
        body["priority"] = priority
    created = api(ctx).post("/jobs", body)
    if json:
        print_json(created)
        return
    stdout_console().print(f"job {created['name']} added", markup=False)


@app.command("set")
def set_job(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Job name or id.")],
    schedule: Annotated[
        str | None, typer.Option(help="New cron expression, e.g. '0 2 * * *'.")
    ] = None,
    no_schedule: Annotated[
        bool, typer.Option("--no-schedule", help="Manual runs only from now on.")
    ] = False,
    keep_last: Annotated[int | None, typer.Option(min=1, help="Keep the last N points.")] = None,
    keep_daily: Annotated[int | None, typer.Option(min=1, help="Keep N daily points.")] = None,
    keep_weekly: Annotated[int | None, typer.Option(min=1, help="Keep N weekly points.")] = None,
    keep_monthly: Annotated[int | None, typer.Option(min=1, help="Keep N monthly points.")] = None,
    keep_all: Annotated[
        bool,
        typer.Option("--keep-all", help="Drop every keep rule first (alone: keep everything)."),
    ] = False,
    priority: Annotated[
        int | None, typer.Option(min=0, max=100, help="0-100, higher runs first.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Change a job's schedule, keep rules or priority (from its next session on)."""
    if schedule is not None and no_schedule:
        raise CliError("--schedule and --no-schedule exclude each other")
    body: dict[str, Any] = {}
    if schedule is not None or no_schedule:
        body["schedule"] = None if no_schedule else schedule
    rules = {"keep_last": keep_last, "keep_daily": keep_daily,
             "keep_weekly": keep_weekly, "keep_monthly": keep_monthly}  # fmt: skip
    if keep_all:
        body.update(dict.fromkeys(rules))
    body.update({key: value for key, value in rules.items() if value is not None})
    if priority is not None:
        body["priority"] = priority
    if not body:
        raise CliError("nothing to change: give --schedule, --keep-…, --keep-all or --priority")
    changed = api(ctx).patch(f"/jobs/{ref(name)}", body)
    if json:
        print_json(changed)
        return
    stdout_console().print(
        f"job {changed['name']}: schedule {changed.get('schedule') or 'manual only'}, "
        f"retention {_retention(changed)}",
        markup=False,
    )


def _retention(job: dict[str, Any]) -> str:
    parts = [
        f"{label} {job[key]}"
        for key, label in (
            ("keep_last", "last"),
            ("keep_daily", "daily"),
            ("keep_weekly", "weekly"),
            ("keep_monthly", "monthly"),
        )
        if job.get(key) is not None
    ]
    return ", ".join(parts) or "keep all"


def _last_session(job: dict[str, Any]) -> str:
    last = job.get("last_session")
    if isinstance(last, dict):
        return f"{last.get('id')} {last.get('status', '')}".strip()
    return "-" if last is None else str(last)


@app.command("list")
def list_jobs(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the jobs."""
    jobs = oldest_first(api(ctx).get("/jobs"), "created", "id")
    if json:
        print_json(jobs)
        return
    print_table(
        jobs,
        [
            Column("ID", field("id"), "right"),
            Column("NAME", field("name")),
            Column("SHARES", field("shares")),
            Column("REPO", field("repository")),
            Column("SCHEDULE", field("schedule")),
            Column("NEXT RUN", field("next_run", format_time)),
            Column("RETENTION", _retention),
            Column("PROXIES", field("proxies")),
            Column("PRIO", field("priority"), "right"),
            Column("ENABLED", field("enabled")),
            Column("LAST SESSION", _last_session),
            Column("CREATED", field("created", format_time)),
        ],
        empty="no jobs",
    )


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Job name or id.")],
    json: JsonOption = False,
) -> None:
    """Show one job: shares, schedule with its next and last run, retention."""
    job = api(ctx).get(f"/jobs/{ref(name)}")
    if json:
        print_json(job)
        return
    console = stdout_console()
    rows = [
        ("job", f"{job['name']} (id {job['id']})"),
        ("shares", ", ".join(job.get("shares") or [])),
        ("repository", job.get("repository")),
        ("schedule", job.get("schedule") or "manual only"),
        ("next run", format_time(job.get("next_run"))),
        ("last run", format_time(job.get("last_run"))),
        ("retention", _retention(job)),
        ("proxies", job.get("proxies")),
        ("priority", job.get("priority")),
        ("enabled", job.get("enabled")),
        ("last session", _last_session(job)),
    ]
    for label, value in rows:
        console.print(f"{label + ':':<14}{value}", markup=False, highlight=False)


@app.command("run")
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Job name or id.")],
    follow: Annotated[
        bool, typer.Option("--follow", help="Show live progress until the session ends.")
    ] = False,
) -> None:
    """Start a backup session now; prints its id (or follows it with --follow)."""
    client = api(ctx)
    session = client.post(f"/jobs/{ref(name)}/run")
    if not follow:
        typer.echo(session["id"])
        return
    final = follow_session(client, session)
    raise typer.Exit(exit_for_session(final))


@app.command("enable")
def enable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Job name.")]) -> None:
    """Enable the job: its schedule starts it again."""
    api(ctx).post(f"/jobs/{ref(name)}/enable")
    stdout_console().print(f"job {name} enabled", markup=False)


@app.command("disable")
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Job name.")]) -> None:
    """Disable the job: its schedule no longer starts it."""
    api(ctx).post(f"/jobs/{ref(name)}/disable")
    stdout_console().print(f"job {name} disabled", markup=False)


@app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Job name.")]) -> None:
    """Remove the job (its restore points stay)."""
    api(ctx).delete(f"/jobs/{ref(name)}")
    stdout_console().print(f"job {name} removed", markup=False)
