"""Reading one small file whole: the rules shared by saver threads and saver processes.

A small file is read with one call, then ``fstat`` through the same descriptor:
if its size, mtime, ctime or inode changed since the scan's ``lstat`` it is read
once more, and kept as read the second time with a warning. Errors become short
reasons (``describe_os_error``) shown next to the path; they never raise.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple

from ferryman.engine.io_governor import ReadMeter
from ferryman.engine.ports import Chunker
from ferryman.sources.base import SourceDir, SourceFile

Tally = dict[str, float]
ReadGate = Callable[[int], AbstractContextManager[ReadMeter]]

CHANGED_WARNING = "changed while being read (stored as read on the second attempt)"


def count(tally: Tally, **deltas: float) -> None:
    """Add ``deltas`` to a per-batch tally (merged into the stats once per batch)."""
    for key, value in deltas.items():
        tally[key] = tally.get(key, 0) + value


class ScanStat(NamedTuple):
    """The fields of a scan's ``lstat`` that reading a small file compares (a saver
    process gets these four numbers, not the ``os.stat_result``: pickling one costs
    ~4 µs of the sending process's GIL, the tuple ~0.3 µs)."""

    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_ino: int


def changed(before: os.stat_result | ScanStat, after: os.stat_result) -> bool:
    """Whether a file is no longer the one ``before`` described."""
    return (
        before.st_size != after.st_size
        or before.st_mtime_ns != after.st_mtime_ns
        or before.st_ctime_ns != after.st_ctime_ns
        or before.st_ino != after.st_ino
    )


def describe_os_error(exc: OSError) -> str:
    """A short reason for a warning ("permission denied", "vanished"...)."""
    if exc.errno == errno.ENOENT:
        return "vanished before it could be read"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "replaced by a symlink while being read"
    return exc.strerror or str(exc)


def xattrs_of(f: SourceFile) -> dict[bytes, bytes]:
    """xattrs through the open file; an error is not fatal for the content."""
    try:
        return f.read_xattrs()
    except OSError:
        return {}


@dataclass(slots=True)
class SmallRead:
    """A small file read whole (``data``), or why it could not be (``error``)."""

    data: bytes = b""
    xattrs: dict[bytes, bytes] | None = None
    changed: bool = False
    error: str | None = None


_UNGATED = nullcontext(ReadMeter(0))  # shared: nothing reads an ungated read's meter


def ungated(nbytes: int) -> AbstractContextManager[ReadMeter]:
    """The gate of a read outside adaptive I/O: none (one shared context, not two
    objects made per read)."""
    return _UNGATED


def read_small_file(
    dir: SourceDir,
    name: bytes,
    st: os.stat_result | ScanStat,
    tally: Tally,
    *,
    read_xattrs: bool,
    gate: ReadGate = ungated,
) -> SmallRead:
    """Read one small file whole (once more if it changed while read).

    ``st`` is the scan's ``lstat``; ``gate`` wraps every read (the I/O governor).
    Counts ``seconds_source_read``, ``files_read`` and ``bytes_read`` in ``tally``.
    """
    for attempt in (1, 2):
        t0 = time.perf_counter()
        with gate(st.st_size) as meter:
            try:
                f = dir.open_file(name)
            except OSError as exc:
                return SmallRead(error=describe_os_error(exc))
            xattrs: dict[bytes, bytes] | None = None
            try:
                data = f.read_all(st.st_size)
                meter.nbytes = len(data)
                after = f.fstat()
                if read_xattrs:
                    xattrs = xattrs_of(f)
            except OSError as exc:
                return SmallRead(error=describe_os_error(exc))
            finally:
                f.close()
        t1 = time.perf_counter()
        count(tally, seconds_source_read=t1 - t0, files_read=1, bytes_read=len(data))
        # one fstat after reading: any change since the scan's lstat shows in it
        is_changed = changed(st, after) or len(data) != after.st_size
        if not is_changed or attempt == 2:
            break
        st = after
    return SmallRead(data=data, xattrs=xattrs, changed=is_changed)


def cut_pieces(chunker: Chunker, data: bytes | memoryview) -> list[bytes | memoryview]:
    """``data`` cut into chunks (one piece, no cut, when not above the minimum size)."""
    if len(data) <= chunker.min_size:
        return [data] if data else []
    return [c.data for c in chunker.cut_buf(data)]
