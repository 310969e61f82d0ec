"""Builders of awkward source trees and a field-by-field tree comparison for tests."""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def acl_bytes(entries: list[tuple[int, int, int]]) -> bytes:
    """The raw ``system.posix_acl_*`` xattr value (version 2) for (tag, perm, id) entries."""
    out = struct.pack("<I", 2)
    for tag, perm, ident in entries:
        out += struct.pack("<HHI", tag, perm, ident)
    return out


def write(path: bytes | str | os.PathLike[str], data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def deep_path(root: Path, total: int = 4000) -> bytes:
    """Create nested directories (through dir fds) until the path is ``total`` bytes long."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    rel = b""
    component = b"d" * 200
    try:
        while len(rel) + len(component) + 1 < total - 20:
            os.mkdir(component, dir_fd=fd)
            nfd = os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            rel += component + b"/"
        wfd = os.open(b"leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, b"deep content\n")
        os.close(wfd)
    finally:
        os.close(fd)
    return rel + b"leaf.txt"


def build_awkward_tree(root: Path) -> None:
    """Every awkward case a share can contain (run as root: devices, ownership)."""
    root.mkdir(parents=True, exist_ok=True)
    rootb = bytes(root)
    write(root / "empty", b"")
    write(root / "small.txt", b"hello world\n" * 10)
    write(root / "big.bin", os.urandom(9 << 20) + b"tail")
    write(root / "text.txt", b"".join(b"line %d of some text\n" % i for i in range(200_000)))
    write(os.path.join(rootb, b"non-utf8-\xff\xfe.txt"), b"latin bytes name\n")
    write(os.path.join(rootb, b"new\nline"), b"newline in name\n")
    sub = root / "sub" / "deeper"
    sub.mkdir(parents=True)
    write(sub / "file", b"nested\n")
    os.symlink("../small.txt", root / "sub" / "link-to-small")
    os.symlink("/nonexistent/target", root / "dangling")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink(b"\xff-weird-target", os.path.join(rootb, b"weird-link"))
    # hardlinks (three names, one inode) across directories
    write(root / "hard1", b"shared content\n" * 100)
    os.link(root / "hard1", root / "hard2")
    os.link(root / "hard1", root / "sub" / "hard3")
    os.mkfifo(root / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    os.mknod(root / "null-dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    # sparse file: holes at start, middle and end
    with open(root / "sparse.img", "wb") as f:
        f.truncate(64 << 20)
        f.seek(8 << 20)
        f.write(os.urandom(1 << 20))
        f.seek(40 << 20)
        f.write(b"x" * (2 << 20))
    # xattrs and ACLs
    write(root / "with-xattr", b"x\n")
    os.setxattr(root / "with-xattr", "user.comment", b"a value \x00\xff")
    acl = acl_bytes(
        [
            (ACL_USER_OBJ, 6, 0xFFFFFFFF),
            (ACL_USER, 4, 1234),
            (ACL_GROUP_OBJ, 4, 0xFFFFFFFF),
            (ACL_MASK, 4, 0xFFFFFFFF),
            (ACL_OTHER, 0, 0xFFFFFFFF),
        ]
    )
    os.setxattr(root / "with-xattr", "system.posix_acl_access", acl)
    (root / "acl-dir").mkdir()
    os.setxattr(root / "acl-dir", "system.posix_acl_default", acl)
    # ownership and odd modes
    write(root / "owned", b"owned\n")
    os.chown(root / "owned", 1234, 5678)
    os.chmod(root / "owned", 0o4750)
    (root / "private").mkdir(mode=0o700)
    os.chown(root / "private", 4321, 4321)
    deep_path(root / "sub")
    os.utime(root / "small.txt", ns=(1_000_000_000_123, 1_500_000_000_987_654_321))


def snapshot_tree(root: Path) -> dict[bytes, dict[str, object]]:
    """Every entry's metadata and content, keyed by relative path (dir fds: long paths ok)."""
    out: dict[bytes, dict[str, object]] = {}
    inode_groups: dict[tuple[int, int], bytes] = {}

    def walk(fd: int, rel: bytes) -> None:
        with os.scandir(fd) as it:
            names = sorted(os.fsencode(e.name) for e in it)
        for name in names:
            path = rel + b"/" + name if rel else name
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            rec: dict[str, object] = {
                "mode": st.st_mode,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else None,
            }
            path_for_x = b"/proc/self/fd/%d/%s" % (fd, name)
            try:
                rec["xattrs"] = {
                    k: os.getxattr(path_for_x, k, follow_symlinks=False)
                    for k in sorted(os.listxattr(path_for_x, follow_symlinks=False))
                }
            except OSError:
                rec["xattrs"] = None
            if stat.S_ISREG(st.st_mode):
                rec["size"] = st.st_size
                rec["sparse_blocks_small"] = st.st_blocks * 512 < st.st_size // 2
                rfd = os.open(name, os.O_RDONLY, dir_fd=fd)
                try:
                    import hashlib

                    h = hashlib.sha256()
                    while chunk := os.read(rfd, 1 << 20):
                        h.update(chunk)
                    rec["sha256"] = h.hexdigest()
                finally:
                    os.close(rfd)
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    rec["link_group"] = inode_groups.setdefault(key, path)
            elif stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(name, dir_fd=fd)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec["rdev"] = st.st_rdev
            out[path] = rec
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    walk(sub, path)
                finally:
                    os.close(sub)

    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk(top, b"")
    finally:
        os.close(top)
    return out


def diff_trees(a: Path, b: Path) -> list[str]:
    """Human-readable differences between two trees (empty list = identical)."""
    sa, sb = snapshot_tree(a), snapshot_tree(b)
    problems = []
    for path in sorted(set(sa) | set(sb)):
        if path not in sa:
            problems.append(f"extra in restore: {path!r}")
        elif path not in sb:
            problems.append(f"missing in restore: {path!r}")
        elif sa[path] != sb[path]:
            fields = {k for k in sa[path] if sa[path].get(k) != sb[path].get(k)}
            detail = {k: (sa[path].get(k), sb[path].get(k)) for k in fields}
            problems.append(f"differs {path!r}: {detail}")
    return problems
