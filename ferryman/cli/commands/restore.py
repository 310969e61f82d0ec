"""``ferryman restore``: whole share, folders or files, to another place or in place."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from ferryman.cli.errors import CliError
from ferryman.cli.options import path_text
from ferryman.cli.progress_view import exit_for_session, follow_session
from ferryman.cli.state import api


class Overwrite(StrEnum):
    REPLACE = "replace"
    SKIP = "skip"
    KEEP_BOTH = "keep-both"
    IF_NEWER = "if-newer"


def restore(
    ctx: typer.Context,
    point: Annotated[int, typer.Argument(metavar="POINT", help="Restore point id.")],
    path: Annotated[
        list[str] | None,
        typer.Option("--path", metavar="P", help="Folder or file to restore (repeatable)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="URL", help="Restore into this folder (absolute path)."),
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Restore to the share's original location.")
    ] = False,
    overwrite: Annotated[
        Overwrite,
        typer.Option(case_sensitive=False, help="What to do with files that already exist."),
    ] = Overwrite.REPLACE,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show live progress until the restore ends.")
    ] = False,
) -> None:
    """Restore from a restore point; prints the restore session id (or follows it)."""
    if (to is None) == (not in_place):
        raise CliError("give exactly one of --to URL or --in-place")
    body: dict[str, Any] = {
        "point": point,
        "paths": [path_text(p) for p in path or []],
        "to": to,
        "in_place": in_place,
        "overwrite": overwrite.value,
    }
    client = api(ctx)
    session = client.post("/restores", body)
    if not follow:
        typer.echo(session["id"])
        return
    final = follow_session(client, session)
    raise typer.Exit(exit_for_session(final))
