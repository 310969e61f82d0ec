"""Several writer processes and garbage collection on one repository at the same time."""

from __future__ import annotations

import multiprocessing
import time
import traceback
from pathlib import Path

import pytest

from ferryman.repository import Repository, open_backend

from .conftest import FAST_SCRYPT, PASSPHRASE, SMALL_CHUNKS
from .snapshots import make_files, read_files, store_files

ROUNDS = 6
KEEP = 2


def _writer(url: str, cache: str, worker: int, error_file: str) -> None:
    try:
        repo = Repository.open(open_backend(url), PASSPHRASE, cache_dir=cache, lease_timeout=30)
        mine: list[str] = []
        for r in range(ROUNDS):
            seed = worker * 1000 + r
            with repo.open_writer(f"proxy{worker}", pack_size=24_000, uploads=2) as w:
                root = store_files(repo, w, make_files(seed, count=8))
                point = w.save_restore_point(
                    share=f"share{worker}", root=root, extra={"seed": seed}, checkpoint=r == 1
                )
            mine.append(point.id)
            if len(mine) > KEEP:  # retention: creates garbage while others write
                repo.delete_restore_point(mine.pop(0))
        repo.close()
    except BaseException:
        Path(error_file).write_text(traceback.format_exc())
        raise


def _collector(url: str, cache: str, stop: str, error_file: str) -> None:
    try:
        repo = Repository.open(open_backend(url), PASSPHRASE, cache_dir=cache)
        runs = marked = deleted = 0
        while not Path(stop).exists() or runs < 3:
            report = repo.gc(grace=0)
            runs += 1
            marked += report.condemned_packs
            deleted += report.deleted_packs
            time.sleep(0.02)
        repo.close()
        Path(stop).write_text(f"{runs} {marked} {deleted}")
    except BaseException:
        Path(error_file).write_text(traceback.format_exc())
        raise


def _run_scenario(url: str, tmp_path: Path, writers: int) -> None:
    Repository.init(
        open_backend(url), PASSPHRASE, chunker=SMALL_CHUNKS, scrypt_n=FAST_SCRYPT
    ).close()
    ctx = multiprocessing.get_context("fork")
    stop = tmp_path / "stop"
    errors = [tmp_path / f"error-{i}" for i in range(writers + 1)]
    gc_proc = ctx.Process(
        target=_collector, args=(url, str(tmp_path / "cache-gc"), str(stop), str(errors[-1]))
    )
    gc_proc.start()
    procs = [
        ctx.Process(target=_writer, args=(url, str(tmp_path / f"cache-{i}"), i, str(errors[i])))
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    stop.touch()
    gc_proc.join(240)
    runs, marked, _ = (int(x) for x in stop.read_text().split())
    assert runs >= 3 and marked > 0  # the collector condemned data while writers ran
    problems = [e.read_text() for e in errors if e.exists()]
    assert not problems, problems[0]
    assert all(p.exitcode == 0 for p in [*procs, gc_proc])

    with Repository.open(open_backend(url), PASSPHRASE, cache_dir=tmp_path / "verify") as repo:
        swept = sum(repo.gc(grace=0).deleted_packs for _ in range(3))
        assert swept + int(stop.read_text().split()[2]) > 0
        report = repo.check(read_data=True)
        assert report.ok, report.errors
        points = repo.list_restore_points(include_checkpoints=True)
        assert len(points) == writers * KEEP
        for point in points:
            assert read_files(repo, point.root) == make_files(point.extra["seed"], count=8)


@pytest.mark.slow
@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_and_gc_local(tmp_path: Path, writers: int) -> None:
    _run_scenario(str(tmp_path / "repo"), tmp_path, writers)


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_and_gc_s3(tmp_path: Path, s3_url: str, writers: int) -> None:
    _run_scenario(s3_url, tmp_path, writers)
