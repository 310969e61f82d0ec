"""The cluster benchmarks' arithmetic, tables, address plan and options (nothing timed)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pytest

from bench.cluster import dispatcher, scaleout
from bench.cluster.figures import (
    ScaleRun,
    format_table,
    gaps_ms,
    percentile,
    scale_rows,
    scale_table,
)
from bench.cluster.netns import address_plan, tbf_args
from bench.cluster.section import SAVED, parse_cluster, print_and_save

MB = 1_000_000


def test_percentile_interpolates_between_ranks() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    assert percentile(values, 50) == 25.0
    assert percentile(values, 0) == 10.0 and percentile(values, 100) == 40.0
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0-100"):
        percentile([1.0], 101)


def test_efficiency_is_throughput_over_n_times_one_proxy() -> None:
    runs = [
        ScaleRun(1, 60.0, 240 * MB),  # 4 MB/s
        ScaleRun(2, 30.0, 240 * MB),  # 8 MB/s: perfect
        ScaleRun(4, 20.0, 240 * MB),  # 12 MB/s: 0.75 of 16
        ScaleRun(3, 20.0, 240 * MB, status="failed"),  # 12 MB/s = 1.0 of 12, but failed
    ]
    rows = {r.proxies: r for r in scale_rows(runs)}
    assert [r.proxies for r in scale_rows(runs)] == [1, 2, 3, 4]
    assert rows[1].efficiency == 1.0 and rows[1].passed
    assert rows[2].speed_up == 2.0 and rows[2].efficiency == 1.0 and rows[2].passed
    assert rows[4].speed_up == 3.0 and rows[4].efficiency == 0.75 and not rows[4].passed
    assert rows[3].efficiency == pytest.approx(1.0) and not rows[3].passed
    assert scale_rows([ScaleRun(1, 10.0, 80 * MB), ScaleRun(2, 6.25, 80 * MB)])[1].passed  # 0.8


def test_scale_out_needs_the_one_proxy_baseline() -> None:
    with pytest.raises(ValueError, match="one-proxy run"):
        scale_rows([ScaleRun(2, 10.0, MB)])


def test_scale_table_reads_as_printed() -> None:
    rows = scale_rows([ScaleRun(1, 60.0, 240 * MB), ScaleRun(2, 40.0, 240 * MB, status="failed")])
    text = format_table(scale_table(rows)).splitlines()
    header = "proxies seconds MB/s speed-up efficiency target >= 0.8"
    assert text[0].split() == header.split()
    assert text[1].split() == ["1", "60.0", "4.00", "1.00x", "1.000", "pass"]
    assert text[2].split() == ["2", "40.0", "6.00", "1.50x", "0.750", "miss", "(failed)"]
    assert len({len(line) for line in text[:2]}) == 1  # columns aligned


def test_gaps_from_one_task_end_to_the_next_start() -> None:
    started = [100.0, 100.530, 101.100]
    ended = [100.500, 101.000, 101.600]
    assert gaps_ms(ended, started) == pytest.approx([30.0, 100.0])
    with pytest.raises(ValueError, match="before task 0 ended"):
        gaps_ms([100.5, 101.0], [100.0, 100.4])  # overlapping: not one slot
    with pytest.raises(ValueError, match="one entry per task"):
        gaps_ms([1.0], [1.0, 2.0])


def test_address_plan_names_fit_interfaces_and_stay_on_the_bridge_subnet() -> None:
    plan = address_plan(4)
    assert [link.namespace for link in plan] == [f"fm-bench-p{i}" for i in range(1, 5)]
    assert [link.address for link in plan] == [
        "10.77.0.11",
        "10.77.0.12",
        "10.77.0.13",
        "10.77.0.14",
    ]
    assert all(len(link.host_veth) <= 15 and len(link.ns_veth) <= 15 for link in address_plan(200))
    assert len({link.address for link in address_plan(200)}) == 200
    assert address_plan(200)[-1].address == "10.77.0.210"
    with pytest.raises(ValueError):
        address_plan(0)
    with pytest.raises(ValueError):
        address_plan(201)


def test_tbf_cap_parameters() -> None:
    args = tbf_args(40)
    assert args[:3] == ["tbf", "rate", "40mbit"]
    assert int(args[args.index("burst") + 1]) == 50_000  # 10 ms at 5 MB/s
    assert int(tbf_args(8)[4]) == 32 * 1024  # never below a few packets
    with pytest.raises(ValueError, match="positive"):
        tbf_args(0)


def test_cluster_selection() -> None:
    assert parse_cluster("all") == ["scaleout", "dispatcher"]
    assert parse_cluster("dispatcher,scaleout") == ["scaleout", "dispatcher"]
    assert parse_cluster("none") == [] and parse_cluster("") == []
    with pytest.raises(ValueError, match="unknown cluster benchmark 'scale'"):
        parse_cluster("scale")


def test_saved_figures_are_found_by_the_saved_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(results=tmp_path / "results", small=True)
    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    print_and_save({"queued": 10}, "REPORT", args, started, 0.5, "dispatcher")
    out = capsys.readouterr().out
    assert "REPORT" in out and "1-minute load average 0.5 before" in out
    (saved,) = [line[len(SAVED) :] for line in out.splitlines() if line.startswith(SAVED)]
    assert Path(saved) == tmp_path / "results" / "20260102T030405Z-dispatcher-small.json"
    figures = json.loads(Path(saved).read_text())
    assert figures["queued"] == 10 and figures["started"] == started.isoformat()
    assert figures["load_average"]["before"] == 0.5 and figures["args"]["small"] == "True"


def test_bad_options_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--proxies", "2,3"], ["--proxies", "one"]):
        with pytest.raises(SystemExit) as exit_info:
            scaleout.parse_args(argv)
        assert exit_info.value.code == 2
        assert "--proxies" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dispatcher.parse_args(["--queued", "10", "--tasks", "10"])
    assert "--tasks must be smaller" in capsys.readouterr().err
    small = dispatcher.parse_args(["--small"])
    assert (small.queued, small.tasks) == (1_000, 60)
    assert scaleout.parse_args([]).counts == [1, 2, 3, 4]
    quick = scaleout.parse_args(["--small"])
    assert (quick.counts, quick.share_mb) == ([1, 4], 60)


def test_share_is_equal_incompressible_folders_and_reused(tmp_path: Path) -> None:
    root = tmp_path / "share"
    size = scaleout.build_share(root, total_mb=1, parts=4)
    folders = sorted(p.name for p in root.iterdir())
    assert folders == ["part00", "part01", "part02", "part03"]
    sizes = {sum(f.stat().st_size for f in (root / d).iterdir()) for d in folders}
    assert len(sizes) == 1 and size == 4 * sizes.pop()
    data = (root / "part00" / "data0.bin").read_bytes()
    assert len(set(data)) > 250  # random bytes, not a pattern
    mtime = (root / "part00" / "data0.bin").stat().st_mtime_ns
    assert scaleout.build_share(root, total_mb=1, parts=4) == size
    assert (root / "part00" / "data0.bin").stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_dispatcher_report_against_targets() -> None:
    api = {"all": {"count": 10, "p50_ms": 5, "p90_ms": 9, "p99_ms": 150, "max_ms": 160}}
    result = {
        "queued": 10_000,
        "db": "sqlite",
        "nice": -10,
        "still_queued_after": 9_700,
        "freed_slot": {
            "gaps": 199,
            "median_ms": 32.0,
            "p90_ms": 60.0,
            "p99_ms": 90.0,
            "max_ms": 120.0,
            "task_median_s": 0.2,
            "under_api_load": {"gaps": 0},
        },
        "api_idle": api,
        "api_busy": {"all": {**api["all"], "p99_ms": 250}},
    }
    text, ok = dispatcher.report(result)
    assert not ok  # the busy phase's p99 misses
    assert "32.0 ms  <= 50 ms  pass" in text
    assert "250.0 ms  < 200 ms  miss" in text
    result["api_busy"] = api
    assert dispatcher.report(result)[1]
