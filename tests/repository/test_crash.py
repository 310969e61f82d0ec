"""Kill -9 a writer at many random instants: the repository stays consistent."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

from ferryman.repository import KIND_DATA, LeaseExpired, Repository, open_backend

from .conftest import FAST_SCRYPT, PASSPHRASE, SMALL_CHUNKS
from .snapshots import make_files, read_files, store_files

KILLS = 120
LEASE = 1.0


def _crashing_writer(url: str, cache: str, seed: int, lease: float) -> None:
    try:
        _write_until_killed(url, cache, seed, lease)
    except LeaseExpired:
        return  # a loaded machine stalled the lease refresh: the writer rightly stopped


def _write_until_killed(url: str, cache: str, seed: int, lease: float) -> None:
    repo = Repository.open(open_backend(url), PASSPHRASE, cache_dir=cache, lease_timeout=lease)
    rng = random.Random(seed)
    for r in range(1000):
        s = seed * 1000 + r
        with repo.open_writer("crashy", pack_size=rng.choice([4000, 16_000]), uploads=2) as w:
            root = store_files(repo, w, make_files(s, count=6), max_nodes=rng.choice([2, 4096]))
            if rng.random() < 0.3:
                w.flush()
            w.save_restore_point(share="crash", root=root, extra={"seed": s}, checkpoint=r % 2 == 0)
        if rng.random() < 0.3:
            points = repo.list_restore_points(include_checkpoints=True)
            if len(points) > 3:
                repo.delete_restore_point(rng.choice(points).id)


def _verify(url: str, cache: Path, *, read_data: bool) -> int:
    with Repository.open(open_backend(url), PASSPHRASE, cache_dir=cache) as repo:
        report = repo.check(read_data=read_data)
        assert report.ok, report.errors
        points = repo.list_restore_points(include_checkpoints=True)
        for point in points:
            assert read_files(repo, point.root) == make_files(point.extra["seed"], count=6)
        return len(points)


@pytest.mark.slow
def test_killing_writers_at_random_points_never_breaks_the_repository(tmp_path: Path) -> None:
    _crash_scenario(str(tmp_path / "repo"), tmp_path, KILLS, LEASE)


@pytest.mark.slow
@pytest.mark.service
def test_killing_writers_on_s3(tmp_path: Path, s3_url: str) -> None:
    _crash_scenario(s3_url, tmp_path, 16, 3 * LEASE)


def _crash_scenario(url: str, tmp_path: Path, kills: int, lease: float) -> None:
    with (
        Repository.init(
            open_backend(url), PASSPHRASE, chunker=SMALL_CHUNKS, scrypt_n=FAST_SCRYPT
        ) as repo,
        repo.open_writer("baseline") as w,
    ):
        # One point exists whatever the machine's speed (children may die before their first).
        root = store_files(repo, w, make_files(10**6, count=6))
        w.save_restore_point(share="crash", root=root, extra={"seed": 10**6})
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(20261124)
    cache = tmp_path / "proxy-cache"  # shared by every incarnation, like a restarted proxy
    killed_during_work = 0
    for i in range(kills):
        proc = ctx.Process(target=_crashing_writer, args=(url, str(cache), i, lease))
        proc.start()
        time.sleep(rng.uniform(0.0, 0.3 if kills == KILLS else 1.2))
        if proc.is_alive():
            killed_during_work += 1
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode in (0, -signal.SIGKILL), "a writer failed on its own (see stderr)"
        if i % 30 == 29:
            with Repository.open(open_backend(url), PASSPHRASE, cache_dir=tmp_path / "gc") as repo:
                repo.gc(grace=0)
            _verify(url, tmp_path / "verify", read_data=False)
    assert killed_during_work >= kills * 5 // 6, killed_during_work
    time.sleep(lease + 0.1)  # the dead writers' leases expire
    with Repository.open(open_backend(url), PASSPHRASE, cache_dir=tmp_path / "gc") as repo:
        repo.gc(grace=0)
        repo.gc(grace=0)
    assert _verify(url, tmp_path / "final", read_data=True) > 0


def test_packs_of_a_writer_that_dies_are_indexed_without_a_flush(
    repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    """What a dead writer uploaded stays reusable: each pack got its index segment promptly,
    so a later writer stores none of it again (only the pack still open is lost)."""
    w = repo.open_writer("dies", pack_size=64_000)
    rng = random.Random(5)
    blobs = [rng.randbytes(10_000) for _ in range(60)]  # ~10 packs, no flush
    ids = [repo.blob_id(b) for b in blobs]
    for blob_id, data in zip(ids, blobs, strict=True):
        w.add_blob(KIND_DATA, blob_id, data)
    w._pool.shutdown(wait=True)  # uploads in flight land; then the process "dies"
    w._lease._stop.set()
    still_open = w._open[KIND_DATA]
    lost = {e.blob_id for e in still_open.builder.entries} if still_open else set()
    assert len(lost) < 10
    # what it reports as published is exactly the pack objects it left behind
    backend = open_backend(repo_url)
    uploaded = sum(backend.size(name) for name in backend.list("data/"))
    assert w.stats["bytes_published"] == uploaded > 0

    other = Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "other")
    try:
        with other.open_writer("next attempt") as nxt:
            present = {i for i in ids if nxt.has_blob(i)}
            assert present == set(ids) - lost
            for blob_id, data in zip(ids, blobs, strict=True):
                nxt.add_blob(KIND_DATA, blob_id, data)
            assert nxt.stats["blobs_new"] == len(lost)
    finally:
        other.close()
