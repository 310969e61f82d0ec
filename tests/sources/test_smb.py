"""The SMB share source against a real smbd on loopback: backup over SMB, restore, incremental
runs, Windows attributes and security descriptors, concurrent reads and bad input."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.engine.backup import BackupFailed, run_backup
from ferryman.engine.nodes import iter_dir_nodes, load_root
from ferryman.engine.options import BackupOptions, RestoreOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository
from ferryman.repository.tree import Node
from ferryman.sources.base import GROWTH_LIMIT, SourceUnavailable
from ferryman.sources.local import LocalSource
from ferryman.sources.smb import (
    XATTR_ATTRIBUTES,
    XATTR_CREATION_TIME,
    XATTR_SECURITY,
    SmbSource,
)
from ferryman.sources.smb_session import (
    FILE_BASIC_INFORMATION,
    FILE_WRITE_ATTRIBUTES,
    INFO_FILE,
    READ_PIECE,
    SmbAuthFailed,
)
from ferryman.sources.smb_target import SmbRestoreTarget

from .smb_server import SambaServer, start_samba

HIDDEN, READONLY, ARCHIVE = 0x2, 0x1, 0x20

UNICODE_NAMES = ["café.txt", "日本語", "emoji-😀.bin", "Ünïcödé dir"]


@pytest.fixture(scope="module")
def samba() -> Iterator[SambaServer]:
    yield from start_samba(["data", "restore"])


@pytest.fixture
def share(samba: SambaServer, request: pytest.FixtureRequest) -> tuple[str, Path]:
    """A fresh folder inside the ``data`` share for one test: (its smb:// URL, its local path)."""
    name = request.node.name.replace("[", "_").replace("]", "")
    path = samba.shares["data"] / name
    path.mkdir()
    return samba.url("data", name), path


def build_tree(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty").write_bytes(b"")
    (root / "a" / "b" / "c" / "deep.txt").write_bytes(b"deep\n" * 100)
    (root / "big.bin").write_bytes(os.urandom(3 << 20) + b"tail")
    (root / "emptydir").mkdir()
    for i, name in enumerate(UNICODE_NAMES):
        if "dir" in name:
            (root / name).mkdir()
            (root / name / "inner").write_bytes(b"inner %d" % i)
        else:
            (root / name).write_bytes(name.encode() * (i + 1))
    for i in range(40):
        (root / "a" / f"small-{i:02d}").write_bytes(os.urandom(100 * i))
    (root / "hidden.txt").write_bytes(b"hidden")
    (root / "readonly.txt").write_bytes(b"read only")


def set_attributes(source: SmbSource, rel: str, attributes: int) -> None:
    """Set DOS attributes over SMB (what Windows Explorer does)."""
    session = source.session
    handle = session.open(rel.replace("/", "\\"), FILE_WRITE_ATTRIBUTES)
    try:
        basic = struct.pack("<QQQQII", 0, 0, 0, 0, attributes, 0)
        session.set_info(handle, INFO_FILE, FILE_BASIC_INFORMATION, basic)
    finally:
        session.close_handle(handle)


def tree_bytes(root: Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for directories) of every entry below root."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            found[os.path.normpath(os.path.join(rel, d))] = None
        for f in filenames:
            found[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_bytes()
    return found


def nodes_by_path(repo: Repository, point_id: str) -> dict[str, Node]:
    root = load_root(repo, repo.load_restore_point(point_id).root)
    out: dict[str, Node] = {}

    def walk(node: Node, prefix: str) -> None:
        for child in iter_dir_nodes(repo, node):
            path = prefix + child.name.decode()
            out[path] = child
            if child.type == "dir":
                walk(child, path + "/")

    walk(root, "")
    return out


def test_backup_over_smb_restores_byte_for_byte_with_windows_metadata(
    samba: SambaServer, share: tuple[str, Path], repo: Repository, tmp_path: Path
) -> None:
    url, path = share
    build_tree(path)
    source = SmbSource(url, samba.password)
    rel = path.name
    set_attributes(source, f"{rel}/hidden.txt", HIDDEN | ARCHIVE)
    set_attributes(source, f"{rel}/readonly.txt", READONLY | ARCHIVE)
    source.close()
    result = run_backup(SmbSource(url, samba.password), repo, BackupOptions(share="smb"))
    assert result.status == "success", result.warnings
    assert result.restore_point is not None
    expected = tree_bytes(path)
    assert result.stats.files_read == sum(1 for v in expected.values() if v)  # empty: no read
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out, RestoreOptions())
    assert restored.status == "success", restored.errors
    assert tree_bytes(out) == expected
    assert os.stat(out / "readonly.txt").st_mode & 0o222 == 0  # read-only kept as a mode
    assert not os.listxattr(out / "hidden.txt")  # the smb. namespace stays out of local files

    nodes = nodes_by_path(repo, result.restore_point)
    hidden = nodes["hidden.txt"]
    (attrs,) = struct.unpack("<I", hidden.xattrs[XATTR_ATTRIBUTES])
    assert attrs & HIDDEN and not attrs & READONLY
    (attrs,) = struct.unpack("<I", nodes["readonly.txt"].xattrs[XATTR_ATTRIBUTES])
    assert attrs & READONLY
    for node in (hidden, nodes["a"], nodes["empty"], nodes["big.bin"]):
        sd = node.xattrs[XATTR_SECURITY]
        assert sd[0] == 1 and len(sd) >= 20  # a self-relative security descriptor, revision 1
        assert len(node.xattrs[XATTR_CREATION_TIME]) == 8
    src_stat = os.stat(path / "big.bin")
    assert nodes["big.bin"].mtime_ns // 1000 == src_stat.st_mtime_ns // 1000
    assert nodes["big.bin"].inode == src_stat.st_ino  # the server's file id


def test_restore_back_to_smb_keeps_content_times_attributes_and_acls(
    samba: SambaServer, share: tuple[str, Path], repo: Repository
) -> None:
    url, path = share
    build_tree(path)
    source = SmbSource(url, samba.password)
    set_attributes(source, f"{path.name}/hidden.txt", HIDDEN | ARCHIVE)
    set_attributes(source, f"{path.name}/readonly.txt", READONLY | ARCHIVE)
    set_attributes(source, f"{path.name}/a/b", HIDDEN | 0x10)  # a hidden folder
    source.close()
    result = run_backup(SmbSource(url, samba.password), repo, BackupOptions(share="smb"))
    assert result.status == "success" and result.restore_point, result.warnings

    dest = f"{path.name}-restored/nested"
    target = SmbRestoreTarget(samba.url("restore", dest), samba.password)
    try:
        restored = run_restore(repo, result.restore_point, target, RestoreOptions(verify=True))
    finally:
        target.close()
    assert restored.status == "success", restored.errors
    out = samba.shares["restore"] / dest
    assert tree_bytes(out) == tree_bytes(path)

    # read the restored copy back over SMB: the same metadata as the original
    again = run_backup(
        SmbSource(samba.url("restore", dest), samba.password), repo, BackupOptions(share="copy")
    )
    before = nodes_by_path(repo, result.restore_point)
    after = nodes_by_path(repo, again.restore_point or "")
    assert sorted(before) == sorted(after)
    for rel, node in before.items():
        copy = after[rel]
        assert copy.mtime_ns == node.mtime_ns, rel
        for key in (XATTR_ATTRIBUTES, XATTR_CREATION_TIME, XATTR_SECURITY):
            assert copy.xattrs.get(key) == node.xattrs.get(key), (rel, key)
    (attrs,) = struct.unpack("<I", after["a/b"].xattrs[XATTR_ATTRIBUTES])
    assert attrs & HIDDEN

    # replacing what is there: a second restore over the first one (read-only files included)
    (out / "hidden.txt").write_bytes(b"changed since")
    target = SmbRestoreTarget(samba.url("restore", dest), samba.password)
    try:
        second = run_restore(repo, result.restore_point, target, RestoreOptions())
    finally:
        target.close()
    assert second.status == "success", second.errors
    assert tree_bytes(out) == tree_bytes(path)


def test_local_backup_restores_to_smb(samba: SambaServer, repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "local"
    build_tree(src)
    (src / "ro.txt").write_bytes(b"ro")
    os.chmod(src / "ro.txt", 0o444)
    os.symlink("big.bin", src / "link")
    result = run_backup(LocalSource(src), repo, BackupOptions(share="local"))
    target = SmbRestoreTarget(samba.url("restore", "from-local"), samba.password)
    try:
        restored = run_restore(repo, result.restore_point or "", target, RestoreOptions())
    finally:
        target.close()
    # the symlink has no SMB equivalent: reported for its path, everything else restored
    assert restored.status == "warning"
    assert [e.path for e in restored.errors] == ["link"]
    assert "symlink" in restored.errors[0].reason
    out = samba.shares["restore"] / "from-local"
    expected = tree_bytes(src)
    del expected["link"]
    assert tree_bytes(out) == expected
    check = SmbSource(samba.url("restore", "from-local"), samba.password)
    root = check.open_root()
    try:
        root.names()
        (attrs,) = struct.unpack("<I", root.read_xattrs(b"ro.txt")[XATTR_ATTRIBUTES])
    finally:
        root.release()
        check.close()
    assert attrs & READONLY  # a read-only mode becomes the read-only attribute


def test_incremental_run_reads_only_changed_files(
    samba: SambaServer, share: tuple[str, Path], repo: Repository
) -> None:
    url, path = share
    build_tree(path)
    first = run_backup(SmbSource(url, samba.password), repo, BackupOptions(share="smb"))
    assert first.status == "success", first.warnings
    again = run_backup(SmbSource(url, samba.password), repo, BackupOptions(share="smb"))
    assert again.stats.files_read == 0 and again.stats.bytes_read == 0
    assert again.stats.files_unchanged == first.stats.files_scanned

    with open(path / "a" / "small-05", "ab") as f:  # appended
        f.write(b"more")
    (path / "new file").write_bytes(b"new")  # added
    source = SmbSource(url, samba.password)
    set_attributes(source, f"{path.name}/a/small-07", HIDDEN)  # metadata only: ctime moves
    source.close()
    third = run_backup(SmbSource(url, samba.password), repo, BackupOptions(share="smb"))
    assert third.status == "success", third.warnings
    assert third.stats.files_read == 3
    assert third.stats.bytes_read == 500 + 4 + 3 + 700
    nodes = nodes_by_path(repo, third.restore_point or "")
    (attrs,) = struct.unpack("<I", nodes["a/small-07"].xattrs[XATTR_ATTRIBUTES])
    assert attrs & HIDDEN


def test_many_files_read_concurrently_over_one_session(
    samba: SambaServer, share: tuple[str, Path]
) -> None:
    url, path = share
    blobs = {f"f{i}".encode(): os.urandom(200_000 + i) for i in range(24)}
    for name, data in blobs.items():
        (path / name.decode()).write_bytes(data)
    source = SmbSource(url, samba.password)
    root = source.open_root()
    results: dict[bytes, bytes] = {}
    errors: list[BaseException] = []

    def read(names: list[bytes]) -> None:
        try:
            for name in names:
                f = root.open_file(name)
                try:
                    buf = bytearray(len(blobs[name]))
                    assert f.read_at(buf, 0) == len(buf)
                    results[name] = bytes(buf)
                finally:
                    f.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    names = sorted(blobs)
    threads = [threading.Thread(target=read, args=(names[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    root.release()
    source.close()
    assert not errors, errors
    assert results == blobs


def test_wrong_password_is_a_clear_one_line_error(
    samba: SambaServer, share: tuple[str, Path], repo: Repository
) -> None:
    url, _ = share
    with pytest.raises(SmbAuthFailed) as exc:
        SmbSource(url, "not-the-password").open_root()
    assert "wrong user name or password" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(BackupFailed) as failed:
        run_backup(SmbSource(url, "not-the-password"), repo, BackupOptions(share="smb"))
    assert "wrong user name or password" in str(failed.value)
    assert repo.list_restore_points() == []


def test_unreachable_server_missing_share_and_missing_folder(samba: SambaServer) -> None:
    cases = [
        (f"smb://backup@127.0.0.1:{_closed_port()}/data", "cannot reach SMB server"),
        (samba.url("nosuchshare"), "has no share 'nosuchshare'"),
        (samba.url("data", "no/such/folder"), "No such file or directory"),
    ]
    for url, words in cases:
        with pytest.raises(SourceUnavailable) as exc:
            SmbSource(url, samba.password, timeout=5).open_root()
        assert words in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreadable_files_and_folders_are_warnings_and_the_rest_is_kept(
    samba: SambaServer, share: tuple[str, Path], repo: Repository, tmp_path: Path
) -> None:
    _, path = share
    (path / "open").mkdir()
    (path / "open" / "a.txt").write_bytes(b"readable")
    (path / "secret.txt").write_bytes(b"root only")
    (path / "secret.txt").chmod(0o600)
    (path / "closed").mkdir()
    (path / "closed" / "inside").write_bytes(b"x")
    (path / "closed").chmod(0o700)
    (path / "z.txt").write_bytes(b"last")
    url = samba.url("data", path.name, user=samba.limited_user)  # nobody on the server
    result = run_backup(SmbSource(url, samba.limited_password), repo, BackupOptions(share="l"))
    assert result.status == "warning"
    reasons = {w.path: w.reason for w in result.warnings}
    assert set(reasons) == {"secret.txt", "closed"}, reasons
    assert "permission denied" in reasons["secret.txt"]
    assert "permission denied" in reasons["closed"]
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point or "", out, RestoreOptions())
    assert restored.status == "success", restored.errors
    files = {k: v for k, v in tree_bytes(out).items() if v is not None}
    assert files == {"open/a.txt": b"readable", "z.txt": b"last"}


def test_file_vanishing_between_listing_and_read_is_a_warning(
    samba: SambaServer, share: tuple[str, Path], repo: Repository
) -> None:
    url, path = share
    for name in ("a", "b", "c"):
        (path / name).write_bytes(name.encode() * 10)
    source = SmbSource(url, samba.password)
    root = source.open_root()
    try:
        assert root.names() == [b"a", b"b", b"c"]
        (path / "b").unlink()  # gone after the listing, before the read
        f = root.open_file(b"b")
        with pytest.raises(FileNotFoundError):
            f.read_all(10)
        f.close()
        assert root.open_file(b"c").read_all(10) == b"c" * 10
    finally:
        root.release()
        source.close()


def test_a_file_that_grew_since_its_listing_is_read_a_bounded_amount_past_it(
    samba: SambaServer, share: tuple[str, Path]
) -> None:
    url, path = share
    source = SmbSource(url, samba.password)
    large = READ_PIECE  # from here on read_all opens an ordinary handle
    data = os.urandom(large + GROWTH_LIMIT + (2 << 20))
    (path / "growing").write_bytes(data)
    root = source.open_root()
    try:
        for hint in (1000, large):  # one compound request, then an ordinary handle
            f = root.open_file(b"growing")
            try:
                got = f.read_all(hint)  # the file is larger than when it was listed
            finally:
                f.close()
            assert got == data[: hint + 1 + GROWTH_LIMIT]
    finally:
        root.release()
        source.close()
