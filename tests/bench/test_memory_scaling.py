"""The memory-scaling bench's repository B: real blobs through the writer, kept and reused."""

from __future__ import annotations

from pathlib import Path

from bench.engine.bench_memory_scaling import FILL_BLOB_SIZE, PASSPHRASE, cached_fill, summarize
from ferryman.repository import Repository, open_backend
from ferryman.repository.blob import KIND_DATA


def test_filled_repository_holds_the_blobs_and_is_reused(tmp_path: Path) -> None:
    dest, info = cached_fill(1500, 32, tmp_path)
    assert not info["reused"]
    assert info["blobs"] == 1501  # the blobs asked for and the restore points' empty root
    assert info["packs"] > 1 and info["restore_points"] == 1
    repo = Repository.open(
        open_backend(str(dest / "repo")), PASSPHRASE, cache_dir=tmp_path / "other-cache"
    )
    try:
        assert repo.sync_index() == info["segments"]  # a cold cache finds every blob again
        assert repo.index_cache.count() == 1501
        data = next(e for e in repo.index_cache.iter_entries() if e.kind == KIND_DATA)
        assert len(repo.get_blob(data.blob_id)) == FILL_BLOB_SIZE  # stored, readable
    finally:
        repo.close()
    again_dest, again = cached_fill(1500, 32, tmp_path)
    assert again_dest == dest and again["reused"] and again["blobs"] == 1501
    _, other = cached_fill(1000, 32, tmp_path)  # other parameters: another repository
    assert not other["reused"] and other["blobs"] == 1001


def test_ratio_verdict_takes_the_worse_estimator() -> None:
    runs = [
        {"repo": "A", "tree_pss_mb": 100.0, "total_rss_mb": 110.0},
        {"repo": "A", "tree_pss_mb": 120.0, "total_rss_mb": 130.0},
        {"repo": "A", "tree_pss_mb": 104.0, "total_rss_mb": 114.0},
        {"repo": "B", "tree_pss_mb": 105.0, "total_rss_mb": 115.0},
        {"repo": "B", "tree_pss_mb": 118.0, "total_rss_mb": 128.0},
        {"repo": "B", "tree_pss_mb": 115.0, "total_rss_mb": 125.0},
    ]
    s = summarize(runs, ["A", "B"])["B"]
    assert abs(s["pss_ratio_min"] - 1.05) < 1e-9
    assert abs(s["pss_ratio_median"] - 115 / 104) < 1e-9  # 1.106: over the target
    assert not s["met"]
