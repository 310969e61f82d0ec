"""The snapshot provider seam and the liveness locks that tell leftovers from live snapshots.

A provider makes a consistent read-only copy of a share appear at some path for
the duration of one backup task, then removes it. Every snapshot a task creates
is paired with a lock file held (``flock``) by the task's process while the
snapshot is in use: the kernel drops the lock when the process dies, even on
``kill -9``, so a snapshot whose lock can be taken is a leftover of an
interrupted run and is removed at the start of the next task for the share,
while a snapshot still used by a concurrent task of the same share (partitions)
is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from dataclasses import dataclass, field
from typing import Protocol

from ferryman.sources.base import SourceError

PREFIX = "ferryman"


class SnapshotError(SourceError):
    """A snapshot could not be created, found or removed; ``str()`` is fit for a user."""


@dataclass(frozen=True, slots=True)
class SnapshotScope:
    """Who asks for a snapshot: the share (leftovers are per share) and the task (names)."""

    share_id: int
    task_id: int
    state_dir: str  # private folder of this proxy for lock files and records

    def name(self) -> str:
        """A recognisable snapshot name: Ferryman prefix, share id and task id."""
        return f"{PREFIX}-s{self.share_id}-t{self.task_id}"

    def pattern(self) -> re.Pattern[str]:
        """Names of this share's snapshots (any task)."""
        return re.compile(rf"^{PREFIX}-s{self.share_id}-t\d+$")


@dataclass
class Leftovers:
    """What the leftover sweep did: snapshots removed, and the ones it could not remove
    (each with the reason; the next task of the share tries them again)."""

    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Snapshot(Protocol):
    """One snapshot in use: where to read it, and how to remove it."""

    path: str
    description: str

    def remove(self) -> None:
        """Delete the snapshot (no-op for snapshots the provider did not create)."""
        ...


class SnapshotProvider(Protocol):
    """Makes snapshots of one share."""

    name: str

    def remove_leftovers(self, scope: SnapshotScope) -> Leftovers:
        """Remove snapshots of this share left by interrupted runs (a failure to remove one
        is reported, not raised: it must not stop today's backup)."""
        ...

    def create(self, scope: SnapshotScope) -> Snapshot:
        """Create (or pick) the snapshot to read for this task."""
        ...


class LiveLock:
    """An exclusive ``flock`` on a file: held while a snapshot is in use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self, unlink: bool = True) -> None:
        """Drop the lock (and remove the lock file)."""
        if self._fd is None:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def excerpt(text: str | bytes, limit: int = 300) -> str:
    """The last ``limit`` characters of a command's output, on one line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "…" + flat[-limit:]
