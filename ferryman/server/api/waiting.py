"""Run a short single-task session (browse, attach) and wait for its outcome."""

from __future__ import annotations

import time

from fastapi import HTTPException

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Session, Task
from ferryman.server.sessions import FINAL_STATES, stop_session


def wait_for_task(ctx: ServerContext, session_id: int, timeout: float) -> Task:
    """Wait until the session's only task ends; 504 (and the session stopped) on timeout."""
    ctx.signals.dispatch.set()
    deadline = time.monotonic() + timeout
    while True:
        seen = ctx.signals.session_generation()  # before reading: no change can slip past
        with ctx.db.session() as db:
            session = db.get(Session, session_id)
            assert session is not None
            task = session.tasks[0]
            if task.state in FINAL_STATES:
                db.expunge(task)
                return task
            if time.monotonic() > deadline:
                reason = task.reason or "no proxy took the task"
                stop_session(db, session, f"timed out after {timeout:.0f}s: {reason}")
                raise HTTPException(504, f"no proxy completed the request in time: {reason}")
        ctx.signals.wait_session_change(0.2, since=seen)
