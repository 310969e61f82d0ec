"""The Source protocol: where backup data comes from and where restores write to.

A source is walked one directory at a time through directory handles, so the
engine never builds full paths (paths longer than PATH_MAX work) and never
follows a symlink. Names are raw ``bytes`` exactly as the filesystem returns
them (non-UTF-8 names and names with newlines round-trip unchanged).

The restore side (``RestoreTarget``/``TargetDir``) mirrors it: every write is
relative to an open directory handle with ``O_NOFOLLOW``, and names containing
``/``, NUL, ``.`` or ``..`` are refused, so a hostile restore point can never
make a restore write outside its target.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, Self

if TYPE_CHECKING:
    from ferryman.repository.tree import Node


class SourceError(Exception):
    """Base class of source errors; ``str()`` is a message fit for a user."""


class SourceUnavailable(SourceError):
    """The source root cannot be opened (missing, not a directory, no access)."""


class SourceLost(Exception):
    """A remote source or target became unreachable mid-task and could not be reached
    again (reconnection gave up); ``str()`` is a one-line reason fit for a user.

    Deliberately neither an ``OSError`` nor a ``SourceError``: the engine turns those
    into per-entry warnings, while this one must end the whole task as failed (the
    backup keeps its checkpoints and is retried) instead of recording every entry
    after the loss as skipped."""


class UnsafeName(SourceError):
    """A name that would escape its directory (``..``, ``/`` inside, NUL, empty)."""


def check_name(name: bytes) -> bytes:
    """Return ``name`` if it is a plain directory entry name, else raise ``UnsafeName``."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise UnsafeName(f"unsafe entry name {name!r}: refused")
    return name


class RefCounted:
    """A handle shared by queued work: ``retain`` adds a reference, the last ``release``
    calls ``_close``. Subclasses set ``_refs = 1`` and ``_lock`` in ``__init__``."""

    __slots__ = ("_lock", "_refs")

    _lock: threading.Lock
    _refs: int

    def _close(self) -> None:
        raise NotImplementedError

    def retain(self) -> Self:
        """One more reference."""
        with self._lock:
            self._refs += 1
        return self

    def release(self) -> None:
        """Drop a reference; the handle is closed at zero."""
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            self._close()


# How far past its size at open a file that grows while read is read (SourceFile.read_all).
GROWTH_LIMIT = 4 << 20


class SourceFile(Protocol):
    """An open regular file of a source."""

    def fstat(self) -> os.stat_result:
        """Stat the open file (used to detect changes while reading)."""
        ...

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        """Read into ``buf`` from ``offset``; return the number of bytes read (0 at EOF)."""
        ...

    def read_all(self, size_hint: int) -> bytes:
        """Read the whole file (small files) in as few calls as possible.

        A file that grows while read is read at most ``GROWTH_LIMIT`` bytes past
        ``size_hint`` (a fast appender would otherwise never let the read end); the
        caller sees the size change and keeps it with a warning.
        """
        ...

    def data_extents(self, size: int) -> list[tuple[int, int]]:
        """``(offset, length)`` of the regions holding data; the rest are holes."""
        ...

    def read_xattrs(self) -> dict[bytes, bytes]:
        """Extended attributes of the open file (including the POSIX ACL attributes)."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


class SourceDir(Protocol):
    """An open directory of a source; entries are addressed by name relative to it."""

    def names(self) -> list[bytes]:
        """Entry names (without ``.``/``..``), sorted bytewise."""
        ...

    def stat_self(self) -> os.stat_result:
        """Stat of the directory itself."""
        ...

    def lstat(self, name: bytes) -> os.stat_result:
        """Stat an entry without following symlinks."""
        ...

    def open_dir(self, name: bytes) -> SourceDir:
        """Open a subdirectory (never through a symlink)."""
        ...

    def open_file(self, name: bytes) -> SourceFile:
        """Open a regular file for reading (never through a symlink, never blocking)."""
        ...

    def read_link(self, name: bytes) -> bytes:
        """Target of a symlink, as raw bytes."""
        ...

    def read_xattrs(self, name: bytes) -> dict[bytes, bytes]:
        """Extended attributes of an entry (including the POSIX ACL attributes)."""
        ...

    def own_xattrs(self) -> dict[bytes, bytes]:
        """Extended attributes of this directory itself."""
        ...

    def retain(self) -> SourceDir:
        """Take one more reference (the handle closes when the last one is released)."""
        ...

    def release(self) -> None:
        """Drop one reference; the directory is closed when none is left."""
        ...


class Source(Protocol):
    """A tree that can be backed up: a local or mounted path, later SMB or S3."""

    description: str

    def open_root(self) -> SourceDir:
        """Open the root directory of the source; raises ``SourceUnavailable``."""
        ...

    def snapshot(self) -> AbstractContextManager[Source]:
        """A consistent read-only view while the context lasts (the source itself when
        no snapshot provider is available)."""
        ...


class TargetDir(Protocol):
    """An open directory of a restore target."""

    fd: int

    def lstat(self, name: bytes) -> os.stat_result | None:
        """Stat an entry without following symlinks; None if it does not exist."""
        ...

    def make_dir(self, name: bytes, mode: int) -> TargetDir:
        """Create (or reuse an existing real directory) and open it without following links."""
        ...

    def create_file(self, name: bytes, mode: int) -> int:
        """Create or truncate a regular file and return a writable fd."""
        ...

    def remove(self, name: bytes) -> None:
        """Remove an entry (a directory recursively)."""
        ...

    def close(self) -> None:
        """Close the directory handle."""
        ...


class RestoreTarget(Protocol):
    """Where a restore writes: a local or mounted path."""

    description: str

    def open_root(self) -> TargetDir:
        """Open (creating if needed) the target root directory."""
        ...


class TargetFile(Protocol):
    """A file being written by a restore into a target reached without file descriptors."""

    def write_at(self, data: bytes | memoryview, offset: int) -> int:
        """Write all of ``data`` at ``offset``; returns its length."""
        ...

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        """Read back into ``buf`` (restore verification); 0 at EOF."""
        ...

    def truncate(self, size: int) -> None:
        """Set the file's size."""
        ...

    def apply_metadata(self, node: Node, xattrs: bool) -> list[str]:
        """Set the node's metadata the target can hold; a message per problem."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


class RemoteTargetDir(Protocol):
    """A directory of a restore target reached over the network (an SMB share): the same
    walk as local targets, files written through ``TargetFile``s, no hard links."""

    created: bool

    def lstat(self, name: bytes) -> os.stat_result | None:
        """Stat an entry without following links; None if it does not exist."""
        ...

    def make_dir(self, name: bytes, mode: int) -> RemoteTargetDir:
        """Create (or reuse an existing real directory)."""
        ...

    def open_write(self, name: bytes, mode: int) -> TargetFile:
        """Create or truncate a regular file for writing."""
        ...

    def remove(self, name: bytes) -> None:
        """Remove an entry (a directory recursively)."""
        ...

    def symlink(self, name: bytes, target: bytes) -> None:
        """Create a symlink (OSError where the target has none)."""
        ...

    def mknod(self, name: bytes, mode: int, rdev: int) -> None:
        """Create a special file (OSError where the target has none)."""
        ...

    def apply_path_metadata(self, parts: list[bytes], node: Node, xattrs: bool) -> list[str]:
        """Set a directory's metadata (the directory at ``parts`` below this one)."""
        ...

    def retain(self) -> RemoteTargetDir:
        """One more reference."""
        ...

    def release(self) -> None:
        """Drop a reference."""
        ...


class RemoteRestoreTarget(Protocol):
    """Where a restore writes when it is not a local path."""

    description: str

    def open_root(self) -> RemoteTargetDir:
        """Open (creating if needed) the target root directory."""
        ...
