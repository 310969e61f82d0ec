"""Wake-ups between the server's threads: a session follower never misses a change."""

from __future__ import annotations

import threading
import time

from ferryman.server.context import Signals


def test_a_change_signalled_before_the_wait_is_not_missed() -> None:
    # The follow long-poll reads the generation, checks the database, then waits: a
    # change that lands between the check and the wait must end the wait at once.
    signals = Signals()
    seen = signals.session_generation()
    signals.session_changed()  # e.g. the session ended while the follower read the DB
    start = time.monotonic()
    signals.wait_session_change(30.0, since=seen)
    assert time.monotonic() - start < 10.0  # returned on the change, not the 30 s timeout


def test_a_change_during_the_wait_wakes_it() -> None:
    signals = Signals()
    seen = signals.session_generation()
    timer = threading.Timer(0.05, signals.session_changed)
    timer.start()
    start = time.monotonic()
    signals.wait_session_change(30.0, since=seen)
    timer.join()
    assert time.monotonic() - start < 10.0
    assert signals.session_generation() == seen + 1


def test_without_a_change_the_wait_ends_at_its_timeout() -> None:
    signals = Signals()
    start = time.monotonic()
    signals.wait_session_change(0.05, since=signals.session_generation())
    assert time.monotonic() - start >= 0.05
