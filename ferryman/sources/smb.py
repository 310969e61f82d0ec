"""An SMB 2/3 share, read directly over the network (no kernel mount), as a backup source.

Entries are listed one directory at a time (one QUERY_DIRECTORY per 64 KiB of
entries) and their metadata comes from the listing itself, so the scan costs a
round trip per directory, not per file. SMB metadata is mapped onto a stat
result so change detection applies the same rules as for local paths:

- ``st_size`` end of file, ``st_mtime`` last write time, ``st_ctime`` change
  time (ChangeTime: any data or metadata change, attributes and security
  descriptor included), ``st_atime`` last access time, ``st_ino`` the server's
  file id; ``st_mode`` is synthesised (directory or regular file, 0644/0755,
  write bits removed for read-only files); uid/gid 0; ``st_nlink`` 1 (hard
  links are stored as separate files); ``st_rdev`` the DOS attributes word, so
  that change detection (which compares rdev) sees an attribute-only change:
  Samba does not move ChangeTime for those (nor for security descriptor
  changes, which are therefore picked up with the next content change only;
  Windows servers move ChangeTime for both).
- Windows-only metadata is kept as extended attributes in the ``smb.``
  namespace (see docs/format.md): ``smb.attributes`` (FileAttributes, u32
  little-endian), ``smb.creation_time`` (FILETIME, u64 little-endian) and
  ``smb.security_descriptor`` (self-relative security descriptor: owner, group
  and DACL, as the server returns it). Restoring to SMB sets them back;
  restoring to a local folder leaves them out.
- Reparse points (symlinks, junctions, mount points) are never followed: they
  are skipped with a warning.

Names are UTF-16 on the wire and UTF-8 bytes in the repository.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ferryman.sources.base import GROWTH_LIMIT, RefCounted, SourceUnavailable
from ferryman.sources.smb_session import (
    FILE_ALL_INFORMATION,
    FILE_LIST_DIRECTORY,
    FILE_READ_ATTRIBUTES,
    FILE_READ_DATA,
    FILE_READ_EA,
    INFO_FILE,
    INFO_SECURITY,
    NO_REPLY_TIMEOUT,
    READ_CONTROL,
    SD_PARTS,
    SmbHandle,
    SmbSession,
    filetime_to_ns,
)
from ferryman.sources.smb_url import SmbUrl, parse_smb_url

XATTR_ATTRIBUTES = b"smb.attributes"
XATTR_CREATION_TIME = b"smb.creation_time"
XATTR_SECURITY = b"smb.security_descriptor"

ATTR_READONLY = 0x1
ATTR_DIRECTORY = 0x10
ATTR_REPARSE_POINT = 0x400

_DIR_RECORD = struct.Struct("<IIQQQQQQIIIIQ")  # FileIdFullDirectoryInformation, 80 bytes
_ALL_INFO = struct.Struct("<QQQQIIQQIBBHQ")  # FileAllInformation up to the index number


@dataclass(frozen=True, slots=True)
class SmbInfo:
    """What SMB says about one entry (times are FILETIME)."""

    creation: int
    access: int
    write: int
    change: int
    size: int
    attributes: int
    file_id: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & ATTR_DIRECTORY)

    def stat(self) -> os.stat_result:
        """A stat result following the mapping in the module docstring."""
        mode = (stat.S_IFDIR | 0o755) if self.is_dir else (stat.S_IFREG | 0o644)
        if self.attributes & ATTR_READONLY:
            mode &= ~0o222
        size = 0 if self.is_dir else self.size
        a, m, c = (filetime_to_ns(t) for t in (self.access, self.write, self.change))
        return os.stat_result(
            (
                mode, self.file_id, 0, 1, 0, 0, size,
                a // 10**9, m // 10**9, c // 10**9,
                a / 1e9, m / 1e9, c / 1e9,
                a, m, c,
                65536, (size + 511) // 512, self.attributes,
            )
        )  # fmt: skip

    def xattrs(self) -> dict[bytes, bytes]:
        """The Windows metadata that a stat result cannot hold (no security descriptor)."""
        return {
            XATTR_ATTRIBUTES: struct.pack("<I", self.attributes),
            XATTR_CREATION_TIME: struct.pack("<Q", self.creation),
        }


def parse_dir_record(record: bytes) -> tuple[str, SmbInfo]:
    """Name and info of one FileIdFullDirectoryInformation record."""
    (_, _, cr, ac, wr, ch, eof, _, attrs, name_len, _, _, fid) = _DIR_RECORD.unpack_from(record)
    name = record[80 : 80 + name_len].decode("utf-16-le", "surrogatepass")
    return name, SmbInfo(cr, ac, wr, ch, eof, attrs, fid)


def parse_all_information(buf: bytes) -> SmbInfo:
    """Info from a FileAllInformation buffer."""
    cr, ac, wr, ch, attrs, _, _, eof, _, _, _, _, index = _ALL_INFO.unpack_from(buf)
    return SmbInfo(cr, ac, wr, ch, eof, attrs, index)


def to_smb_name(name: bytes) -> str:
    """A repository name (UTF-8 bytes) as an SMB name; OSError when it cannot be one."""
    try:
        return name.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise OSError(errno.EILSEQ, "name is not UTF-8: SMB cannot store it") from None


def from_smb_name(name: str) -> bytes:
    """An SMB name (UTF-16, maybe with unpaired surrogates) as repository bytes."""
    return name.encode("utf-8", "surrogatepass")


def join(rel: str, name: str) -> str:
    return f"{rel}\\{name}" if rel else name


def _reparse_error(rel: str) -> OSError:
    return OSError(errno.EOPNOTSUPP, "SMB reparse point (symlink or junction): not followed", rel)


class SmbFile:
    """A file of the share, opened on first use (positional reads; many may be open at once
    over one session). A whole read of a small file (``read_all``) is a single compound
    request: open, read, query info and security descriptor, close."""

    __slots__ = ("_cached_sd", "_info", "_rel", "_session", "handle", "has_sd")

    def __init__(self, session: SmbSession, rel: str) -> None:
        self._session = session
        self._rel = rel
        self.handle: SmbHandle | None = None
        self.has_sd = False
        self._info: SmbInfo | None = None
        self._cached_sd: bytes | None = None

    def _open(self) -> SmbHandle:
        if self.handle is None:
            access = FILE_READ_DATA | FILE_READ_ATTRIBUTES | FILE_READ_EA
            self.handle, self.has_sd = open_with_sd(self._session, self._rel, access, False)
        return self.handle

    def info(self) -> SmbInfo:
        buf = self._session.query_info(self._open(), INFO_FILE, FILE_ALL_INFORMATION)
        self._info = parse_all_information(buf)
        return self._info

    def fstat(self) -> os.stat_result:
        """Stat the open file (one QUERY_INFO; none after a compound ``read_all``)."""
        if self.handle is None and self._info is not None:
            return self._info.stat()
        return self.info().stat()

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        """Read into ``buf`` from ``offset``; 0 at EOF."""
        return self._session.read_into(self._open(), memoryview(buf).cast("B"), offset)

    def read_all(self, size_hint: int) -> bytes:
        """Read the whole file (a growing one is cut ``GROWTH_LIMIT`` bytes past
        ``size_hint``, see ``SourceFile``)."""
        if self.handle is None and size_hint < self._session.max_read:
            data = self._read_compound(size_hint + 1)
            if len(data) <= size_hint:
                return data
            pos, parts = len(data), [data]  # it grew: go on with an ordinary handle
        else:
            buf = bytearray(size_hint + 1)
            n = self.read_at(buf, 0)
            if n <= size_hint:
                return bytes(buf[:n])
            pos, parts = n, [bytes(buf[:n])]
        while pos < size_hint + 1 + GROWTH_LIMIT:
            more = bytearray(min(1 << 20, size_hint + 1 + GROWTH_LIMIT - pos))
            got = self.read_at(more, pos)
            if not got:
                break
            parts.append(bytes(more[:got]))
            pos += got
        return b"".join(parts)

    def _read_compound(self, length: int) -> bytes:
        access = FILE_READ_DATA | FILE_READ_ATTRIBUTES | FILE_READ_EA
        try:
            got = self._session.read_whole(self._rel, access, length, with_sd=True)
        except PermissionError:  # the security descriptor may not be read: the data may
            got = self._session.read_whole(self._rel, access, length, with_sd=False)
        self._info = parse_all_information(got.all_information)
        self._cached_sd = got.security
        self.has_sd = got.security is not None
        return got.data

    def data_extents(self, size: int) -> list[tuple[int, int]]:
        """No sparse map over SMB here: all data."""
        return [(0, size)] if size else []

    def read_xattrs(self) -> dict[bytes, bytes]:
        """Attributes, creation time and security descriptor of the file."""
        if self.handle is None and self._info is not None:  # after a compound read_all
            attrs = self._info.xattrs()
            if self._cached_sd is not None:
                attrs[XATTR_SECURITY] = self._cached_sd
            return attrs
        info = self._info or self.info()
        attrs = info.xattrs()
        if self.has_sd:
            sd = self._session.query_info(self._open(), INFO_SECURITY, 0, SD_PARTS, 65536)
            attrs[XATTR_SECURITY] = sd
        return attrs

    def close(self) -> None:
        """Close the handle (if one was opened)."""
        if self.handle is not None:
            self._session.close_handle(self.handle)
            self.handle = None


def open_with_sd(
    session: SmbSession, rel: str, access: int, directory: bool | None
) -> tuple[SmbHandle, bool]:
    """Open asking READ_CONTROL too (for the security descriptor); without it when refused."""
    try:
        return session.open(rel, access | READ_CONTROL, directory=directory), True
    except PermissionError:
        return session.open(rel, access, directory=directory), False


class SmbDir(RefCounted):
    """An open directory of the share; its listing (with metadata) is read by ``names()``."""

    __slots__ = ("_entries", "_session", "handle", "has_sd", "rel")

    def __init__(self, session: SmbSession, rel: str) -> None:
        self._session = session
        self.rel = rel
        access = FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES | FILE_READ_EA
        self.handle, self.has_sd = open_with_sd(session, rel, access, True)
        self._entries: dict[bytes, SmbInfo] = {}
        self._refs = 1
        self._lock = threading.Lock()

    def names(self) -> list[bytes]:
        """Entry names sorted bytewise; the listing's metadata is kept for ``lstat``."""
        entries: dict[bytes, SmbInfo] = {}
        for record in self._session.list_dir(self.handle):
            name, info = parse_dir_record(record)
            if name not in (".", ".."):
                entries[from_smb_name(name)] = info
        self._entries = entries
        return sorted(entries)

    def _info(self, name: bytes) -> SmbInfo:
        info = self._entries.get(name)
        if info is None:  # not listed (a selected path): ask the server
            rel = join(self.rel, to_smb_name(name))
            handle = self._session.open(rel, FILE_READ_ATTRIBUTES)
            try:
                info = parse_all_information(
                    self._session.query_info(handle, INFO_FILE, FILE_ALL_INFORMATION)
                )
            finally:
                self._session.close_handle(handle)
        return info

    def stat_self(self) -> os.stat_result:
        """Stat of the directory itself."""
        buf = self._session.query_info(self.handle, INFO_FILE, FILE_ALL_INFORMATION)
        return parse_all_information(buf).stat()

    def lstat(self, name: bytes) -> os.stat_result:
        """Stat from the listing; reparse points are refused (never followed)."""
        info = self._info(name)
        if info.attributes & ATTR_REPARSE_POINT:
            raise _reparse_error(join(self.rel, to_smb_name(name)))
        return info.stat()

    def open_dir(self, name: bytes) -> SmbDir:
        """Open a subdirectory."""
        return SmbDir(self._session, join(self.rel, to_smb_name(name)))

    def open_file(self, name: bytes) -> SmbFile:
        """A file for reading, opened on first use (others may go on reading, writing and
        deleting it)."""
        return SmbFile(self._session, join(self.rel, to_smb_name(name)))

    def read_link(self, name: bytes) -> bytes:
        """Reparse points are never followed nor backed up (``lstat`` refuses them)."""
        raise _reparse_error(join(self.rel, to_smb_name(name)))

    def read_xattrs(self, name: bytes) -> dict[bytes, bytes]:
        """Attributes, creation time and security descriptor of an entry."""
        info = self._info(name)
        attrs = info.xattrs()
        rel = join(self.rel, to_smb_name(name))
        try:
            handle = self._session.open(rel, READ_CONTROL | FILE_READ_ATTRIBUTES)
        except PermissionError:
            return attrs
        try:
            attrs[XATTR_SECURITY] = self._session.query_info(
                handle, INFO_SECURITY, 0, SD_PARTS, 65536
            )
        finally:
            self._session.close_handle(handle)
        return attrs

    def own_xattrs(self) -> dict[bytes, bytes]:
        """Attributes, creation time and security descriptor of this directory."""
        buf = self._session.query_info(self.handle, INFO_FILE, FILE_ALL_INFORMATION)
        attrs = parse_all_information(buf).xattrs()
        if self.has_sd:
            attrs[XATTR_SECURITY] = self._session.query_info(
                self.handle, INFO_SECURITY, 0, SD_PARTS, 65536
            )
        return attrs

    def _close(self) -> None:
        self._session.close_handle(self.handle)


class SmbEndpoint:
    """The folder of an ``smb://`` URL and its one session, connected on first use and
    ended by ``close`` (a later use connects again). The session reconnects by itself
    after a connection loss (``reconnect_delays``: seconds before each attempt; None:
    ``smb_session.RECONNECT_DELAYS``), or when nothing came back on it for
    ``reply_timeout`` seconds while a request waited (a frozen server). Setting ``stop``
    (the task's cancel request) ends a wait between reconnection attempts at once."""

    def __init__(
        self,
        url: str | SmbUrl,
        password: str,
        timeout: float = 30.0,
        reconnect_delays: tuple[float, ...] | None = None,
        reply_timeout: float = NO_REPLY_TIMEOUT,
        stop: threading.Event | None = None,
    ) -> None:
        self.url = parse_smb_url(url) if isinstance(url, str) else url
        self.password = password
        self.timeout = timeout
        self.reconnect_delays = reconnect_delays
        self.reply_timeout = reply_timeout
        self.stop = stop
        self.description = self.url.display()
        self._session: SmbSession | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> SmbSession:
        """The session, connected on first use (raises ``SourceUnavailable``)."""
        with self._lock:
            if self._session is None:
                self._session = SmbSession(
                    self.url,
                    self.password,
                    self.timeout,
                    self.reconnect_delays,
                    self.reply_timeout,
                    self.stop,
                )
            return self._session

    def close(self) -> None:
        """End the session (a later use connects again)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()


class SmbSource(SmbEndpoint):
    """The folder of an ``smb://`` URL, read over one session per task."""

    def open_root(self) -> SmbDir:
        """Connect if needed and open the folder the URL names."""
        session = self.session
        rel = self.url.path.replace("/", "\\")
        try:
            return SmbDir(session, rel)
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot open source {self.description!r}: {exc.strerror}"
            ) from exc

    @contextlib.contextmanager
    def _connected(self) -> Iterator[SmbSource]:
        try:
            yield self
        finally:
            self.close()

    def snapshot(self) -> contextlib.AbstractContextManager[SmbSource]:
        """No snapshot over SMB: the live share is read; the session ends with the context."""
        return self._connected()
