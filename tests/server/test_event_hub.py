"""The console's live events: one poller per server serves every open stream — one database
check per poll whatever the number of streams, none while no stream is open."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from ferryman.server.api import event_hub
from ferryman.server.api.event_hub import EventHub
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy, Session


@pytest.fixture
def db_url() -> None:
    """The hub's logic does not depend on the database kind: SQLite is enough here."""
    return None


def data(text: str) -> tuple[str, Any]:
    event, payload = text.strip().split("\n")
    return event.removeprefix("event: "), json.loads(payload.removeprefix("data: "))


def test_one_poll_serves_every_stream_and_none_runs_without_streams(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_hub, "CHECK_EVERY", 0.05)
    hub = EventHub(ctx)
    checks: list[int] = []
    real_check = hub._check

    def counted(watched: dict[int, int | None]) -> Any:
        checks.append(len(watched))
        return real_check(watched)

    monkeypatch.setattr(hub, "_check", counted)

    async def main() -> None:
        async with (
            hub.subscribe(None) as one,
            hub.subscribe(None) as two,
            hub.subscribe(None) as three,
        ):
            streams = (one, two, three)
            await one.wait(5)
            first = [s.pending() for s in streams]
            assert first[0] == first[1] == first[2]
            assert [data(t)[0] for t in first[0]] == ["sessions", "proxies"]
            assert [s.pending() for s in streams] == [[], [], []]  # nothing new: nothing sent

            def disable() -> None:
                with ctx.db.session() as db:
                    db.scalars(select(Proxy)).first().enabled = False  # type: ignore[union-attr]

            await anyio.to_thread.run_sync(disable)
            got: list[list[str]] = [[], [], []]
            with anyio.fail_after(5):
                while not all(got):
                    await one.wait(1)
                    for i, s in enumerate(streams):
                        got[i] += s.pending()
            assert got[0] == got[1] == got[2]
            ((event, proxies),) = [data(t) for t in got[0]]
            assert event == "proxies" and proxies[0]["state"] == "disabled"
            assert len(checks) == hub.ticks  # one check per poll, not one per stream

        polls = hub.ticks
        await anyio.sleep(0.5)  # ten poll periods with no stream open
        assert hub.ticks == polls
        await hub.close()
        assert hub.closed

    anyio.run(main)


def test_a_watched_session_is_sent_when_its_revision_changes_and_forgotten_when_unwatched(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_hub, "CHECK_EVERY", 0.05)
    hub = EventHub(ctx)
    with ctx.db.session() as db:
        row = Session(kind="backup", job_name="watched")
        db.add(row)
        db.flush()
        session_id = row.id

    async def main() -> None:
        async with hub.subscribe(session_id) as watcher, hub.subscribe(None) as other:
            await watcher.wait(5)
            first = [data(t) for t in watcher.pending()]
            assert [event for event, _ in first] == ["sessions", "proxies", "session"]
            assert first[2][1]["id"] == session_id
            assert [data(t)[0] for t in other.pending()] == ["sessions", "proxies"]

            def touch() -> None:
                with ctx.db.session() as db:
                    db.get_one(Session, session_id).revision += 1

            await anyio.to_thread.run_sync(touch)
            got: list[str] = []
            with anyio.fail_after(5):
                while "session" not in [data(t)[0] for t in got]:
                    await watcher.wait(1)
                    got += watcher.pending()
            assert "session" not in [data(t)[0] for t in other.pending()]  # not watched there
        assert ("session", session_id) not in hub.messages  # its last stream closed
        await hub.close()

    anyio.run(main)
