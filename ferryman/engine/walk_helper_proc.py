"""The walk helper process (see ``walk_helper``): run as a script (``python -P``), it
imports only the standard library and msgpack, to start fast.

``argv[1]`` is the inherited descriptor of the source root; the setup (msgpack map:
``db`` the listing cache's path, ``st`` the root's previous tree blob ids, ``one_fs``,
``dev``, ``exc``/``inc`` the masks' regular expressions) comes on standard input;
verdicts go to standard output as length-prefixed msgpack messages, each a list of
``[path, tree blob ids, verdicts below it replaced, dirs, files, bytes, unchanged
files]`` in post-order; a nil message ends a complete walk. A directory whose
subtree is not unchanged gets, at the same place, a *flat verdict* ``[path, tree blob
ids, names, the directory's own (dev, ino, mtime, ctime) before it was listed]``: its
non-directory entries found unchanged (the same key; a regular file with one link),
which the scanner then takes without ``lstat`` of its own if its stat of the
directory once listed still gives that key (no entry added, removed or replaced since).
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import sys
import time
import zlib
from typing import Any

import msgpack

# the compact listings' stored form (``listing_cache.CompactListing``, which decodes
# with ``unpack_listing`` too: the helper imports no package module)
LISTING_VERSION = 1
# Fault injection for tests: the helper dies (mid-message) after this many verdicts;
# "garbage": its first message is not msgpack (and it walks on).
CRASH_AFTER_ENV = "FERRYMAN_WALK_HELPER_CRASH_AFTER"
_FLUSH_VERDICTS = 32  # verdicts per message at most
_FLUSH_SECONDS = 0.002  # ... and a message at least this often while verdicts wait
_QUERY_IDS = 500
_READ_AHEAD = 8192
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


class _Frame:
    __slots__ = ("below", "children", "counts", "fd", "key", "ok", "okn", "rel", "subtrees")

    def __init__(self, fd: int, rel: bytes, subtrees: tuple[bytes, ...]) -> None:
        self.fd = fd
        self.rel = rel
        self.subtrees = subtrees
        self.ok = True
        self.children: list[tuple[bytes, Any, bool]] = []  # visited from the end
        self.counts = [1, 0, 0, 0]  # dirs, files (non-dirs), bytes, unchanged files
        self.below = 0  # verdicts inside this subtree the scanner holds (not replaced)
        self.okn: list[bytes] = []  # its unchanged non-directory entries (flat verdict)
        self.key: list[int] = []  # its own (dev, ino, mtime, ctime) before it was listed


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
        crash = os.environ.get(CRASH_AFTER_ENV, "")
        self.garbage = crash == "garbage"
        self.crash_after = int(crash) if crash.isdigit() else -1

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
            st = os.fstat(fd)
            f.key = [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
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
        okn = f.okn
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
                else:
                    okn.append(name)
            elif key != (0, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode, st.st_rdev):
                ok = False
            else:
                okn.append(name)
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
            if not f.ok and f.okn:
                self.flat(f)
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
        if self.garbage:
            _write(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # 0xc1: never used by msgpack
            self.garbage = False
        if self.sent == self.crash_after:
            body = msgpack.packb(self.out, use_bin_type=True)
            _write(len(body).to_bytes(4, "big") + body[: len(body) // 2])
            os._exit(70)
        now = time.monotonic()
        if len(self.out) >= _FLUSH_VERDICTS or now - self.last_flush >= _FLUSH_SECONDS:
            self.flush(now)

    def flat(self, f: _Frame) -> None:
        """A flat verdict: the unchanged non-directory entries of a changed directory."""
        self.out.append([f.rel, f.subtrees, f.okn, f.key])
        f.okn = []
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


if __name__ == "__main__":
    main()
