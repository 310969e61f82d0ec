"""Extended attributes, POSIX ACLs, owner names and sparse maps of local files.

xattrs are read and written through ``/proc/self/fd/<dirfd>/<name>`` with
``follow_symlinks=False``: this addresses the entry relative to an open
directory (Python's xattr calls take no ``dir_fd``), so it works for paths
longer than PATH_MAX and never follows a symlink. POSIX ACLs are the raw
``system.posix_acl_access`` / ``system.posix_acl_default`` attribute values
(no extra library), restored byte for byte.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
from functools import lru_cache

ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"
# Windows metadata of entries backed up over SMB (see ferryman.sources.smb): restored to
# SMB targets only, since no local filesystem has such an xattr namespace
SMB_NAMESPACE = b"smb."

# errors meaning "this filesystem or entry has no xattrs": not worth a warning
_NO_XATTR_ERRNOS = {errno.ENOTSUP, errno.ENODATA, errno.EPERM, errno.EOPNOTSUPP}


class XattrError(OSError):
    """Reading or writing extended attributes failed (message names the attribute)."""


def proc_path(dir_fd: int, name: bytes) -> bytes:
    """A path naming ``name`` inside the open directory ``dir_fd`` (short whatever its depth)."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def read_xattrs(dir_fd: int, name: bytes) -> dict[bytes, bytes]:
    """All extended attributes (ACLs included) of an entry; {} when unsupported."""
    return _read_xattrs(proc_path(dir_fd, name))


def read_xattrs_fd(fd: int) -> dict[bytes, bytes]:
    """All extended attributes of an open file or directory (no path lookup)."""
    return _read_xattrs(fd)


def _read_xattrs(path: bytes | int) -> dict[bytes, bytes]:
    follow = isinstance(path, int)  # an fd is the entry itself: nothing to follow
    try:
        keys = os.listxattr(path, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _NO_XATTR_ERRNOS:
            return {}
        raise
    result: dict[bytes, bytes] = {}
    for key in keys:
        bkey = os.fsencode(key)
        try:
            result[bkey] = os.getxattr(path, key, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed between list and get
                continue
            raise
    return result


def local_xattrs(xattrs: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The attributes a local filesystem can hold (the ``smb.`` namespace left out)."""
    if not any(k.startswith(SMB_NAMESPACE) for k in xattrs):
        return xattrs
    return {k: v for k, v in xattrs.items() if not k.startswith(SMB_NAMESPACE)}


def write_xattrs(dir_fd: int, name: bytes, xattrs: dict[bytes, bytes]) -> list[str]:
    """Set extended attributes; returns a message per attribute that could not be set."""
    path = proc_path(dir_fd, name)
    problems: list[str] = []
    for key, value in local_xattrs(xattrs).items():
        try:
            os.setxattr(path, key, value, follow_symlinks=False)
        except OSError as exc:
            problems.append(f"xattr {key.decode(errors='replace')}: {exc.strerror}")
    return problems


def split_acls(
    xattrs: dict[bytes, bytes],
) -> tuple[dict[bytes, bytes], bytes | None, bytes | None]:
    """Separate the POSIX ACL attributes from the other xattrs."""
    access = xattrs.pop(ACL_ACCESS, None)
    default = xattrs.pop(ACL_DEFAULT, None)
    return xattrs, access, default


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The name of a uid, or '' when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    """The name of a gid, or '' when it has none."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def uid_for(name: str, fallback: int) -> int:
    """The uid of a user name on this host (restore by name), else the stored uid."""
    if not name:
        return fallback
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return fallback


@lru_cache(maxsize=4096)
def gid_for(name: str, fallback: int) -> int:
    """The gid of a group name on this host, else the stored gid."""
    if not name:
        return fallback
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return fallback


def is_probably_sparse(st: os.stat_result) -> bool:
    """Cheap test: fewer blocks allocated than the size needs."""
    return st.st_size > 0 and st.st_blocks * 512 < st.st_size


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the data regions of a file, found with SEEK_DATA/SEEK_HOLE."""
    extents: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole up to EOF
                break
            return [(0, size)]  # filesystem without SEEK_DATA: all data
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            extents.append((start, end - start))
        pos = end
    return extents


def holes_from_extents(extents: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The complement of ``extents`` within ``[0, size)``."""
    holes: list[tuple[int, int]] = []
    pos = 0
    for off, length in extents:
        if off > pos:
            holes.append((pos, off - pos))
        pos = off + length
    if pos < size:
        holes.append((pos, size - pos))
    return holes
