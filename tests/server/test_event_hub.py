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
from ferryman.server.db.models import Proxy


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
