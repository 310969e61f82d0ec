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

The helper is started with ``subprocess`` (``fork`` + ``exec`` in C, no Python
code runs between them: safe from a threaded server, like the saver processes'
``spawn``) and imports only this module (the standard library and msgpack); it
gets the source root as an inherited descriptor (the very directory the scanner
opened), reads ``listings.sqlite`` (never writes it) and sends verdicts on its
standard output, length-prefixed msgpack.
"""

from __future__ import annotations

import logging
import os
import re
import select
import sqlite3
import stat
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from ferryman.engine.selection import PathFilter
    from ferryman.sources.local import LocalDir

log = logging.getLogger(__name__)

LISTING_VERSION = 1  # the compact listings' stored form (``listing_cache``)
# Below this many entries in the previous walk the share is walked in one process
# (starting the helper costs ~50 ms of CPU, about 15,000 entries of walking).
SPLIT_MIN_ENTRIES = 20_000
# Fault injection for tests: the helper dies (mid-message) after this many verdicts.
CRASH_AFTER_ENV = "FERRYMAN_WALK_HELPER_CRASH_AFTER"
_FLUSH_VERDICTS = 32  # verdicts per message at most
_FLUSH_SECONDS = 0.002  # ... and a message at least this often while verdicts wait
_QUERY_IDS = 500
_READ_AHEAD = 8192
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHILD = "from ferryman.engine.walk_helper import main; main()"


def unpack_listing(data: bytes) -> tuple[Any, Any, Any, Any] | None:
    """The four columns (names, keys, dirs, approx) of a stored compact listing, or
    None when it is damaged or of another version (see ``listing_cache``)."""
    body = data[4:]
    if len(data) < 4 or zlib.crc32(body) != int.from_bytes(data[:4], "big"):
        return None
    try:
        doc: Any = msgpack.unpackb(body, use_list=False, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not (isinstance(doc, tuple) and len(doc) == 5 and doc[0] == LISTING_VERSION):
        return None
    _, names, keys, dirs, approx = doc
    if not all(isinstance(c, tuple) for c in (names, keys, dirs, approx)):
        return None
    if not len(names) == len(keys) == len(dirs) == len(approx):
        return None
    return names, keys, dirs, approx


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
        # the directories the scanner is walking (entered, not left): a verdict on one
        # of them comes too late and must not replace those below it, still of use
        self.inside: set[bytes] = set()
        self._open = True  # reading; False at the end of its output
        self._done = False  # it said it walked everything
        self.used = 0  # verdicts taken
        self.entries = 0  # entries of the subtrees taken

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
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(root.fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(root.fd,),
                env=env,
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
            self._parse()

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
            for rel, subtrees, below, dirs, files, nbytes, unchanged in rows:
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
        v = self._verdicts.get(rel)
        if v is None or v.subtrees != tuple(prev.get("st", ())):
            return None
        self.used += 1
        self.entries += v.dirs + v.files
        return v

    def close(self) -> None:
        """Stop the helper (it may still be walking: the scanner is done) and reap it."""
        failed: str | None = None
        if not self._done and not self._open:  # its output ended early: it is exiting
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
        if failed is not None:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            log.warning(
                "walk helper process failed (%s%s): its part was walked in this process",
                failed,
                f", {last[0]}" if last[0] else "",
            )
        log.info("walk helper: %d subtrees (%d entries) reused", self.used, self.entries)


# -- the helper process -----------------------------------------------------------------


class _Frame:
    __slots__ = ("below", "children", "counts", "fd", "ok", "rel", "subtrees")

    def __init__(self, fd: int, rel: bytes, subtrees: tuple[bytes, ...]) -> None:
        self.fd = fd
        self.rel = rel
        self.subtrees = subtrees
        self.ok = True
        self.children: list[tuple[bytes, Any, bool]] = []  # visited from the end
        self.counts = [1, 0, 0, 0]  # dirs, files (non-dirs), bytes, unchanged files
        self.below = 0  # verdicts inside this subtree the scanner holds (not replaced)


class _Helper:
    def __init__(self, setup: dict[str, Any]) -> None:
        self.conn = sqlite3.connect(f"file:{setup['db']}?mode=ro", uri=True, timeout=5)
        self.one_fs = bool(setup["one_fs"])
        self.dev = int(setup["dev"])
        exc_name, exc_path = setup["exc"]
        self.exc_name = re.compile(exc_name, re.S) if exc_name is not None else None
        self.exc_path = re.compile(exc_path, re.S) if exc_path is not None else None
        inc = setup["inc"]
        self.has_include = inc is not None
        self.inc_name = re.compile(inc[0], re.S) if inc and inc[0] is not None else None
        self.inc_path = re.compile(inc[1], re.S) if inc and inc[1] is not None else None
        self.ahead: dict[bytes, bytes] = {}
        self.out: list[list[Any]] = []
        self.sent = 0
        self.last_flush = time.monotonic()
        crash = os.environ.get(CRASH_AFTER_ENV)
        self.crash_after = int(crash) if crash else -1

    # listings

    def read_ahead(self, ids: list[bytes]) -> None:
        if len(self.ahead) + len(ids) > _READ_AHEAD:
            self.ahead.clear()
        for k in range(0, len(ids), _QUERY_IDS):
            part = ids[k : k + _QUERY_IDS]
            marks = ",".join("?" * len(part))
            query = f"SELECT id, CAST(data AS BLOB) FROM listings WHERE id IN ({marks})"
            self.ahead.update(self.conn.execute(query, part).fetchall())

    def listing(self, subtrees: tuple[bytes, ...]) -> tuple[list[Any], list[Any], list[Any]] | None:
        """The previous names, keys and directory records of a directory (its tree
        blobs' cached listings in order); None when one is not cached or damaged."""
        names: list[Any] = []
        keys: list[Any] = []
        dirs: list[Any] = []
        for blob_id in subtrees:
            data = self.ahead.pop(blob_id, None)
            if data is None:
                row = self.conn.execute(
                    "SELECT CAST(data AS BLOB) FROM listings WHERE id = ?", (blob_id,)
                ).fetchone()
                if row is None:
                    return None
                data = row[0]
            cols = unpack_listing(data)
            if cols is None:
                return None
            names.extend(cols[0])
            keys.extend(cols[1])
            dirs.extend(cols[2])
        return names, keys, dirs

    # the walk

    def excluded(self, name: bytes, rel: bytes) -> bool:
        if self.exc_name is not None and self.exc_name.match(name):
            return True
        return self.exc_path is not None and self.exc_path.match(rel) is not None

    def included(self, name: bytes, rel: bytes) -> bool:
        if self.inc_name is not None and self.inc_name.match(name):
            return True
        return self.inc_path is not None and self.inc_path.match(rel) is not None

    def enter(self, fd: int, rel: bytes, subtrees: tuple[bytes, ...]) -> _Frame:
        """List and compare one directory (opened as ``fd``, owned by the frame)."""
        f = _Frame(fd, rel, subtrees)
        prev = self.listing(subtrees)
        try:
            names = os.listdir(f"/proc/self/fd/{fd}".encode())
        except OSError:
            prev = None
        if prev is None:
            f.ok = False
            return f
        names.sort()
        pnames, pkeys, pdirs = prev
        self.read_ahead([i for d in pdirs if d is not None for i in d.get("st", ())])
        filtering = self.exc_name is not None or self.exc_path is not None or self.has_include
        prefix = rel + b"/" if rel else b""
        counts = f.counts
        ok = True
        j = 0
        n = len(pnames)
        for name in names:
            if filtering and self.excluded(name, prefix + name):
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                ok = False
                continue
            mode = st.st_mode
            is_dir = stat.S_ISDIR(mode)
            if not is_dir and self.has_include and not self.included(name, prefix + name):
                continue
            while j < n and pnames[j] < name:
                ok = False  # deleted since
                j += 1
            if j >= n or pnames[j] != name:
                ok = False  # new
                continue
            key = pkeys[j]
            rec = pdirs[j]
            j += 1
            if is_dir:
                if rec is None or (self.one_fs and st.st_dev != self.dev):
                    ok = False
                    continue
                same = key == (0, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode, st.st_rdev)
                f.children.append((name, rec, same))
                continue
            counts[1] += 1
            if stat.S_ISREG(mode):
                size = st.st_size
                counts[2] += size
                counts[3] += 1
                if st.st_nlink != 1 or key != (
                    size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                    mode,
                    st.st_rdev,
                ):
                    ok = False
            elif key != (0, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode, st.st_rdev):
                ok = False
        f.ok = ok and j == n
        return f

    def walk(self, root_fd: int, root_subtrees: tuple[bytes, ...]) -> None:
        stack = [self.enter(os.dup(root_fd), b"", root_subtrees)]
        while stack:
            f = stack[-1]
            if f.children:
                name, rec, same = f.children.pop()
                rel = f.rel + b"/" + name if f.rel else name
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=f.fd)
                except OSError:
                    f.ok = False
                    continue
                child = self.enter(fd, rel, tuple(rec.get("st", ())))
                child.ok = child.ok and same
                stack.append(child)
                continue
            stack.pop()
            os.close(f.fd)
            if not stack:
                break
            parent = stack[-1]
            if not f.ok:
                parent.ok = False
                parent.below += f.below  # its verdicts stay
                continue
            pc, c = parent.counts, f.counts
            pc[0] += c[0]
            pc[1] += c[1]
            pc[2] += c[2]
            pc[3] += c[3]
            self.verdict(f)
            parent.below += 1  # in place of those below it

    def verdict(self, f: _Frame) -> None:
        self.out.append([f.rel, f.subtrees, f.below, *f.counts])
        self.sent += 1
        if self.sent == self.crash_after:
            body = msgpack.packb(self.out, use_bin_type=True)
            _write(len(body).to_bytes(4, "big") + body[: len(body) // 2])
            os._exit(70)
        now = time.monotonic()
        if len(self.out) >= _FLUSH_VERDICTS or now - self.last_flush >= _FLUSH_SECONDS:
            self.flush(now)

    def flush(self, now: float) -> None:
        if self.out:
            body = msgpack.packb(self.out, use_bin_type=True)
            _write(len(body).to_bytes(4, "big") + body)
            self.out = []
        self.last_flush = now


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def main() -> None:
    """The helper process: ``argv[1]`` is the inherited root descriptor, the setup
    (msgpack) comes on standard input; verdicts go to standard output."""
    root_fd = int(sys.argv[1])
    setup: Any = msgpack.unpackb(sys.stdin.buffer.read(), raw=False)
    helper = _Helper(setup)
    try:
        helper.walk(root_fd, tuple(setup["st"]))
        helper.flush(time.monotonic())
        done = msgpack.packb(None)
        _write(len(done).to_bytes(4, "big") + done)
    except BrokenPipeError:  # the scanner is done and closed its end
        os._exit(0)
