"""The scheduler: starts each enabled job when its cron expression says so.

One thread per server. Every `schedule_interval` seconds it compares each
enabled, scheduled job's `next_run` with the clock. A due job is started
through the same code path as `job run` (`job_runs.start_job`), at most once
however many runs were due (clock jumps forward, a slow round), and never while
it is still running (the run is skipped and logged). When the clock goes back,
`next_run` is pulled back to the first firing time after the new clock.

At start-up, a job whose `next_run` passed while the server was down missed one
or more runs: it runs once (trigger ``catch-up``) unless catch-up is off
(`server run --no-catch-up`, or ``"catch_up": false`` in server.json).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import select

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, utcnow
from ferryman.server.job_runs import JobGone, JobNotStarted, start_job

log = logging.getLogger("ferryman.server.scheduler")

MISSED_COUNT_CAP = 1000  # missed runs counted for the log line, no more


class ScheduleError(ValueError):
    """A bad time zone or cron expression (a clear message for the admin)."""


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone schedules are evaluated in (server setting ``timezone``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"server setting timezone: unknown time zone {name!r} (e.g. 'UTC', 'Europe/Paris')"
        ) from exc


def next_fire(schedule: str, after: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The first firing time of ``schedule`` strictly after ``after`` (returned in UTC)."""
    try:
        found: dt.datetime = croniter(schedule, after.astimezone(zone)).get_next(dt.datetime)
    except (ValueError, KeyError) as exc:
        raise ScheduleError(f"invalid cron expression {schedule!r}: {exc}") from exc
    return found.astimezone(dt.UTC)


def last_fire(schedule: str, at: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The latest firing time of ``schedule`` at or before ``at`` (in UTC)."""
    probe = at + dt.timedelta(microseconds=1)
    found: dt.datetime = croniter(schedule, probe.astimezone(zone)).get_prev(dt.datetime)
    return found.astimezone(dt.UTC)


@dataclass
class Decision:
    """What to do with one job at one instant."""

    due: bool
    next_run: dt.datetime
    scheduled_for: dt.datetime | None = None  # the firing time a due run stands for
    missed: int = 0  # firing times that passed since `next_run` (a due run stands for them all)


def decide(
    schedule: str, next_run: dt.datetime | None, now: dt.datetime, zone: ZoneInfo
) -> Decision:
    """Due or not, and the job's next firing time; pure, so clock jumps are testable."""
    upcoming = next_fire(schedule, now, zone)
    if next_run is None or next_run > upcoming:
        # a new schedule, or the clock went back: wait for the first firing after now
        return Decision(due=False, next_run=upcoming)
    if next_run > now:
        return Decision(due=False, next_run=next_run)
    missed = 0
    it = croniter(schedule, next_run.astimezone(zone) - dt.timedelta(microseconds=1))
    while missed < MISSED_COUNT_CAP and it.get_next(dt.datetime).astimezone(dt.UTC) <= now:
        missed += 1
    return Decision(
        due=True,
        next_run=upcoming,
        scheduled_for=last_fire(schedule, now, zone),
        missed=missed,
    )


class Scheduler:
    """Starts scheduled jobs; `run_once` is one round (the thread calls it in a loop)."""

    def __init__(self, ctx: ServerContext, catch_up: bool | None = None) -> None:
        self.ctx = ctx
        self.zone = time_zone(ctx.config.timezone)
        self.catch_up = ctx.config.catch_up if catch_up is None else catch_up
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reported: set[tuple[int, str]] = set()  # bad schedules already logged

    def run_once(self, now: dt.datetime | None = None, *, startup: bool = False) -> list[int]:
        """One round; returns the ids of the sessions it started."""
        now = now or utcnow()
        started: list[int] = []
        with self.ctx.db.session() as db:
            jobs = [
                (job.id, job.name, job.schedule, job.next_run, job.enabled)
                for job in db.scalars(select(Job).order_by(Job.priority.desc(), Job.id))
            ]
        for job_id, name, schedule, next_run, enabled in jobs:
            if not enabled or not schedule:
                if next_run is not None:
                    self._save(job_id, schedule, None, None)
                continue
            try:
                decision = decide(schedule, next_run, now, self.zone)
            except ScheduleError as exc:
                if (job_id, schedule) not in self._reported:
                    self._reported.add((job_id, schedule))
                    log.error("job %s: not scheduled: %s", name, exc)
                continue
            if not decision.due:
                if decision.next_run != next_run:
                    self._save(job_id, schedule, decision.next_run, None)
                continue
            trigger = "catch-up" if startup else "schedule"
            if startup and not self.catch_up:
                log.info(
                    "job %s: missed %d scheduled run(s) while the server was down; "
                    "catch-up is off, next run %s",
                    name,
                    decision.missed,
                    decision.next_run.isoformat(),
                )
                self._save(job_id, schedule, decision.next_run, None)
                continue
            session_id = self._start(job_id, name, trigger, decision)
            self._save(
                job_id, schedule, decision.next_run, decision.scheduled_for if session_id else None
            )
            if session_id:
                started.append(session_id)
        return started

    def _start(self, job_id: int, name: str, trigger: str, decision: Decision) -> int | None:
        what = f"run of {decision.scheduled_for.isoformat() if decision.scheduled_for else '?'}"
        if decision.missed > 1:
            what += f" (standing for {decision.missed} missed runs)"
        try:
            session_id = start_job(self.ctx, job_id, trigger)
        except JobGone:
            return None
        except JobNotStarted as exc:
            log.warning("job %s: scheduled %s skipped: %s", name, what, exc)
            return None
        log.info("job %s: %s %s started as session %d", name, trigger, what, session_id)
        return session_id

    def _save(
        self,
        job_id: int,
        schedule: str | None,
        next_run: dt.datetime | None,
        last_run: dt.datetime | None,
    ) -> None:
        with self.ctx.db.session() as db:
            job = db.get(Job, job_id)
            if job is None or job.schedule != schedule:
                return  # removed, or its schedule changed meanwhile: the next round sees it
            job.next_run = next_run
            if last_run is not None:
                job.last_run = last_run

    def _loop(self) -> None:
        first = True
        # a server shutting down starts nothing new (its sessions would only be interrupted)
        while not self._stop.is_set() and not self.ctx.shutting_down.is_set():
            try:
                self.run_once(startup=first)
                first = False
            except Exception:
                log.exception("scheduler round failed; retrying")
            self._stop.wait(self.ctx.config.schedule_interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
