"""The maintenance task on a real repository: points deleted, space reclaimed, kept data intact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from repository.snapshots import make_files, read_files, store_files  # tests/ is on sys.path

from ferryman.proxy.maintenance import run_maintenance_task
from ferryman.proxy.protocol import TaskAssignment
from ferryman.repository import ChunkerParams, Repository, open_backend


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = Repository.init(
        open_backend(str(tmp_path / "repo")),
        "passphrase",
        chunker=ChunkerParams(avg_size=8192, min_size=2048, max_size=32768),
        scrypt_n=1 << 10,
        cache_dir=tmp_path / "cache",
    )
    yield r
    r.close()


def _point(repo: Repository, files: dict[bytes, bytes]) -> str:
    with repo.open_writer("t", pack_size=20_000) as w:
        return w.save_restore_point(share="s", root=store_files(repo, w, files)).id


def _task(point_ids: list[str], repack_below: float = 0.5) -> TaskAssignment:
    delete = [{"point_id": p, "share": "s", "time": "2026-03-01T00:00:00+00:00"} for p in point_ids]
    return TaskAssignment(
        task_id=1,
        session_id=1,
        kind="maintenance",
        params={"delete": delete, "gc": True, "repack_below": repack_below},
    )


def test_removed_points_free_their_data_and_kept_points_keep_theirs(repo: Repository) -> None:
    shared = make_files(1, count=4)
    old = {**shared, **make_files(2, count=6)}
    new = {**shared, **make_files(3, count=6)}
    old_id, new_id = _point(repo, old), _point(repo, new)

    result = run_maintenance_task(_task([old_id]), repo)

    assert result.state == "success", result.error
    assert result.output == {"deleted": [old_id], "missing": []}
    assert result.stats["points_removed"] == 1
    assert result.stats["bytes_reclaimed"] > 0 and result.stats["packs_deleted"] > 0
    assert result.stats["bytes_after"] < result.stats["bytes_before"]
    assert result.stats["repository_bytes"] == result.stats["bytes_after"]
    assert [p.id for p in repo.list_restore_points()] == [new_id]
    # the shared files, first stored for the removed point, are still whole
    assert read_files(repo, repo.load_restore_point(new_id).root) == new
    assert repo.check(read_data=True).ok


def test_a_point_already_gone_counts_as_removed(repo: Repository) -> None:
    point_id = _point(repo, make_files(4, count=3))
    repo.delete_restore_point(point_id)  # an earlier, interrupted attempt got this far
    result = run_maintenance_task(_task([point_id]), repo)
    assert result.state == "success"
    assert result.output == {"deleted": [], "missing": [point_id]}


def test_space_waits_for_a_writer_active_at_mark(repo: Repository) -> None:
    keep = _point(repo, make_files(5, count=3))
    gone = _point(repo, make_files(6, count=6))
    writer = repo.open_writer("slow backup")  # a backup in progress during the mark
    try:
        result = run_maintenance_task(_task([gone]), repo)
    finally:
        writer.close()
    assert result.state == "success"
    assert result.stats["packs_deleted"] == 0 and result.stats["gc_waiting"] == 1
    # the next maintenance frees it
    later = run_maintenance_task(_task([]), repo)
    assert later.stats["packs_deleted"] > 0 and later.stats["gc_waiting"] == 0
    assert [p.id for p in repo.list_restore_points()] == [keep]
