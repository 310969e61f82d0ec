"""Splitting a large share into balanced partitions of top-level entries."""

from __future__ import annotations

from ferryman.server.partitions import balance, plan_partitions


def test_small_or_unknown_shares_are_not_split() -> None:
    assert plan_partitions(None, 8, 100, 100) == []
    small = {"files": 10, "bytes": 50, "top": {"a": [5, 25], "b": [5, 25]}}
    assert plan_partitions(small, 8, 100, 100) == []
    single = {"files": 1000, "bytes": 5000, "top": {"a": [1000, 5000]}}
    assert plan_partitions(single, 8, 100, 100) == []


def test_partitions_are_balanced_and_cover_everything() -> None:
    top = {f"d{i}": [10 * (i + 1), 1000 * (i + 1)] for i in range(10)}
    stats = {
        "files": sum(v[0] for v in top.values()),
        "bytes": sum(v[1] for v in top.values()),
        "top": top,
    }
    parts = plan_partitions(stats, 4, 10_000, 10**9)
    assert len(parts) == 4
    assert sorted(n for p in parts for n in p) == sorted(top)
    loads = [sum(top[n][1] for n in p) for p in parts]
    assert max(loads) - min(loads) <= 1000 * 3  # within a few entries of each other


def test_count_is_bounded_by_entries_and_maximum() -> None:
    top = {"a": [1, 10**10], "b": [1, 10**10], "c": [1, 1]}
    parts = plan_partitions({"files": 3, "bytes": 2 * 10**10 + 1, "top": top}, 16, 10**6, 10**9)
    assert len(parts) == 3
    assert balance(top, 2, 2 * 10**10 + 1, 3) in (
        [["a", "c"], ["b"]],
        [["a"], ["b", "c"]],
        [["b"], ["a", "c"]],
        [["b", "c"], ["a"]],
    )
