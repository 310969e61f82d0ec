"""A local or mounted path (NFS, SMB mounts) as a backup source and a restore target.

Every access is relative to an open directory fd (``dir_fd=``), opened with
``O_NOFOLLOW``: symlinks are never followed (symlink loops are harmless), paths
longer than PATH_MAX work, and FIFOs are never opened (the engine only opens
regular files, with ``O_NONBLOCK`` as a second guard).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
from contextlib import AbstractContextManager

from ferryman.sources import metadata
from ferryman.sources.base import GROWTH_LIMIT, RefCounted, SourceUnavailable, check_name

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# O_NOATIME keeps backups from touching atimes, but only the owner (or root) may use it
_NOATIME = getattr(os, "O_NOATIME", 0)


class LocalFile:
    """An open regular file (pread-based; safe against truncation, unlike mmap)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fstat(self) -> os.stat_result:
        """Stat the open file."""
        return os.fstat(self.fd)

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        """Read into ``buf`` from ``offset``; 0 at EOF."""
        return os.preadv(self.fd, [buf], offset)

    def read_all(self, size_hint: int) -> bytes:
        """Read the whole file; one read call for files that did not grow (a growing
        one is cut ``GROWTH_LIMIT`` bytes past ``size_hint``, see ``SourceFile``)."""
        data = os.read(self.fd, size_hint + 1)
        if len(data) <= size_hint:
            return data
        parts, left = [data], GROWTH_LIMIT
        while left > 0:
            more = os.read(self.fd, min(1 << 20, left))
            if not more:
                break
            parts.append(more)
            left -= len(more)
        return b"".join(parts)

    def read_xattrs(self) -> dict[bytes, bytes]:
        """xattrs incl. ACL attributes, through the open fd."""
        return metadata.read_xattrs_fd(self.fd)

    def data_extents(self, size: int) -> list[tuple[int, int]]:
        """Data regions (SEEK_DATA/SEEK_HOLE)."""
        return metadata.data_extents(self.fd, size)

    def close(self) -> None:
        """Close the fd."""
        os.close(self.fd)


class LocalDir(RefCounted):
    """An open directory, reference counted so queued work can still use it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._refs = 1
        self._lock = threading.Lock()

    def names(self) -> list[bytes]:
        """Entry names sorted bytewise.

        Listing ``/proc/self/fd/<fd>`` as bytes yields raw names directly (the fd
        form of ``listdir``/``scandir`` only yields ``str``, re-encoding costs ~25 %).
        """
        try:
            names = os.listdir(metadata.proc_path(self.fd, b"")[:-1])
        except FileNotFoundError:  # no /proc: list through the fd and re-encode
            with os.scandir(self.fd) as it:
                names = [os.fsencode(e.name) for e in it]
        names.sort()
        return names

    def stat_self(self) -> os.stat_result:
        """Stat of the directory itself."""
        return os.fstat(self.fd)

    def lstat(self, name: bytes) -> os.stat_result:
        """lstat relative to this directory."""
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def open_dir(self, name: bytes) -> LocalDir:
        """Open a subdirectory without following symlinks."""
        return LocalDir(os.open(name, _DIR_FLAGS, dir_fd=self.fd))

    def open_file(self, name: bytes) -> LocalFile:
        """Open a file for reading without following symlinks or blocking on FIFOs."""
        if _NOATIME:
            try:
                return LocalFile(os.open(name, _FILE_FLAGS | _NOATIME, dir_fd=self.fd))
            except PermissionError as exc:
                if exc.errno != errno.EPERM:
                    raise
        return LocalFile(os.open(name, _FILE_FLAGS, dir_fd=self.fd))

    def read_link(self, name: bytes) -> bytes:
        """Raw symlink target."""
        return os.readlink(name, dir_fd=self.fd)

    def read_xattrs(self, name: bytes) -> dict[bytes, bytes]:
        """xattrs incl. ACL attributes."""
        return metadata.read_xattrs(self.fd, name)

    def own_xattrs(self) -> dict[bytes, bytes]:
        """xattrs of this directory itself, through its fd."""
        return metadata.read_xattrs_fd(self.fd)

    def _close(self) -> None:
        os.close(self.fd)


class LocalSource:
    """A local or mounted directory tree."""

    def __init__(self, root: str | bytes | os.PathLike[str]) -> None:
        self.root = os.fsencode(root)
        self.description = os.fsdecode(self.root)

    def open_root(self) -> LocalDir:
        """Open the root (the root itself may be reached through symlinks)."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot open source {self.description!r}: {exc.strerror}"
            ) from exc
        return LocalDir(fd)

    def snapshot(self) -> AbstractContextManager[LocalSource]:
        """Local paths have no snapshot provider yet: the live tree is read."""
        return contextlib.nullcontext(self)


class LocalTargetDir(RefCounted):
    """An open directory of a restore target; all writes are relative to it.

    Reference counted (``retain``/``release``) so queued restore jobs can keep
    using it after the walk has moved on.
    """

    __slots__ = ("created", "fd")

    def __init__(self, fd: int, created: bool = False) -> None:
        self.fd = fd
        self.created = created  # made by this restore: known empty, no entry to check
        self._refs = 1
        self._lock = threading.Lock()

    def _close(self) -> None:
        os.close(self.fd)

    def lstat(self, name: bytes) -> os.stat_result | None:
        """lstat or None when missing."""
        check_name(name)
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_dir(self, name: bytes) -> LocalTargetDir:
        """Open an existing real directory (ELOOP/ENOTDIR if it is a symlink or a file)."""
        check_name(name)
        return LocalTargetDir(os.open(name, _DIR_FLAGS, dir_fd=self.fd))

    def make_dir(self, name: bytes, mode: int) -> LocalTargetDir:
        """Create the directory if missing and open it without following symlinks."""
        check_name(name)
        # an existing directory is reused; a symlink or a file there fails in open_dir
        created = False
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode | stat.S_IRWXU, dir_fd=self.fd)
            created = True
        sub = self.open_dir(name)
        sub.created = created
        return sub

    def create_file(self, name: bytes, mode: int) -> int:
        """Create/truncate a regular file (never through a symlink); return its fd."""
        check_name(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, (mode & 0o7777) | stat.S_IWUSR, dir_fd=self.fd)

    def symlink(self, name: bytes, target: bytes) -> None:
        """Create a symlink (its target is stored, never followed by the restore)."""
        check_name(name)
        os.symlink(target, name, dir_fd=self.fd)

    def link(self, name: bytes, src_dir: LocalTargetDir, src_name: bytes) -> None:
        """Create a hardlink to an entry restored earlier."""
        check_name(name)
        check_name(src_name)
        os.link(src_name, name, src_dir_fd=src_dir.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def mknod(self, name: bytes, mode: int, rdev: int) -> None:
        """Create a FIFO, socket or device node."""
        check_name(name)
        if stat.S_ISFIFO(mode):
            os.mkfifo(name, mode & 0o7777, dir_fd=self.fd)
        else:
            os.mknod(name, mode, rdev, dir_fd=self.fd)

    def remove(self, name: bytes) -> None:
        """Remove an entry; directories recursively (shutil.rmtree is dir_fd-safe)."""
        check_name(name)
        st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=self.fd)
        else:
            os.unlink(name, dir_fd=self.fd)

    def rename(self, old: bytes, new: bytes) -> None:
        """Rename within this directory."""
        check_name(old)
        check_name(new)
        os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def close(self) -> None:
        """Release the caller's reference."""
        self.release()


class LocalRestoreTarget:
    """A local path that restores write into."""

    def __init__(self, root: str | bytes | os.PathLike[str]) -> None:
        self.root = os.fsencode(root)
        self.description = os.fsdecode(self.root)

    def open_root(self) -> LocalTargetDir:
        """Create the target root if needed and open it."""
        try:
            os.makedirs(self.root, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot open restore target {self.description!r}: {exc.strerror}"
            ) from exc
        return LocalTargetDir(fd)
