"""Writing restored entries: file contents (holes kept, verified) and metadata.

Everything here works on file descriptors or on names relative to an open
directory fd; names were checked by the caller (``check_name``) and every open
uses ``O_NOFOLLOW``, so nothing can be redirected outside the target.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from ferryman.engine.nodes import Node
from ferryman.engine.ports import RepositoryPort
from ferryman.sources.metadata import (
    ACL_ACCESS,
    ACL_DEFAULT,
    gid_for,
    local_xattrs,
    uid_for,
    write_xattrs,
)

_WRITE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class FileSpec(NamedTuple):
    """A file's node cut down to what ``write_local_file`` reads, sent to the worker
    processes: pickled as a plain tuple, ~5 times cheaper to pickle and unpickle than
    a ``Node`` and its 24 fields (~7 us a file, half of it on the walk's GIL)."""

    mode: int
    size: int
    nlink: int
    content: list[bytes]
    holes: list[tuple[int, int]]
    uid: int
    gid: int
    user: str
    group: str
    xattrs: dict[bytes, bytes]
    acl_access: bytes
    acl_default: bytes
    atime_ns: int
    mtime_ns: int

    @classmethod
    def of(cls, n: Node) -> FileSpec:
        """The spec of a file node."""
        return cls(
            n.mode, n.size, n.nlink, n.content, n.holes, n.uid, n.gid, n.user, n.group,
            n.xattrs, n.acl_access, n.acl_default, n.atime_ns, n.mtime_ns,
        )  # fmt: skip


# what writing a file's content and metadata reads: a ``Node``, or the ``FileSpec`` a
# worker process receives (both have the same fields of those names)
FileNode = Node | FileSpec


class VerifyFailed(OSError):
    """The restored file did not take the stored content (short write, wrong size)."""


def describe_restore_error(exc: OSError) -> str:
    """Short reason for a per-file restore error."""
    if exc.errno == errno.ENOSPC:
        return "disk full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "refused: a symlink is in the way"
    return exc.strerror or str(exc)


def data_regions(size: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(offset, length)`` of the regions holding data: ``[0, size)`` minus the holes."""
    regions: list[tuple[int, int]] = []
    pos = 0
    for off, length in sorted(holes):
        if off > pos:
            regions.append((pos, off - pos))
        pos = max(pos, off + length)
    if pos < size:
        regions.append((pos, size - pos))
    return regions


def _place(regions: list[tuple[int, int]], stream_len: int) -> list[tuple[int, int, int]]:
    """Map a stream of ``stream_len`` bytes onto regions: ``(file_off, stream_off, len)``."""
    out: list[tuple[int, int, int]] = []
    spos = 0
    for off, length in regions:
        if spos >= stream_len:
            break
        n = min(length, stream_len - spos)
        out.append((off, spos, n))
        spos += n
    if spos < stream_len:  # more data than regions (inconsistent node): append at the end
        last = regions[-1][0] + regions[-1][1] if regions else 0
        out.append((last, spos, stream_len - spos))
    return out


FETCH_WINDOW = 4  # chunks of a large file fetched together (pack by pack)


def fetch_chunks(repo: RepositoryPort, ids: list[bytes]) -> dict[bytes, bytes]:
    """Fetch chunks pack by pack (neighbouring records in one range read), verified."""
    return dict(repo.get_blobs(ids))


def _chunks(
    repo: RepositoryPort, content: list[bytes], prefetched: dict[bytes, bytes] | None
) -> Iterator[tuple[bytes, bytes]]:
    """``(id, data)`` in file order; fetches windows of chunks when not prefetched."""
    for start in range(0, len(content), FETCH_WINDOW):
        window = content[start : start + FETCH_WINDOW]
        got = prefetched if prefetched is not None else fetch_chunks(repo, window)
        for blob_id in window:
            yield blob_id, got[blob_id]
        del got  # not held while the next window is fetched: one window in memory, not two


class FdFile:
    """A ``TargetFile`` over a local file descriptor (the descriptor stays the caller's)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write_at(self, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(self.fd, data, offset)

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        return os.preadv(self.fd, [buf], offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)


class _Output(Protocol):
    def write_at(self, data: bytes | memoryview, offset: int) -> int: ...

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int: ...

    def truncate(self, size: int) -> None: ...


def write_content(
    repo: RepositoryPort,
    fd: int | _Output,
    node: FileNode,
    verify: bool,
    truncate: bool = True,
    prefetched: dict[bytes, bytes] | None = None,
) -> int:
    """Write a file's chunks (skipping holes) into ``fd`` (a local descriptor or a
    ``TargetFile``); returns bytes written.

    Chunks come from ``prefetched`` (a batch fetched together) or are fetched in
    windows of ``FETCH_WINDOW``. Every chunk handed to a write is plaintext the
    repository authenticated (AES-GCM) and whose keyed BLAKE3 it compared with the
    chunk id, so the bytes written are the stored content. With ``verify``, the
    write itself is checked too: every write must take all its bytes (a short write
    is retried at the next offset, a zero-byte one fails) and, on a local
    descriptor, the file's size after the last write must be the expected size.
    The file is not read back (that doubled the I/O and the hashing).
    """
    out: _Output = FdFile(fd) if isinstance(fd, int) else fd
    if truncate:
        out.truncate(0)
    regions = data_regions(node.size, node.holes)
    ri, roff = 0, 0  # current region and offset inside it
    written = 0
    for _blob_id, data in _chunks(repo, node.content, prefetched):
        view = memoryview(data)
        while view:
            if ri >= len(regions):
                foff = (regions[-1][0] + regions[-1][1] if regions else 0) + roff
                n = len(view)
            else:
                off, length = regions[ri]
                foff, n = off + roff, min(len(view), length - roff)
            done = out.write_at(view[:n], foff)
            if done <= 0:
                raise VerifyFailed(errno.EIO, "restored file takes no more bytes")
            view = view[done:]
            written += done
            roff += done
            if ri < len(regions) and roff >= regions[ri][1]:
                ri, roff = ri + 1, 0
    end = max(node.size, _end_of(regions, written))  # = expected_size(node, written)
    if end != written or node.holes:
        out.truncate(end)  # trailing hole, or a node inconsistent with its data
    if verify and isinstance(fd, int):
        check_size(os.fstat(fd), end)
    return written


def expected_size(node: FileNode, written: int) -> int:
    """The size a file must have once ``written`` bytes of ``node``'s content went in."""
    return max(node.size, _end_of(data_regions(node.size, node.holes), written))


def check_size(st: os.stat_result, expected: int) -> None:
    """Raise ``VerifyFailed`` unless the written file has the ``expected`` size."""
    if st.st_size != expected:
        raise VerifyFailed(errno.EIO, "restored file does not have the stored size")


def _end_of(regions: list[tuple[int, int]], written: int) -> int:
    placed = _place(regions, written)
    return placed[-1][0] + placed[-1][2] if placed else 0


def open_for_write(dir_fd: int, name: bytes, mode: int) -> int:
    """Create (or open an existing regular file) without following symlinks."""
    return os.open(name, _WRITE_FLAGS, (mode & 0o777) | stat.S_IWUSR, dir_fd=dir_fd)


def _why(exc: OSError | OverflowError) -> str:
    """Why setting a piece of metadata failed: the system's reason, or a value from the
    restore point that no system call takes (a hostile or corrupt uid, time...)."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "value out of range in the restore point"


def apply_fd_metadata(
    fd: int, node: FileNode, owner: bool, xattrs: bool, current: os.stat_result | None = None
) -> list[str]:
    """Ownership, mode, xattrs, ACLs and timestamps of an open file or directory.

    ``current``: the file's stat taken after it was written; an owner or a mode it
    already has is not set again (a ``chown`` clears set-id bits, so once the owner
    changed the mode is always set)."""
    problems: list[str] = []
    mode = stat.S_IMODE(node.mode)
    chowned = False
    if owner:
        uid, gid = uid_for(node.user, node.uid), gid_for(node.group, node.gid)
        if current is None or (current.st_uid, current.st_gid) != (uid, gid):
            chowned = True
            try:
                os.fchown(fd, uid, gid)
            except (OSError, OverflowError) as exc:
                problems.append(f"owner: {_why(exc)}")
    if current is None or chowned or stat.S_IMODE(current.st_mode) != mode:
        try:
            os.fchmod(fd, mode)
        except OSError as exc:
            problems.append(f"mode: {exc.strerror}")
    if xattrs and (node.xattrs or node.acl_access or node.acl_default):
        attrs = dict(local_xattrs(node.xattrs))
        if node.acl_access:
            attrs[ACL_ACCESS] = node.acl_access
        if node.acl_default:
            attrs[ACL_DEFAULT] = node.acl_default
        for key, value in attrs.items():
            try:
                os.setxattr(fd, key, value)
            except OSError as exc:
                problems.append(f"xattr {key.decode(errors='replace')}: {exc.strerror}")
    try:
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))
    except (OSError, OverflowError) as exc:
        problems.append(f"timestamps: {_why(exc)}")
    return problems


def apply_name_metadata(
    dir_fd: int, name: bytes, node: Node, owner: bool, xattrs: bool
) -> list[str]:
    """Metadata of an entry that cannot be opened (symlink, FIFO, socket, device)."""
    problems: list[str] = []
    if owner:
        try:
            uid, gid = uid_for(node.user, node.uid), gid_for(node.group, node.gid)
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        except (OSError, OverflowError) as exc:
            problems.append(f"owner: {_why(exc)}")
    if node.type != "symlink":
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):  # Linux has no lchmod: only chmod a non-link
            try:
                os.chmod(name, stat.S_IMODE(node.mode), dir_fd=dir_fd)
            except OSError as exc:
                problems.append(f"mode: {exc.strerror}")
    if xattrs and node.xattrs:
        problems.extend(write_xattrs(dir_fd, name, node.xattrs))
    try:
        os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
    except (OSError, OverflowError) as exc:
        problems.append(f"timestamps: {_why(exc)}")
    return problems


def write_local_file(
    repo: RepositoryPort,
    dir_fd: int,
    name: bytes,
    node: FileNode,
    *,
    owner: bool,
    xattrs: bool,
    verify: bool,
    prefetched: dict[bytes, bytes] | None,
) -> tuple[int, list[str]]:
    """Create (or reopen) ``name`` in ``dir_fd``, write its content and metadata;
    returns bytes written and the metadata problems."""
    fd = open_for_write(dir_fd, name, node.mode)
    try:
        if prefetched is not None and node.nlink <= 1 and not node.holes:
            # the common small file: its chunks in hand, written in order from offset 0
            written = _write_in_order(fd, node.content, prefetched)
            end = node.size if node.size > written else written
            if end != written:  # a node inconsistent with its data: as write_content does
                os.ftruncate(fd, end)
        else:
            # a hardlinked file was created empty ahead of its content: truncate it
            written = write_content(
                repo, fd, node, False, truncate=node.nlink > 1, prefetched=prefetched
            )
            end = expected_size(node, written)
        st = os.fstat(fd)  # one stat for the size check and the metadata to set
        if verify:
            check_size(st, end)
        return written, apply_fd_metadata(fd, node, owner, xattrs, st)
    finally:
        os.close(fd)


def _write_in_order(fd: int, content: list[bytes], chunks: dict[bytes, bytes]) -> int:
    """Write ``content``'s chunks one after the other at the descriptor's position (0 on a
    fresh open); every write must take all its bytes (a short one goes on where it
    stopped, a zero-byte one fails)."""
    written = 0
    for blob_id in content:
        data = chunks[blob_id]
        done = os.write(fd, data)
        if done != len(data):
            view = memoryview(data)
            while True:
                if done <= 0:
                    raise VerifyFailed(errno.EIO, "restored file takes no more bytes")
                written += done
                view = view[done:]
                if not view:
                    break
                done = os.write(fd, view)
        else:
            written += done
    return written


class OpenPath:
    """Directory fds along the last path opened (consecutive paths share prefixes)."""

    _FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, root_fd: int) -> None:
        self._root = root_fd
        self._parts: list[bytes] = []
        self._fds: list[int] = []

    def open(self, parts: list[bytes]) -> int:
        """An fd of the directory at ``parts`` below the root (never through a symlink)."""
        if parts == self._parts:  # the last file's directory (most of a batch): one C compare
            return self._fds[-1] if self._fds else self._root
        common = 0
        while (
            common < len(parts)
            and common < len(self._parts)
            and parts[common] == self._parts[common]
        ):
            common += 1
        while len(self._fds) > common:
            os.close(self._fds.pop())
            self._parts.pop()
        for part in parts[common:]:
            parent = self._fds[-1] if self._fds else self._root
            self._fds.append(os.open(part, self._FLAGS, dir_fd=parent))
            self._parts.append(part)
        return self._fds[-1] if self._fds else self._root

    def close(self) -> None:
        """Close every fd held."""
        while self._fds:
            os.close(self._fds.pop())
        self._parts.clear()
