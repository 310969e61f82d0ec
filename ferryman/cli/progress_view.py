"""Following a running session: a live rich table on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ferryman.cli.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    CliError,
    ServerUnreachable,
)
from ferryman.cli.output import (
    PlainLines,
    format_bytes,
    format_count,
    format_duration,
    format_rate,
    lines_console,
    oldest_first,
)
from ferryman.cli.session_figures import (
    counters,
    eta_seconds,
    headline,
    number,
    partition_label,
    session_duration,
    session_elapsed,
    session_ended,
    summed,
)

if TYPE_CHECKING:
    from rich.console import Console, Group, JustifyMethod

    from ferryman.cli.client import ApiClient

# How long one long-poll may wait on the server; the view refreshes on its own meanwhile.
LONG_POLL_SECONDS = 10
# While following, a server that does not answer is retried this long.
RECONNECT_SECONDS = 60.0
# Off a terminal, a running task gets a progress line this often.
PLAIN_PROGRESS_SECONDS = 15.0
MAX_WAITING_SHOWN = 5
STATE_STYLE = {
    "success": "green",
    "warning": "yellow",
    "failed": "red",
    "stopped": "red",
    "running": "cyan",
    "waiting": "magenta",
    "assigned": "blue",
}


def exit_for_session(session: dict[str, Any]) -> int:
    """0 for success/warning, 3 when stopped, 1 otherwise (failed)."""
    status = session.get("status")
    if status in ("success", "warning"):
        return EXIT_OK
    if status == "stopped":
        return EXIT_STOPPED
    return EXIT_ERROR


def next_state(
    client: ApiClient, session: dict[str, Any], sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Long-poll the server for the next revision of ``session``.

    A server that restarts meanwhile is waited for (up to ``RECONNECT_SECONDS``):
    the session lives in the server's database, following can simply go on.
    """
    lost_since: float | None = None
    while True:
        try:
            answer = client.request(
                "GET",
                f"/sessions/{session['id']}/follow",
                params={"revision": session.get("revision", 0), "timeout": LONG_POLL_SECONDS},
                timeout=LONG_POLL_SECONDS + 30,
            )
            break
        except ServerUnreachable:
            now = time.monotonic()
            lost_since = now if lost_since is None else lost_since
            if now - lost_since > RECONNECT_SECONDS:
                raise
            sleep(1.0)
    if not isinstance(answer, dict):
        raise CliError("the backup server sent an unexpected session answer")
    return answer


def previous_sizes(client: ApiClient, session: dict[str, Any]) -> dict[str, float]:
    """Size of each backed-up share's newest restore point, to estimate ETAs."""
    if session.get("kind") != "backup":
        return {}
    sizes: dict[str, float] = {}
    for share in {str(t["share"]) for t in session.get("tasks") or [] if t.get("share")}:
        try:
            points = oldest_first(client.get("/points", {"share": share}), "time", "id")
        except CliError:
            continue  # only an estimate: without it the view shows no ETA for this share
        if points:
            sizes[share] = number(points[-1], "bytes")
    return sizes


class PreviousSizes(Mapping[str, float]):
    """Sizes from ``load`` (:func:`previous_sizes`), loaded the first time an ETA needs
    them: the server's own ETA (``eta_seconds``) usually comes with the progress, and a
    run that ends before any estimate is shown makes no ``/points`` request at all."""

    def __init__(self, load: Callable[[], dict[str, float]]) -> None:
        self._load = load
        self._sizes: dict[str, float] | None = None

    def _loaded(self) -> dict[str, float]:
        if self._sizes is None:
            self._sizes = self._load()
        return self._sizes

    def __getitem__(self, share: str) -> float:
        return self._loaded()[share]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def follow_session(
    client: ApiClient,
    session: dict[str, Any],
    live: bool = True,
    console: Console | PlainLines | None = None,
) -> dict[str, Any]:
    """Follow ``session`` until it ends and return its final state.

    ``live`` shows progress (a live table on a terminal, one line per task change
    otherwise); with ``live=False`` nothing is printed. Ctrl-C stops following, not
    the session.
    """
    console = console or lines_console()
    view = SessionView(
        session,
        expected_bytes=PreviousSizes(lambda: previous_sizes(client, session)) if live else {},
    )
    try:
        if live and console.is_terminal and not isinstance(console, PlainLines):
            from rich.live import Live  # the live table: only on a terminal

            with Live(view, console=console, refresh_per_second=4, transient=False):
                while not session_ended(view.session):
                    view.update(next_state(client, view.session))
        else:
            if live:
                view.print_changes(console)
            while not session_ended(view.session):
                view.update(next_state(client, view.session))
                if live:
                    view.print_changes(console)
    except KeyboardInterrupt:
        sid = session["id"]
        raise CliError(
            f"stopped following; session {sid} keeps running "
            f"(watch: 'ferryman session follow {sid}', stop: 'ferryman session stop {sid}')",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    if live:
        console.print(summary_line(view.session), markup=False)
    return view.session


class SessionView:
    """The latest state of a session, rendered as a rich table (re-rendered on refresh)."""

    def __init__(
        self,
        session: dict[str, Any],
        clock: Any = time.monotonic,
        expected_bytes: Mapping[str, float] | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        self.expected_bytes: Mapping[str, float] = {} if expected_bytes is None else expected_bytes
        # task id -> (state last printed, when), for the plain output
        self._printed: dict[Any, tuple[str, float]] = {}

    def update(self, session: dict[str, Any]) -> None:
        self.session = session

    def print_changes(self, console: Console | PlainLines) -> None:
        """Plain output: a line when a task appears or changes state, and every
        ``PLAIN_PROGRESS_SECONDS`` while it runs."""
        now = self.clock()
        for task in self.session.get("tasks") or []:
            # a waiting task also gets a line when why it waits changes
            state = str(task.get("state"))
            if state == "waiting":
                state += f" {waiting_reason(task)}"
            last = self._printed.get(task.get("id"))
            if last is not None and last[0] == state:
                if state != "running" or now - last[1] < PLAIN_PROGRESS_SECONDS:
                    continue
                line = progress_line(task, eta_seconds(task, self.expected_bytes))
            else:
                line = task_line(task)
            self._printed[task.get("id")] = (state, now)
            console.print(line, markup=False)

    def __rich__(self) -> Group:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        session = self.session
        tasks = session.get("tasks") or []
        table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("TASK", "right"),
            ("SHARE", "left"),
            ("PROXY", "left"),
            ("STATE", "left"),
            ("FILES", "right"),
            ("SCANNED", "right"),
            ("READ", "right"),
            ("SENT", "right"),
            ("RATE", "right"),
            ("ETA", "right"),
        )
        for header, justify in columns:
            table.add_column(header, justify=justify, no_wrap=True)
        for task in tasks:
            values = counters(task)
            state = str(task.get("state", "-"))
            running = state == "running"
            eta = eta_seconds(task, self.expected_bytes) if running else None
            table.add_row(
                str(task.get("id", "-")),
                Text(partition_label(task)),
                Text(str(task.get("proxy") or "-")),
                Text(state, style=STATE_STYLE.get(state, "")),
                format_count(_files(task, values)),
                format_bytes(values.get("bytes_scanned")),
                format_bytes(values.get("bytes_read")),
                format_bytes(values.get("bytes_transferred")),
                format_rate(values.get("rate")) if running else "-",
                format_duration(eta) if eta is not None else "-",
            )
        parts: list[Any] = [Text(self.overall_line()), table]
        waiting = [t for t in tasks if t.get("state") == "waiting" and t.get("reason")]
        for task in waiting[:MAX_WAITING_SHOWN]:
            parts.append(
                Text(f"task {task.get('id')} waits: {waiting_reason(task)}", style="magenta")
            )
        return Group(*parts)

    def overall_line(self) -> str:
        return overall_line(self.session, self.expected_bytes)


def _files(task: dict[str, Any], values: dict[str, Any]) -> Any:
    if task.get("kind") == "restore":
        return values.get("files_restored", values.get("files_read"))
    return values.get("files_scanned")


def overall_line(session: dict[str, Any], expected_bytes: Mapping[str, float] | None = None) -> str:
    """``session 7 backup (job nightly): running, 1/3 tasks done, 1.2 GiB read, 50 MiB/s``."""
    tasks = session.get("tasks") or []
    done = sum(1 for t in tasks if t.get("state") in ("success", "warning", "failed", "stopped"))
    all_values = [counters(t) for t in tasks]
    read = sum(number(v, "bytes_read") for v in all_values)
    sent = sum(number(v, "bytes_transferred") for v in all_values)
    rate = sum(
        number(v, "rate")
        for v, t in zip(all_values, tasks, strict=True)
        if t.get("state") == "running"
    )
    waiting = sum(1 for t in tasks if t.get("state") == "waiting")
    parts = [
        f"{_title(session)}: {session.get('status', '-')}",
        f"{done}/{len(tasks)} tasks done",
    ]
    if waiting:
        parts.append(f"{waiting} waiting for resources")
    parts.append(f"{format_bytes(read)} read, {format_bytes(sent)} sent")
    if rate:
        parts.append(format_rate(rate))
    etas = [
        eta
        for t in tasks
        if t.get("state") == "running"
        and (eta := eta_seconds(t, {} if expected_bytes is None else expected_bytes)) is not None
    ]
    if etas and not waiting:
        parts.append(f"ETA {format_duration(max(etas))}")
    elapsed = session_elapsed(session)
    if elapsed is not None:
        parts.append(f"elapsed {format_duration(elapsed)}")
    return ", ".join(parts)


def _title(session: dict[str, Any]) -> str:
    title = f"session {session.get('id')} {session.get('kind', '')}".rstrip()
    if session.get("job"):
        title += f" (job {session['job']})"
    return title


def progress_line(task: dict[str, Any], eta: float | None = None) -> str:
    """Plain progress of a running task: counters, rate and ETA."""
    values = counters(task)
    line = f"task {task.get('id')} {partition_label(task)}: running on {task.get('proxy')}, "
    line += headline(task)
    if values.get("rate") is not None:
        line += f", {format_rate(values['rate'])}"
    if eta is None and values.get("eta_seconds") is not None:
        eta = number(values, "eta_seconds")
    if eta is not None:
        line += f", ETA {format_duration(eta)}"
    return " ".join(line.split())


def waiting_reason(task: dict[str, Any]) -> str:
    """Why a task waits, with why each proxy was passed over (what the user can fix)."""
    text = str(task.get("reason") or "waiting")
    passed = [f"{p.get('proxy')}: {p.get('reason')}" for p in task.get("passed_over") or []]
    return "; ".join([text, *passed])


def task_line(task: dict[str, Any]) -> str:
    """One plain line about a task's current state."""
    state = task.get("state")
    line = f"task {task.get('id')} {partition_label(task)}: {state}"
    if task.get("proxy"):
        line += f" on {task['proxy']}"
    if state == "waiting":
        line += f" ({waiting_reason(task)})"
    elif state in ("assigned", "running") and task.get("reason"):
        line += f" ({task['reason']})"
    if state in ("success", "warning", "failed", "stopped"):
        line += f", {headline(task)}"
        warnings = task.get("warnings") or []
        if warnings:
            line += f", {len(warnings)} warning(s)"
        if task.get("error"):
            line += f"; error: {task['error']}"
    return " ".join(line.split())


def summary_line(session: dict[str, Any]) -> str:
    """The last line after following: status, duration, totals, where to look next."""
    tasks = session.get("tasks") or []
    warnings = sum(len(t.get("warnings") or []) for t in tasks)
    line = f"{_title(session)} ended {str(session.get('status', '-')).upper()}"
    if session.get("reason"):
        line += f" ({session['reason']})"
    duration = session_duration(session)
    if duration is not None:
        line += f" in {format_duration(duration)}"
    line += f": {headline(summed(tasks, session.get('kind')))}"
    if warnings:
        line += f", {warnings} warning(s)"
    line += f". Details: ferryman session show {session.get('id')}"
    return " ".join(line.split())
