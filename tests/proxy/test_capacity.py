"""Capacity and capabilities a proxy reports."""

from __future__ import annotations

from ferryman.proxy import capabilities, capacity


def test_default_slots_follow_cores_and_memory(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert capacity.default_slots() >= 1
    monkeypatch.setattr(capacity, "available_memory", lambda: 700 * 1024**2)
    assert capacity.default_slots() == 1
    monkeypatch.setattr(capacity, "available_memory", lambda: 64 * 1024**3)
    monkeypatch.setattr("ferryman.proxy.capacity.os.sched_getaffinity", lambda pid: {0, 1, 2})
    assert capacity.default_slots() == 3


def test_capabilities_list_local_sources() -> None:
    detected = capabilities.detect()
    assert "local" in detected["sources"] and "local" in detected["repositories"]
    assert capabilities.addresses()


def test_share_probe_measures_round_trip_and_throughput(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from ferryman.proxy.probing import probe
    from ferryman.proxy.protocol import ProbeRequest

    (tmp_path / "a").write_bytes(b"x" * 100_000)
    os.mkfifo(tmp_path / "fifo")  # never read from (would block)
    result = probe(ProbeRequest(kind="share", target_id=1, url=str(tmp_path)))
    assert result.ok and result.rtt_ms is not None and (result.throughput or 0) > 0


def test_top_level_scan_counts_files_and_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ferryman.proxy.probing import top_level_scan

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"x" * 10)
    (tmp_path / "a" / "g").write_bytes(b"y" * 5)
    (tmp_path / "top").write_bytes(b"z")
    stats = top_level_scan(str(tmp_path))
    assert stats == {"files": 3, "bytes": 16, "top": {"a": [2, 15], "top": [1, 1]}}
