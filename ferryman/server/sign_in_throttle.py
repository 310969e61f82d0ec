"""Console sign-in throttling: too many failures for one user name or from one client address
lock that name or address for a while, before any password hash is computed.

Held in the memory of one server process (not in the database): a restart forgets it, and
several server processes behind one name would each count on their own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# Failures counted within WINDOW seconds; reaching the limit locks the key.
WINDOW = 300.0
USER_LIMIT = 5
# An address may fail more often (several people behind one NAT), but it also catches one
# client trying many user names with a few passwords each.
ADDRESS_LIMIT = 20
# The first lock lasts LOCK_BASE seconds, each further one twice as long, at most LOCK_MAX.
LOCK_BASE = 30.0
LOCK_MAX = 900.0
# Keys are forgotten this long after their last failure (and their lock's end).
FORGET_AFTER = 3600.0
MAX_KEYS = 10_000


class SignInLocked(Exception):
    """Too many failed sign-ins; ``retry_after`` is in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    pending: int = 0  # attempts being checked right now (they count towards the limit)
    locked_until: float = 0.0
    locks: int = 0  # locks so far: each one lasts twice as long as the one before
    last: float = 0.0


@dataclass(frozen=True)
class Attempt:
    """One sign-in being checked: the keys it counts against."""

    keys: tuple[tuple[str, int], ...]


class SignInThrottle:
    """Counts failed sign-ins per user name and per client address (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}

    def begin(self, user: str | None, address: str | None) -> Attempt:
        """Reserve one attempt, or raise :class:`SignInLocked` (before any costly check).

        Attempts in flight count as failures until they end, so that many parallel
        requests cannot all slip in under the limit.
        """
        keys: list[tuple[str, int]] = []
        if user is not None:
            keys.append((f"user:{user}", USER_LIMIT))
        if address is not None:
            keys.append((f"address:{address}", ADDRESS_LIMIT))
        now = self._clock()
        with self._lock:
            wait = 0.0
            for key, limit in keys:
                record = self._records.get(key)
                if record is None:
                    continue
                self._expire(record, now)
                if record.locked_until > now:
                    wait = max(wait, record.locked_until - now)
                elif len(record.failures) + record.pending >= limit:
                    wait = max(wait, 1.0)  # the attempts in flight decide; ask again soon
            if wait > 0:
                raise SignInLocked(max(1, math.ceil(wait)))
            for key, _ in keys:
                self._record(key, now).pending += 1
        return Attempt(tuple(keys))

    def succeeded(self, attempt: Attempt) -> None:
        """The user name's failures and locks are forgotten. An address's are not: one valid
        account must not clear the way for guessing the passwords of others."""
        with self._lock:
            for key, _ in attempt.keys:
                record = self._records.get(key)
                if record is None:
                    continue
                record.pending = max(0, record.pending - 1)
                if key.startswith("user:"):
                    del self._records[key]

    def failed(self, attempt: Attempt) -> None:
        now = self._clock()
        with self._lock:
            for key, limit in attempt.keys:
                record = self._record(key, now)
                record.pending = max(0, record.pending - 1)
                self._expire(record, now)
                record.failures.append(now)
                record.last = now
                if len(record.failures) >= limit and record.locked_until <= now:
                    period = min(LOCK_MAX, LOCK_BASE * 2**record.locks)
                    record.locks += 1
                    record.locked_until = now + period
                    record.failures.clear()  # a new count starts when the lock ends
            self._forget_old(now)

    def abandoned(self, attempt: Attempt) -> None:
        """The attempt ended without an answer (an error): it counts neither way."""
        with self._lock:
            for key, _ in attempt.keys:
                record = self._records.get(key)
                if record is not None:
                    record.pending = max(0, record.pending - 1)

    def _record(self, key: str, now: float) -> _Record:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record(last=now)
        return record

    @staticmethod
    def _expire(record: _Record, now: float) -> None:
        record.failures = [t for t in record.failures if now - t < WINDOW]

    def _forget_old(self, now: float) -> None:
        if len(self._records) <= MAX_KEYS:
            return
        stale = [
            key
            for key, r in self._records.items()
            if r.pending == 0 and now - max(r.last, r.locked_until) > FORGET_AFTER
        ]
        self._drop(stale)
        if len(self._records) > MAX_KEYS:  # still full: the least recently failed go first
            unlocked = sorted(
                (r.last, key)
                for key, r in self._records.items()
                if r.pending == 0 and r.locked_until <= now
            )
            self._drop(key for _, key in unlocked[: len(self._records) - MAX_KEYS])

    def _drop(self, keys: Iterable[str]) -> None:
        for key in list(keys):
            self._records.pop(key, None)
