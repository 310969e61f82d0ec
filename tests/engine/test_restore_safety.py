"""Restore never writes outside its target, whatever the restore point contains."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from ferryman.engine.nodes import ROOT_NAME
from ferryman.engine.options import RestoreOptions
from ferryman.engine.restore import RestoreFailed, run_restore
from ferryman.repository import KIND_DATA, KIND_TREE, Node, Repository
from ferryman.repository.tree import TREE_VERSION, node_to_map


def _raw_tree(repo: Repository, writer: object, nodes: list[Node]) -> bytes:
    """Encode nodes WITHOUT validation or sorting (what a hostile writer could store)."""
    data = msgpack.packb(
        {"v": TREE_VERSION, "nodes": [node_to_map(n) for n in nodes]}, use_bin_type=True
    )
    blob_id = repo.blob_id(data)
    writer.add_blob(KIND_TREE, blob_id, data)  # type: ignore[attr-defined]
    return blob_id


def _point(repo: Repository, entry_blobs: list[list[Node]]) -> str:
    """A restore point whose root directory lists the given tree blobs, in order."""
    with repo.open_writer("hostile") as w:
        payload = b"pwned\n"
        content_id = repo.blob_id(payload)
        w.add_blob(KIND_DATA, content_id, payload)
        for nodes in entry_blobs:
            for n in nodes:
                if n.type == "file":
                    n.content, n.size = [content_id], len(payload)
        ids = [_raw_tree(repo, w, nodes) for nodes in entry_blobs]
        root = Node(name=ROOT_NAME, type="dir", mode=0o40755, subtrees=ids)
        root_id = _raw_tree(repo, w, [root])
        return w.save_restore_point(share="evil", root=root_id).id


def _file(name: bytes) -> Node:
    return Node(name=name, type="file", mode=0o100644)


def _outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert (outside / "keep").read_bytes() == b"original"


@pytest.fixture(params=[0, 2], ids=["threads", "processes"])
def processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The restore's files written by threads, or by its worker processes from the first
    (checked: with processes, no batch fell back to this process's threads)."""
    from ferryman.engine import restore_walk

    monkeypatch.setattr(restore_walk, "PROCESS_AFTER_FILES", 0)
    here: list[bytes] = []
    real_run_jobs = restore_walk.Restorer._run_jobs

    def run_jobs(self: restore_walk.Restorer, batch: list[restore_walk._FileJob]) -> None:
        here.extend(j.name for j in batch)
        real_run_jobs(self, batch)

    monkeypatch.setattr(restore_walk.Restorer, "_run_jobs", run_jobs)
    yield int(request.param)
    if request.param:
        assert here == [], "files written by the threads, not the worker processes"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "keep").write_bytes(b"original")
    return d


@pytest.mark.parametrize(
    "name", [b"..", b".", b"../escape", b"/abs", b"a/../../x", b"", b"nul\x00byte"]
)
def test_hostile_names_are_refused(
    repo: Repository, tmp_path: Path, outside: Path, name: bytes, processes: int
) -> None:
    target = tmp_path / "target"
    point = _point(repo, [[_file(name)]])
    result = run_restore(repo, point, target, RestoreOptions(processes=processes))
    assert result.status == "warning"
    assert result.errors, "hostile entry must be reported"
    _outside_untouched(outside)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


def test_symlink_then_directory_of_the_same_name(
    repo: Repository, tmp_path: Path, outside: Path
) -> None:
    """Blob 1: ``x -> outside``; blob 2: directory ``x`` with a file: must not follow x."""
    link = Node(name=b"x", type="symlink", mode=0o120777, link_target=str(outside).encode())
    inner = [_file(b"pwn")]
    with repo.open_writer("hostile-inner") as w:
        inner_id = _raw_tree(repo, w, inner)
    directory = Node(name=b"x", type="dir", mode=0o40755, subtrees=[inner_id])
    point = _point(repo, [[link], [directory]])
    result = run_restore(repo, point, tmp_path / "target")
    assert result.status == "warning"
    _outside_untouched(outside)
    assert os.path.islink(tmp_path / "target" / "x")


def test_symlink_then_file_of_the_same_name(
    repo: Repository, tmp_path: Path, outside: Path, processes: int
) -> None:
    link = Node(
        name=b"f", type="symlink", mode=0o120777, link_target=str(outside / "keep").encode()
    )
    point = _point(repo, [[link], [_file(b"f")]])
    run_restore(repo, point, tmp_path / "target", RestoreOptions(processes=processes))
    _outside_untouched(outside)


def test_hardlink_to_a_path_outside(
    repo: Repository, tmp_path: Path, outside: Path, processes: int
) -> None:
    evil = _file(b"h")
    evil.nlink, evil.link_to = 2, str(outside / "keep").encode()
    dotted = _file(b"h2")
    dotted.nlink, dotted.link_to = 2, b"../outside/keep"
    point = _point(repo, [[evil, dotted]])
    result = run_restore(repo, point, tmp_path / "target", RestoreOptions(processes=processes))
    _outside_untouched(outside)
    assert (tmp_path / "target" / "h").read_bytes() == b"pwned\n"
    assert os.stat(tmp_path / "target" / "h").st_ino != os.stat(outside / "keep").st_ino
    assert result.status == "success"


def test_existing_symlink_in_target_is_not_followed(
    repo: Repository, tmp_path: Path, outside: Path, processes: int
) -> None:
    """The target already has ``d -> outside``; the point has a directory ``d``."""
    with repo.open_writer("inner") as w:
        inner_id = _raw_tree(repo, w, [_file(b"file")])
    point = _point(repo, [[Node(name=b"d", type="dir", mode=0o40755, subtrees=[inner_id])]])
    for policy in ("skip", "replace", "keep-both", "if-newer"):
        target = tmp_path / f"target-{policy}"
        target.mkdir()
        os.symlink(outside, target / "d")
        options = RestoreOptions(overwrite=policy, processes=processes)
        run_restore(repo, point, target, options)
        _outside_untouched(outside)


def test_selected_path_with_dotdot_is_refused(repo: Repository, tmp_path: Path) -> None:
    point = _point(repo, [[_file(b"a")]])
    result = run_restore(repo, point, tmp_path / "t", RestoreOptions(paths=[b"../a"]))
    assert result.status == "warning"
    assert "'..' is not allowed" in result.errors[0].reason


def test_corrupt_root_is_a_clear_error(repo: Repository, tmp_path: Path) -> None:
    with repo.open_writer("bad") as w:
        data = b"not a tree"
        bid = repo.blob_id(data)
        w.add_blob(KIND_TREE, bid, data)
        point = w.save_restore_point(share="evil", root=bid).id
    with pytest.raises(RestoreFailed, match="restore point"):
        run_restore(repo, point, tmp_path / "t")
    with pytest.raises(RestoreFailed, match="does not exist"):
        run_restore(repo, "0" * 32, tmp_path / "t")


def test_chunk_not_matching_its_id_is_never_written(
    repo: Repository, tmp_path: Path, processes: int
) -> None:
    """The content hash is checked before writing: a chunk stored under another
    chunk's id fails its file (reported, nothing left behind); the others restore.
    The same when the restore's worker processes write the files."""
    good, forged = b"good content\n" * 100, b"forged content\n" * 100
    with repo.open_writer("forger") as w:
        good_id = repo.blob_id(good)
        w.add_blob(KIND_DATA, good_id, good)
        lying_id = repo.blob_id(b"what the file really held")
        w.add_blob(KIND_DATA, lying_id, forged)  # a hostile writer: id of other bytes
        nodes = [
            Node(name=b"bad", type="file", mode=0o100644, size=len(forged), content=[lying_id]),
            Node(name=b"ok", type="file", mode=0o100644, size=len(good), content=[good_id]),
        ]
        root = Node(name=ROOT_NAME, type="dir", mode=0o40755, subtrees=[_raw_tree(repo, w, nodes)])
        point = w.save_restore_point(share="evil", root=_raw_tree(repo, w, [root])).id
    target = tmp_path / "t"
    result = run_restore(repo, point, target, RestoreOptions(processes=processes))
    assert result.status == "warning"
    assert [(e.path, e.reason.split(":")[0]) for e in result.errors] == [
        ("bad", "content unreadable")
    ]
    assert "does not match its id" in result.errors[0].reason
    assert sorted(p.name for p in target.iterdir()) == ["ok"]
    assert (target / "ok").read_bytes() == good


class _ChoppyOutput:
    """A target file that takes at most ``step`` bytes per write (0: none at all)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.data = bytearray()

    def write_at(self, data: bytes | memoryview, offset: int) -> int:
        n = min(self.step, len(data))
        end = offset + n
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data[:n]
        return n

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        raise AssertionError("verify-as-written reads nothing back")

    def truncate(self, size: int) -> None:
        del self.data[size:]


def test_short_writes_are_continued_and_a_write_taking_nothing_fails(repo: Repository) -> None:
    from ferryman.engine.restore_files import VerifyFailed, write_content

    data = os.urandom(10_000)
    bid = repo.blob_id(data)
    node = Node(name=b"f", type="file", mode=0o100644, size=len(data), content=[bid])
    choppy = _ChoppyOutput(7)
    assert write_content(repo, choppy, node, True, prefetched={bid: data}) == len(data)
    assert bytes(choppy.data) == data
    with pytest.raises(VerifyFailed, match="takes no more bytes"):
        write_content(repo, _ChoppyOutput(0), node, True, prefetched={bid: data})


def test_batches_of_broken_worker_processes_are_written_here(
    repo: Repository, tmp_path: Path
) -> None:
    """A worker batch that failed, and one cancelled when the pool was then shut
    down, are both written by the restoring process (not a CancelledError)."""
    from concurrent.futures import Future

    from ferryman.engine import restore_procs, restore_walk
    from ferryman.sources.local import LocalTargetDir

    data = b"written here\n" * 50
    with repo.open_writer("t") as w:
        w.add_blob(KIND_DATA, repo.blob_id(data), data)
    node = Node(name=b"f", type="file", mode=0o100644, size=len(data), content=[repo.blob_id(data)])
    target = tmp_path / "t"
    target.mkdir()
    root = LocalTargetDir(os.open(target, os.O_RDONLY | os.O_DIRECTORY))
    restorer = restore_walk.Restorer(repo, root, RestoreOptions())
    try:
        failed: Future[restore_procs.BatchOutcome] = Future()
        failed.set_exception(RuntimeError("worker died"))
        cancelled: Future[restore_procs.BatchOutcome] = Future()
        cancelled.cancel()
        restorer._proc_batches = [
            (fut, [restore_walk._FileJob(root.retain(), name, node, name.decode(), name)])
            for fut, name in ((failed, b"a"), (cancelled, b"b"))
        ]
        restorer._collect_process_batches(wait=True)
    finally:
        restorer.close()
        root.release()
    assert restorer._proc_batches == []
    assert (target / "a").read_bytes() == data
    assert (target / "b").read_bytes() == data


def test_out_of_range_owner_is_reported_per_file_not_a_traceback(
    repo: Repository, tmp_path: Path, processes: int
) -> None:
    """A uid or gid no system call takes (beyond 32 bits, negative: a hostile or corrupt
    point) was an OverflowError that stopped the whole restore with a traceback: now the
    file is restored with an error naming what could not be set, and the restore goes on."""
    odd = [
        Node(name=b"big-uid", type="file", mode=0o100640, uid=2**40, gid=0),
        Node(name=b"minus-gid", type="file", mode=0o100640, uid=0, gid=-5),
        Node(name=b"ok", type="file", mode=0o100640, mtime_ns=10**18),
    ]
    point = _point(repo, [odd])
    target = tmp_path / "target"
    options = RestoreOptions(processes=processes, restore_owner=True)
    result = run_restore(repo, point, target, options)
    assert result.status == "warning"
    reasons = {e.path: e.reason for e in result.errors}
    assert "owner: value out of range in the restore point" in reasons["big-uid"]
    assert "owner: value out of range in the restore point" in reasons["minus-gid"]
    for name in ("big-uid", "minus-gid", "ok"):
        assert (target / name).read_bytes() == b"pwned\n"
        assert (target / name).stat().st_mode & 0o777 == 0o640  # the rest of it is set
    assert (target / "ok").stat().st_mtime_ns == 10**18
