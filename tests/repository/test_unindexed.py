"""A writer that dies between its packs and their index segment: the next attempt adopts
those packs instead of storing their blobs again (docs/format.md §13.1, step 4a)."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.repository import (
    KIND_DATA,
    KIND_TREE,
    BackendError,
    LocalBackend,
    Node,
    Repository,
    RepositoryError,
    encode_tree,
)
from ferryman.repository.gc_state import CondemnedList
from ferryman.repository.index import INDEX_PREFIX, open_segment
from ferryman.repository.lease import WRITERS_PREFIX, list_leases
from ferryman.repository.pack import parse_pack_name

from .conftest import FAST_SCRYPT, PASSPHRASE, reopen
from .snapshots import read_files

PACK = 64_000


class DyingBeforeSegments(LocalBackend):
    """A local repository in which, once ``dying`` is set, index segments never land: their
    PUT waits for ``dead`` and then fails. The writer 'dies' at the worst instant for the
    next attempt: its packs are durable, no segment lists them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.dying = threading.Event()
        self.dead = threading.Event()

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        if name.startswith("index/") and self.dying.is_set():
            self.dead.wait(30)
            raise BackendError("the writer's process died")
        super().put(name, data)


def _data_packs(backend: LocalBackend) -> dict[str, int]:
    return {n: backend.size(n) for n in backend.list("data/") if parse_pack_name(n)}


class Orphans:
    """Blobs whose packs a dying writer left without an index segment."""

    def __init__(self, ids: list[bytes], blobs: list[bytes], packs: dict[str, int]) -> None:
        self.ids, self.blobs, self.packs = ids, blobs, packs


@pytest.fixture
def orphans(repo: Repository, repo_url: str) -> Iterator[Orphans]:
    """A writer named "task" that died with its two upload threads between a durable pack
    and its segment (the records after those two packs were still in its open pack)."""
    backend = DyingBeforeSegments(Path(repo_url))
    dying_repo = Repository.open(backend, PASSPHRASE, cache_dir=repo.cache_path.parent / "dying")
    w = dying_repo.open_writer("task", pack_size=PACK, uploads=2)
    rng = random.Random(11)
    blobs = [rng.randbytes(10_000) for _ in range(19)]  # 2 packs of 7 records, 5 left open
    ids = [dying_repo.blob_id(b) for b in blobs]
    before = _data_packs(backend)
    backend.dying.set()
    for blob_id, data in zip(ids, blobs, strict=True):
        w.add_blob(KIND_DATA, blob_id, data)
    deadline = time.monotonic() + 30
    while len(_data_packs(backend)) - len(before) < 2:  # both upload threads are stuck
        assert time.monotonic() < deadline, "the packs never landed"
        time.sleep(0.01)
    landed = {n: s for n, s in _data_packs(backend).items() if n not in before}
    w._lease._stop.set()  # the process is gone: its lease is no longer refreshed
    try:
        yield Orphans(ids, blobs, landed)
    finally:
        backend.dead.set()
        with contextlib.suppress(RepositoryError):
            w.close(flush=False)
        dying_repo.close()


def _next_attempt(repo_url: str, tmp_path: Path) -> Repository:
    """The repository as another proxy opens it (its own, empty cache)."""
    return reopen(repo_url, tmp_path / "next-proxy")


def test_a_resumed_writer_adopts_the_packs_a_dead_writer_never_indexed(
    orphans: Orphans, repo_url: str, tmp_path: Path
) -> None:
    assert len(orphans.packs) == 2
    landed_bytes = sum(orphans.packs.values())
    nxt_repo = _next_attempt(repo_url, tmp_path)
    try:
        with nxt_repo.open_writer("task") as nxt:
            assert nxt.has_predecessor()
            # without adoption, both landed packs are invisible: ~2 x 64 kB sent again
            assert nxt.has_blobs(orphans.ids) == set()
            adopted = nxt.adopt_unindexed_packs()
            assert 0.95 * landed_bytes < adopted <= landed_bytes
            visible = nxt.has_blobs(orphans.ids)
            assert len(visible) == 14  # two packs of seven records
            for blob_id, data in zip(orphans.ids, orphans.blobs, strict=True):
                nxt.add_blob(KIND_DATA, blob_id, data)
            assert nxt.stats["blobs_new"] == len(orphans.ids) - len(visible)
            assert nxt.stats["bytes_published"] == 0  # adopting sends nothing
            # a second attempt finds nothing left to adopt
            assert nxt.adopt_unindexed_packs() == 0
            nxt.flush()
        for blob_id, data in zip(orphans.ids, orphans.blobs, strict=True):
            assert nxt_repo.get_blob(blob_id) == data
        report = nxt_repo.check(read_data=True)
        assert report.ok, report.errors
        assert not any("not indexed" in w for w in report.warnings), report.warnings
    finally:
        nxt_repo.close()


def test_packs_condemned_by_garbage_collection_are_not_adopted(
    orphans: Orphans, repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    """A mark that condemned an unindexed pack may sweep it at any time: adopting it would
    let a restore point reference a blob about to be deleted (format.md §13.3)."""
    condemned = sorted(orphans.packs)[0]
    parsed = parse_pack_name(condemned)
    assert parsed is not None
    state = CondemnedList(1, time.time(), [bytes.fromhex(parsed[1])], [])
    repo.backend.put(state.name, state.seal(repo.keys.encryption))
    nxt_repo = _next_attempt(repo_url, tmp_path)
    try:
        with nxt_repo.open_writer("task") as nxt:
            adopted = nxt.adopt_unindexed_packs()
            kept = sorted(orphans.packs)[1]
            assert 0.95 * orphans.packs[kept] < adopted <= orphans.packs[kept]
            assert len(nxt.has_blobs(orphans.ids)) == 7
    finally:
        nxt_repo.close()


def test_an_unreadable_unindexed_pack_is_skipped_with_a_warning(
    orphans: Orphans,
    repo_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    damaged, intact = sorted(orphans.packs)
    path = Path(repo_url) / damaged
    path.write_bytes(path.read_bytes()[:-100])  # truncated: its table cannot be found
    nxt_repo = _next_attempt(repo_url, tmp_path)
    try:
        with nxt_repo.open_writer("task") as nxt, caplog.at_level(logging.WARNING):
            adopted = nxt.adopt_unindexed_packs()
            assert 0.95 * orphans.packs[intact] < adopted <= orphans.packs[intact]
            assert len(nxt.has_blobs(orphans.ids)) == 7
        assert f"not adopting unindexed pack {Path(damaged).name}" in caplog.text
    finally:
        nxt_repo.close()


def test_a_pack_of_another_repository_is_not_adopted(
    orphans: Orphans,
    repo_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only a table sealed with this repository's key yields index entries: a well-formed
    pack from another repository (another key) put among the packs injects nothing."""
    other = Repository.init(
        LocalBackend(tmp_path / "other", fsync=False),
        "another passphrase",
        scrypt_n=FAST_SCRYPT,
        cache_dir=tmp_path / "other-cache",
    )
    try:
        foreign_blob = b"not from this repository" * 100
        with other.open_writer("task") as w:
            w.add_blob(KIND_DATA, other.blob_id(foreign_blob), foreign_blob)
        (foreign,) = _data_packs(LocalBackend(tmp_path / "other", fsync=False))
        foreign_id = other.blob_id(foreign_blob)
    finally:
        other.close()
    target = Path(repo_url) / foreign
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((tmp_path / "other" / foreign).read_bytes())
    nxt_repo = _next_attempt(repo_url, tmp_path)
    try:
        with nxt_repo.open_writer("task") as nxt, caplog.at_level(logging.WARNING):
            adopted = nxt.adopt_unindexed_packs()
            assert 0.95 * sum(orphans.packs.values()) < adopted <= sum(orphans.packs.values())
            assert len(nxt.has_blobs(orphans.ids)) == 14
            assert not nxt.has_blob(foreign_id)
        assert f"not adopting unindexed pack {Path(foreign).name}" in caplog.text
        assert "authentication failed" in caplog.text
        assert bytes.fromhex(Path(foreign).name) not in nxt_repo.index_cache.packs()
    finally:
        nxt_repo.close()


def test_a_writer_of_another_name_has_no_predecessor(
    orphans: Orphans, repo_url: str, tmp_path: Path
) -> None:
    nxt_repo = _next_attempt(repo_url, tmp_path)
    try:
        with nxt_repo.open_writer("another task") as other:
            assert not other.has_predecessor()
    finally:
        nxt_repo.close()


def test_a_pack_condemned_after_the_writer_read_the_gc_state_is_reprieved_not_deleted(
    orphans: Orphans, repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    """The race of format.md §13.1 step 4a: a mark condemns the unindexed packs after the
    resumed writer read the GC state (so it adopts them). The mark lists that writer's
    lease, its sweep waits for the writer and then keeps the packs its restore point
    reaches: no index entry is left pointing at a deleted pack."""
    nxt_repo = _next_attempt(repo_url, tmp_path)
    try:
        with nxt_repo.open_writer("task") as nxt:
            mark = repo.gc(grace=0)  # another process, between the writer's open and adoption
            assert mark.condemned_packs == len(orphans.packs) == 2
            assert nxt.adopt_unindexed_packs() > 0
            assert len(nxt.has_blobs(orphans.ids)) == 14
            # no restore point reaches them yet: only the fence keeps the sweep away
            waiting = repo.gc(grace=0, do_mark=False)
            assert waiting.waiting_generations == [mark.marked_generation]
            assert waiting.deleted_packs == 0
            for blob_id, data in zip(orphans.ids, orphans.blobs, strict=True):
                nxt.add_blob(KIND_DATA, blob_id, data)
            size = sum(map(len, orphans.blobs))
            image = encode_tree([Node(b"image", "file", 0o100644, size=size, content=orphans.ids)])
            top = Node(b"root", "dir", 0o40755, subtrees=[nxt_repo.blob_id(image)])
            root = encode_tree([top])
            for tree in (image, root):
                nxt.add_blob(KIND_TREE, nxt_repo.blob_id(tree), tree)
            point = nxt.save_restore_point(share="s", root=nxt_repo.blob_id(root))
        # the dead attempt's lease lingers until it expires: as if it had
        for lease in list_leases(repo.backend, repo.keys.encryption):
            repo.backend.delete(WRITERS_PREFIX + lease.id)
        swept = repo.gc(grace=0, do_mark=False)
        assert swept.swept_generations == [mark.marked_generation]
        assert swept.reprieved_packs == 2 and swept.deleted_packs == 0
        assert all((Path(repo_url) / name).is_file() for name in orphans.packs)
    finally:
        nxt_repo.close()
    fresh = reopen(repo_url, tmp_path / "third-proxy")
    try:
        assert read_files(fresh, point.root) == {b"image": b"".join(orphans.blobs)}
        report = fresh.check(read_data=True)
        assert report.ok, report.errors
    finally:
        fresh.close()


class HeldSegments(LocalBackend):
    """Once ``holding`` is set, index segments wait for ``released`` and then land: a
    writer alive but slow between its durable packs and their segments."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.holding = threading.Event()
        self.released = threading.Event()

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        if name.startswith("index/") and self.holding.is_set():
            self.released.wait(30)
        super().put(name, data)


def test_packs_of_a_live_predecessor_indexed_twice_stay_consistent(
    repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    """The predecessor may still be running (a frozen proxy that comes back): the next
    attempt adopts its durable packs, then it publishes their segments as well. A pack
    listed by two segments is a duplicate entry, harmless (format.md §13.1 step 4a):
    reads, check and both phases of garbage collection see each record once."""
    backend = HeldSegments(Path(repo_url))
    live_repo = Repository.open(backend, PASSPHRASE, cache_dir=tmp_path / "live-proxy")
    rng = random.Random(12)
    blobs = [rng.randbytes(10_000) for _ in range(19)]  # 2 packs of 7 records, 5 left open
    ids = [live_repo.blob_id(b) for b in blobs]
    try:
        with live_repo.open_writer("task", pack_size=PACK, uploads=2) as live:
            backend.holding.set()
            for blob_id, data in zip(ids, blobs, strict=True):
                live.add_blob(KIND_DATA, blob_id, data)
            deadline = time.monotonic() + 30
            while len(_data_packs(backend)) < 2:  # both upload threads wait on a segment
                assert time.monotonic() < deadline, "the packs never landed"
                time.sleep(0.01)
            nxt_repo = _next_attempt(repo_url, tmp_path)
            try:
                with nxt_repo.open_writer("task") as nxt:
                    assert nxt.has_predecessor()
                    assert nxt.adopt_unindexed_packs() > 0
                    assert len(nxt.has_blobs(ids)) == 14
            finally:
                nxt_repo.close()
            backend.released.set()  # the live writer's segments land, and its last pack's
    finally:
        backend.released.set()
        live_repo.close()
    assert len(_data_packs(backend)) == 3
    listed = [
        entry.blob_id
        for name in backend.list(INDEX_PREFIX)
        for entry in open_segment(repo.keys.encryption, backend.get(name), name)[1]
    ]
    assert len(listed) == len(ids) + 14  # the two adopted packs are listed twice
    fresh = reopen(repo_url, tmp_path / "third-proxy")
    try:
        fresh.sync_index()
        assert fresh.index_cache.count() == len(ids)  # one entry per blob, not two
        for blob_id, data in zip(ids, blobs, strict=True):
            assert fresh.get_blob(blob_id) == data
        report = fresh.check(read_data=True)
        assert report.ok, report.errors
        assert not any("not indexed" in w for w in report.warnings), report.warnings
        # no restore point reaches them: garbage, condemned then deleted with every entry
        assert fresh.gc(grace=0).condemned_packs == 3
        assert fresh.gc(grace=0).deleted_packs == 3
        assert fresh.index_cache.count() == 0
        report = fresh.check()
        assert report.ok, report.errors
    finally:
        fresh.close()
