"""``ferryman point list``, ``ferryman ls`` and ``ferryman versions``: browsing restore points."""

from __future__ import annotations

import stat
from typing import Annotated, Any

import typer

from ferryman.cli.options import JsonOption, path_text, ref
from ferryman.cli.output import (
    Column,
    field,
    format_bytes,
    format_count,
    format_time,
    oldest_first,
    print_json,
    print_table,
    printable,
)
from ferryman.cli.state import api

app = typer.Typer(help="Restore points.", no_args_is_help=True)

# Browsing runs as a task on a proxy; the server waits up to 60 s for it.
BROWSE_SECONDS = 90.0
_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


@app.command("list")
def list_points(
    ctx: typer.Context,
    share: Annotated[str | None, typer.Option(help="Only this share's points.")] = None,
    job: Annotated[str | None, typer.Option(help="Only this job's points.")] = None,
    json: JsonOption = False,
) -> None:
    """List restore points, oldest first."""
    points = oldest_first(api(ctx).get("/points", {"share": share, "job": job}), "time", "id")
    if json:
        print_json(points)
        return
    print_table(
        points,
        [
            Column("ID", field("id"), "right"),
            Column("TIME", field("time", format_time)),
            Column("SHARE", field("share")),
            Column("JOB", field("job")),
            Column("REPO", field("repository")),
            Column("FILES", field("files", format_count), "right"),
            Column("SIZE", field("bytes", format_bytes), "right"),
            Column("SESSION", field("session"), "right"),
        ],
        empty="no restore points",
    )


def file_mode(entry: dict[str, Any]) -> str:
    """``drwxr-xr-x``: the server's string as is, or built from a numeric mode."""
    mode = entry.get("mode")
    if isinstance(mode, str) and mode:
        return mode
    if not isinstance(mode, int):
        return "-"
    if stat.S_IFMT(mode) == 0:
        mode |= _TYPE_BITS.get(str(entry.get("type")), 0)
    return stat.filemode(mode)


def _display_name(entry: dict[str, Any]) -> str:
    name = printable(str(entry.get("name", "-")))
    if entry.get("type") == "dir":
        return name + "/"
    target = entry.get("link_target") or entry.get("target")
    if entry.get("type") == "symlink" and target:
        return f"{name} -> {printable(str(target))}"
    return name


def ls(
    ctx: typer.Context,
    point: Annotated[int, typer.Argument(metavar="POINT", help="Restore point id.")],
    path: Annotated[str, typer.Argument(help="Folder inside the restore point.")] = "/",
    json: JsonOption = False,
) -> None:
    """List a folder of a restore point (names that are not UTF-8 show as \\xNN)."""
    browse_path = path_text(path)
    entries = api(ctx).get(
        f"/points/{ref(point)}/ls", {"path": browse_path}, timeout=BROWSE_SECONDS
    )
    entries = entries if isinstance(entries, list) else []
    if json:
        print_json(entries)
        return
    print_table(
        entries,
        [
            Column("MODE", file_mode),
            Column(
                "SIZE",
                lambda e: format_bytes(e["size"]) if e.get("type") == "file" else "-",
                "right",
            ),
            Column("MTIME", field("mtime", format_time)),
            Column("NAME", _display_name),
        ],
        empty=f"{browse_path}: empty folder",
    )


def versions(
    ctx: typer.Context,
    share: Annotated[str, typer.Argument(help="Share name.")],
    path: Annotated[str, typer.Argument(help="Path of a file inside the share.")],
    json: JsonOption = False,
) -> None:
    """All stored versions of a file, oldest first."""
    browse_path = path_text(path)
    found = oldest_first(
        api(ctx).get("/versions", {"share": share, "path": browse_path}, timeout=BROWSE_SECONDS),
        "time",
        "point",
    )
    if json:
        print_json(found)
        return
    print_table(
        found,
        [
            Column("POINT", field("point"), "right"),
            Column("POINT TIME", field("time", format_time)),
            Column("TYPE", field("type")),
            Column("SIZE", field("size", format_bytes), "right"),
            Column("MTIME", field("mtime", format_time)),
        ],
        empty=f"no stored versions of {browse_path} in share {share}",
    )
