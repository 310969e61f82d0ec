"""An SMB share folder as a restore target: files written over the session, times, DOS
attributes and security descriptors set back.

Every create is relative to the target folder, names are checked with
``check_name`` (so a hostile restore point cannot climb out with ``..``) and
reparse points are never followed (``FILE_OPEN_REPARSE_POINT``). Names that are
not UTF-8 cannot exist on SMB and are refused per file. Symlinks, special files
and hard links have no SMB equivalent here: symlinks and special files are
reported per path, hard links are restored as copies.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from smbprotocol.open import CreateDisposition

from ferryman.repository.tree import Node
from ferryman.sources.base import SourceUnavailable, check_name
from ferryman.sources.smb import (
    ATTR_DIRECTORY,
    ATTR_READONLY,
    XATTR_ATTRIBUTES,
    XATTR_CREATION_TIME,
    XATTR_SECURITY,
    SmbEndpoint,
    SmbInfo,
    join,
    parse_all_information,
    parse_dir_record,
    to_smb_name,
)
from ferryman.sources.smb_session import (
    DELETE,
    FILE_ALL_INFORMATION,
    FILE_BASIC_INFORMATION,
    FILE_DISPOSITION_INFORMATION,
    FILE_END_OF_FILE_INFORMATION,
    FILE_LIST_DIRECTORY,
    FILE_READ_ATTRIBUTES,
    FILE_READ_DATA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    FILE_WRITE_EA,
    INFO_FILE,
    INFO_SECURITY,
    READ_CONTROL,
    SD_PARTS,
    WRITE_DAC,
    WRITE_OWNER,
    SmbHandle,
    SmbSession,
    ns_to_filetime,
)

# the attributes a restore sets back (others, like DIRECTORY or COMPRESSED, are not settable)
SETTABLE_ATTRIBUTES = 0x1 | 0x2 | 0x4 | 0x20 | 0x100 | 0x1000 | 0x2000
ATTR_NORMAL = 0x80
_WRITE_META = FILE_WRITE_ATTRIBUTES | FILE_WRITE_EA
_SD_ACCESS = WRITE_DAC | WRITE_OWNER


def _open_for_metadata(
    session: SmbSession,
    rel: str,
    access: int,
    *,
    directory: bool | None = None,
    disposition: int = CreateDisposition.FILE_OPEN,
) -> tuple[SmbHandle, bool]:
    """Open asking to change the security descriptor too; without that when refused."""
    try:
        handle = session.open(
            rel, access | _SD_ACCESS, directory=directory, disposition=disposition
        )
        return handle, True
    except PermissionError:
        return session.open(rel, access, directory=directory, disposition=disposition), False


def apply_metadata(
    session: SmbSession, handle: SmbHandle, node: Node, xattrs: bool, may_set_sd: bool
) -> list[str]:
    """Security descriptor, attributes and times of an open entry; problems as messages."""
    problems: list[str] = []
    if xattrs and may_set_sd and XATTR_SECURITY in node.xattrs:
        sd = node.xattrs[XATTR_SECURITY]
        try:
            session.set_info(handle, INFO_SECURITY, 0, sd, SD_PARTS)
        except PermissionError:
            try:  # setting another owner needs a privilege: keep at least the DACL
                session.set_info(handle, INFO_SECURITY, 0, sd, 0x4)
                problems.append("security descriptor: owner not set (permission denied)")
            except OSError as exc:
                problems.append(f"security descriptor: {exc.strerror}")
        except OSError as exc:
            problems.append(f"security descriptor: {exc.strerror}")
    attrs = 0  # 0: leave as the server made them
    creation = 0
    if xattrs and XATTR_ATTRIBUTES in node.xattrs:
        (raw,) = struct.unpack("<I", node.xattrs[XATTR_ATTRIBUTES][:4].ljust(4, b"\0"))
        attrs = raw & SETTABLE_ATTRIBUTES
        attrs = (attrs | ATTR_DIRECTORY) if node.type == "dir" else (attrs or ATTR_NORMAL)
    elif node.type == "file" and not node.mode & 0o222:
        attrs = ATTR_READONLY  # backed up from a local path: read-only becomes the attribute
    if xattrs and XATTR_CREATION_TIME in node.xattrs:
        (creation,) = struct.unpack("<Q", node.xattrs[XATTR_CREATION_TIME][:8].ljust(8, b"\0"))
    basic = struct.pack(
        "<QQQQII",
        creation,
        ns_to_filetime(node.atime_ns) if node.atime_ns else 0,
        ns_to_filetime(node.mtime_ns),
        0,
        attrs,
        0,
    )
    try:
        session.set_info(handle, INFO_FILE, FILE_BASIC_INFORMATION, basic)
    except OSError as exc:
        problems.append(f"timestamps and attributes: {exc.strerror}")
    return problems


class SmbTargetFile:
    """A file being restored: positional writes and reads (verify) over the session."""

    __slots__ = ("_session", "handle", "may_set_sd")

    def __init__(self, session: SmbSession, handle: SmbHandle, may_set_sd: bool) -> None:
        self._session = session
        self.handle = handle
        self.may_set_sd = may_set_sd

    def write_at(self, data: bytes | memoryview, offset: int) -> int:
        """Write all of ``data`` at ``offset``."""
        return self._session.write_at(self.handle, data, offset)

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        """Read back (for verification)."""
        return self._session.read_into(self.handle, memoryview(buf).cast("B"), offset)

    def truncate(self, size: int) -> None:
        """Set the end of file."""
        eof = struct.pack("<Q", size)
        self._session.set_info(self.handle, INFO_FILE, FILE_END_OF_FILE_INFORMATION, eof)

    def apply_metadata(self, node: Node, xattrs: bool) -> list[str]:
        """Security descriptor, attributes and times (after the content is written)."""
        return apply_metadata(self._session, self.handle, node, xattrs, self.may_set_sd)

    def close(self) -> None:
        """Close the handle."""
        self._session.close_handle(self.handle)


class SmbTargetDir:
    """A folder of the target share; holds no handle (a path relative to the share)."""

    __slots__ = ("_session", "created", "rel")

    def __init__(self, session: SmbSession, rel: str, created: bool = False) -> None:
        self._session = session
        self.rel = rel
        self.created = created

    def _path(self, name: bytes) -> str:
        return join(self.rel, to_smb_name(check_name(name)))

    def lstat(self, name: bytes) -> os.stat_result | None:
        """Stat of an entry (reparse points not followed); None when missing."""
        try:
            handle = self._session.open(self._path(name), FILE_READ_ATTRIBUTES)
        except FileNotFoundError:
            return None
        try:
            buf = self._session.query_info(handle, INFO_FILE, FILE_ALL_INFORMATION)
        finally:
            self._session.close_handle(handle)
        return parse_all_information(buf).stat()

    def make_dir(self, name: bytes, mode: int) -> SmbTargetDir:
        """Create the folder if missing (an existing file there fails with ENOTDIR)."""
        rel = self._path(name)
        handle = self._session.open(
            rel, FILE_READ_ATTRIBUTES, directory=True, disposition=CreateDisposition.FILE_OPEN_IF
        )
        created = handle.create_action == 2  # FILE_CREATED
        self._session.close_handle(handle)
        return SmbTargetDir(self._session, rel, created)

    def open_write(self, name: bytes, mode: int) -> SmbTargetFile:
        """Create or truncate a file for writing."""
        access = FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | READ_CONTROL
        handle, may_sd = _open_for_metadata(
            self._session,
            self._path(name),
            access | _WRITE_META,
            directory=False,
            disposition=CreateDisposition.FILE_OVERWRITE_IF,
        )
        return SmbTargetFile(self._session, handle, may_sd)

    def remove(self, name: bytes) -> None:
        """Delete an entry; a folder with everything in it."""
        self._delete(self._path(name))

    def _delete(self, rel: str) -> None:
        session = self._session
        access = DELETE | FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_LIST_DIRECTORY
        try:
            handle = session.open(rel, access)
        except PermissionError:  # a read-only entry refuses DELETE access: clear it first
            self._clear_read_only(rel)
            handle = session.open(rel, access)
        try:
            info = parse_all_information(
                session.query_info(handle, INFO_FILE, FILE_ALL_INFORMATION)
            )
            if info.is_dir:
                for record in session.list_dir(handle):
                    child, _ = parse_dir_record(record)
                    if child not in (".", ".."):
                        self._delete(join(rel, child))
            if info.attributes & ATTR_READONLY:  # read-only entries refuse deletion
                basic = struct.pack("<QQQQII", 0, 0, 0, 0, ATTR_NORMAL, 0)
                session.set_info(handle, INFO_FILE, FILE_BASIC_INFORMATION, basic)
            session.set_info(handle, INFO_FILE, FILE_DISPOSITION_INFORMATION, b"\x01")
        finally:
            session.close_handle(handle)

    def _clear_read_only(self, rel: str) -> None:
        handle = self._session.open(rel, FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES)
        try:
            basic = struct.pack("<QQQQII", 0, 0, 0, 0, ATTR_NORMAL, 0)
            self._session.set_info(handle, INFO_FILE, FILE_BASIC_INFORMATION, basic)
        finally:
            self._session.close_handle(handle)

    def symlink(self, name: bytes, target: bytes) -> None:
        """No symlinks over SMB here."""
        raise OSError(errno.EOPNOTSUPP, "symlinks cannot be restored to an SMB share")

    def mknod(self, name: bytes, mode: int, rdev: int) -> None:
        """No special files over SMB."""
        kind = "FIFO" if stat.S_ISFIFO(mode) else "special file"
        raise OSError(errno.EOPNOTSUPP, f"a {kind} cannot be restored to an SMB share")

    def apply_path_metadata(self, parts: list[bytes], node: Node, xattrs: bool) -> list[str]:
        """Times, attributes and security descriptor of the folder at ``parts`` below this one."""
        rel = self.rel
        for part in parts:
            rel = join(rel, to_smb_name(check_name(part)))
        handle, may_sd = _open_for_metadata(
            self._session, rel, FILE_READ_ATTRIBUTES | _WRITE_META, directory=True
        )
        try:
            return apply_metadata(self._session, handle, node, xattrs, may_sd)
        finally:
            self._session.close_handle(handle)

    def retain(self) -> SmbTargetDir:
        """Nothing to count: no handle is held."""
        return self

    def release(self) -> None:
        """Nothing to close."""

    def close(self) -> None:
        """Nothing to close."""


class SmbRestoreTarget(SmbEndpoint):
    """The folder of an ``smb://`` URL, written over one session (closed by ``close``)."""

    def open_root(self) -> SmbTargetDir:
        """Connect and create the target folder (and its parents) when missing."""
        root = SmbTargetDir(self.session, "")
        try:
            for part in (p for p in self.url.path.split("/") if p):
                root = root.make_dir(part.encode("utf-8", "surrogatepass"), 0o755)
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot open restore target {self.description!r}: {exc.strerror}"
            ) from exc
        return root


__all__ = ["SmbInfo", "SmbRestoreTarget", "SmbTargetDir", "SmbTargetFile"]
