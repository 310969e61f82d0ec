"""A second process for the walk: it checks subtrees against the previous restore point.

An unchanged re-run is a metadata walk (``lstat`` of every entry and a comparison
with the previous tree's compact listings) on one thread; threads do not make
``lstat`` faster, processes do (``PERF-NOTES``: 3.1 µs/entry in one thread, 1.7 µs
with two processes). For a share whose previous walk saw at least
``SPLIT_MIN_ENTRIES`` entries, the scanner starts one helper process that walks
the same tree from the other end (children in reverse name order) while the
scanner walks it in order. For every directory whose whole subtree it finds
unchanged -- the directory's own stat, the same names as its previous tree
blobs, every regular file with one link and the same stat key, every other
entry the same key, every subdirectory again unchanged -- the helper sends a
*verdict*: the path, the previous tree blob ids it compared with, and the
subtree's counts. When the scanner reaches a subdirectory that it would reuse
(same stat, same previous record) and holds a verdict for it with the same tree
blob ids, it reuses the previous record at once, without opening or listing it.
This is the record the in-process walk would have reused, so the tree ids are
the same; everything the helper did not find unchanged (a change, an error, a
hard link, a tree blob whose listing is not cached, a mount point with
one-file-system) is walked by the scanner as before, with its warnings.

The scanner never waits for the helper: it reads verdicts without blocking, and
they meet in the middle. A helper that fails, dies or is slow only costs the
work it did not do; when the walk ends the helper is killed. Verdicts are sent
in post-order, so a directory's verdict follows those of its subdirectories,
which it then replaces (memory holds the largest unchanged subtrees only).

A changed subtree still has unchanged directories and files (the daily change
touches ~1% of the files, spread everywhere, so few subtrees are unchanged). For
each directory whose subtree is not unchanged the helper sends a *flat verdict*:
the path, the previous tree blob ids it compared with, and the names of its
non-directory entries it found unchanged (same key; a regular file with one
link), with the directory's own (dev, ino, mtime, ctime) taken before it listed
it. When the scanner enters that directory with the same previous tree blobs and
its own stat of the directory once it has listed it gives the same key (the same
directory, no entry added, removed or replaced since the helper's look) it takes those entries as
unchanged without an ``lstat`` of its own (each ``lstat`` drops the GIL and waits
to take it back from the tree saver and the readers: the scanner's largest cost on
that run); subdirectories and every other entry are checked by the scanner as before.

The helper is started with ``subprocess`` (``fork`` + ``exec`` in C, no Python
code runs between them: safe from a threaded server, like the saver processes'
``spawn``) and runs ``walk_helper_proc`` as a script, which imports only the
standard library and msgpack (ready in ~30 ms, not ~80). It gets the source
root as an inherited descriptor (the very directory the scanner opened), reads
``listings.sqlite`` (never writes it) and sends verdicts on its standard output,
length-prefixed msgpack.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from ferryman.engine import walk_helper_proc

if TYPE_CHECKING:
    from ferryman.engine.selection import PathFilter
    from ferryman.sources.local import LocalDir

log = logging.getLogger(__name__)

# Below this many entries in the previous walk the share is walked in one process
# (starting the helper costs ~50 ms of CPU, about 15,000 entries of walking).
SPLIT_MIN_ENTRIES = 20_000
CRASH_AFTER_ENV = walk_helper_proc.CRASH_AFTER_ENV
_MAX_MESSAGE = 16 << 20  # its messages hold at most a few dozen verdicts
# names held in flat verdicts not taken yet, at most (~100 bytes each); beyond it
# they are dropped (the scanner then checks those entries itself)
FLAT_MAX_NAMES = 1_000_000
_CHILD = str(Path(walk_helper_proc.__file__).resolve())


# -- the scanner's side ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """A subtree the helper found unchanged: reuse ``subtrees``; its counts."""

    subtrees: tuple[bytes, ...]
    dirs: int
    files: int
    bytes: int
    unchanged: int


class WalkHelper:
    """The scanner's handle on the helper process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._buf = bytearray()
        # in the helper's order; None: a directory left out (see ``_parse``)
        self._verdicts: dict[bytes, Verdict | None] = {}
        # flat verdicts: path -> (previous tree blob ids, unchanged non-directory names,
        # the directory's (dev, ino, mtime, ctime) when the helper listed it)
        self._flat: dict[bytes, tuple[tuple[bytes, ...], frozenset[bytes], tuple[int, ...]]] = {}
        self._flat_names = 0  # names held in ``_flat``
        # the directories the scanner is walking (entered, not left): a verdict on one
        # of them comes too late and must not replace those below it, still of use
        self.inside: set[bytes] = set()
        self._open = True  # reading; False at the end of its output
        self._done = False  # it said it walked everything
        self._bad: str | None = None  # why its output was not read to the end
        self.used = 0  # verdicts taken
        self.entries = 0  # entries of the subtrees taken
        self.flat_used = 0  # flat verdicts taken

    @classmethod
    def start(
        cls,
        root: LocalDir,
        root_subtrees: list[bytes],
        listings: Path,
        *,
        one_file_system: bool,
        root_dev: int,
        path_filter: PathFilter,
    ) -> WalkHelper | None:
        """Start the helper on ``root`` (previous tree blobs ``root_subtrees``); None
        (logged) when it cannot be started: the scanner then walks alone."""
        exc_name, exc_path, inc_name, inc_path = path_filter.regexes()
        setup = {
            "db": str(listings),
            "st": list(root_subtrees),
            "one_fs": one_file_system,
            "dev": root_dev,
            "exc": [exc_name, exc_path],
            "inc": [inc_name, inc_path] if path_filter.has_include else None,
        }
        try:
            proc = subprocess.Popen(
                # a script, -P: not its directory on sys.path; no package import
                [sys.executable, "-P", _CHILD, str(root.fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(root.fd,),
            )
        except OSError as exc:
            log.warning("walk helper process not started (%s): one process walks", exc)
            return None
        assert proc.stdin is not None
        try:
            proc.stdin.write(msgpack.packb(setup, use_bin_type=True))
            proc.stdin.close()
        except OSError as exc:  # it died at once
            log.warning("walk helper process failed at start (%s): one process walks", exc)
            proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr, proc.stdin):
                with contextlib.suppress(OSError):  # stdin: its flush fails again
                    if pipe is not None:
                        pipe.close()
            return None
        return cls(proc)

    def drain(self) -> None:
        """Take the verdicts sent so far (never waits)."""
        while self._open:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._open = False
                break
            self._buf += data
            try:
                self._parse()
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # what was taken before stays valid; the rest is left to the scanner
                self._bad = f"unreadable output: {exc!r}"[:200]
                self._open = False
                self._proc.kill()

    def wait(self, timeout: float) -> bool:
        """Take verdicts until the helper walked everything or ended; whether it walked
        everything (for tests and benchmarks: the scanner itself never waits)."""
        end = time.monotonic() + timeout
        while self._open and not self._done:
            left = end - time.monotonic()
            if left <= 0:
                break
            select.select([self._fd], [], [], left)
            self.drain()
        return self._done

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if size > _MAX_MESSAGE:
                raise ValueError(f"message of {size} bytes")
            if len(buf) - pos - 4 < size:
                break
            body = bytes(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
            rows: Any = msgpack.unpackb(body, use_list=False, raw=False)
            if rows is None:
                self._done = True
                continue
            verdicts = self._verdicts
            inside = self.inside
            for row in rows:
                if len(row) == 4:  # a flat verdict
                    rel, subtrees, names, dkey = row
                    held = self._flat_names + len(names)
                    if rel not in inside and held <= FLAT_MAX_NAMES:  # else too late / full
                        self._flat[rel] = (tuple(subtrees), frozenset(names), tuple(dkey))
                        self._flat_names = held
                    continue
                rel, subtrees, below, dirs, files, nbytes, unchanged = row
                if rel in inside:  # those below it stay; the helper counts it as one
                    if not below:
                        verdicts[rel] = None
                    continue
                # its subdirectories' verdicts came right before it: it replaces them
                # (fewer when one was left out above, never more: at most its own)
                for _ in range(min(below, len(verdicts))):
                    verdicts.popitem()
                verdicts[rel] = Verdict(tuple(subtrees), dirs, files, nbytes, unchanged)
        del buf[:pos]

    def take(self, rel: bytes, prev: Any) -> Verdict | None:
        """The verdict on directory ``rel`` when the helper compared it with the
        previous record ``prev``'s tree blobs and found the subtree unchanged."""
        self.drain()
        v = self._held(rel, prev)
        if v is None:
            return None
        self.used += 1
        self.entries += v.dirs + v.files
        return v

    def holds(self, rel: bytes, prev: Any) -> bool:
        """Whether a verdict on ``rel`` for the previous record ``prev``'s tree blobs is
        held now (without reading the pipe): ``take`` would then return it."""
        return self._held(rel, prev) is not None

    def _held(self, rel: bytes, prev: Any) -> Verdict | None:
        v = self._verdicts.get(rel)
        return v if v is not None and v.subtrees == tuple(prev.get("st", ())) else None

    def take_flat(
        self, rel: bytes, subtrees: list[bytes], stat_self: Callable[[], os.stat_result]
    ) -> frozenset[bytes] | None:
        """The non-directory entries of directory ``rel`` that the helper found
        unchanged against the previous tree blobs ``subtrees`` (None: no such verdict,
        or the directory's stat, ``stat_self()`` once the scanner has listed it, is not
        that of the helper's look: another directory, or an entry added, removed or
        replaced since)."""
        self.drain()
        v = self._flat.pop(rel, None)
        if v is None:
            return None
        self._flat_names -= len(v[1])
        if v[0] != tuple(subtrees):
            return None
        try:
            st = stat_self()
        except OSError:
            return None
        if v[2] != (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns):
            return None
        self.flat_used += 1
        return v[1]

    def close(self) -> None:
        """Stop the helper (it may still be walking: the scanner is done) and reap it."""
        failed = self._bad
        if failed is None and not self._done and not self._open:  # ended early: exiting
            try:
                failed = f"exit {self._proc.wait(5)}"
            except subprocess.TimeoutExpired:
                failed = "output closed"
        if self._proc.poll() is None:
            self._proc.kill()  # still walking what the scanner already did
        self._proc.wait()
        err = b""
        if self._proc.stderr is not None:
            if failed is not None:
                err = self._proc.stderr.read()[-2000:]
            self._proc.stderr.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._verdicts.clear()
        self._flat.clear()
        if failed is not None:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            log.warning(
                "walk helper process failed (%s%s): its part was walked in this process",
                failed,
                f", {last[0]}" if last[0] else "",
            )
        log.info(
            "walk helper: %d subtrees (%d entries) reused, %d flat verdicts taken",
            self.used,
            self.entries,
            self.flat_used,
        )
