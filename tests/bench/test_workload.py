"""The benchmark harness: workload building, the daily change, the memory sampler."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.daily_change import DailyChange, apply_daily_change
from bench.synthetic import MiB, image_blocks
from bench.tree_compare import compare_trees
from bench.tree_memory import TreeMemorySampler, descendants, harness_processes, tree_rss_bytes
from bench.workload import IMAGE_PATH, RANDOM_PATH, WorkloadSpec, build_workload, copy_share


def _make_source(root: Path) -> Path:
    """A small tree of "real" files: 30 folders, 600 small files, a symlink."""
    for d in range(30):
        folder = root / f"top{d % 3}" / f"dir{d:02d}"
        folder.mkdir(parents=True)
        for f in range(20):
            (folder / f"file{f:02d}.txt").write_bytes(f"{d} {f} ".encode() * (f * 7 + 1))
    (root / "top0" / "link").symlink_to("dir00/file00.txt")
    return root


@pytest.fixture(scope="module")
def tiny_workload(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp_path = tmp_path_factory.mktemp("tiny")
    source = _make_source(tmp_path / "source")
    spec = WorkloadSpec("tiny", 10_000_000, 1_000, 2 * MiB, (("real", str(source)),))
    return build_workload(tmp_path / "workload", spec)


CHANGE = DailyChange(append_fraction=0.05, delete_count=10, add_count=20, image_append_bytes=MiB)


def test_workload_holds_the_sources_and_big_files(tiny_workload) -> None:  # type: ignore[no-untyped-def]
    share = tiny_workload.share
    assert (share / IMAGE_PATH).stat().st_size == 2 * MiB
    assert (share / RANDOM_PATH).stat().st_size == 2 * MiB
    assert (share / "real/top0/link").is_symlink()
    assert tiny_workload.stats.files == 600 + 2
    assert tiny_workload.keep.small == 1.0  # smaller than the target: nothing trimmed


def test_workload_is_trimmed_deterministically(tmp_path: Path) -> None:
    source = _make_source(tmp_path / "source")
    spec = WorkloadSpec("trim", 4 * MiB + 60_000, 300, 2 * MiB, (("real", str(source)),))
    a = build_workload(tmp_path / "a", spec)
    b = build_workload(tmp_path / "b", spec)
    assert 100 < a.stats.files < 500
    assert compare_trees(a.share, b.share).identical


def test_image_is_half_zero_quarter_random_quarter_text() -> None:
    blocks = list(image_blocks(8 * MiB, seed=7))
    zero = [b for b in blocks if not any(b)]
    text = [b for b in blocks if any(b) and b.isascii()]
    assert len(blocks) == 8 and len(zero) == 4 and len(text) == 2
    assert b"".join(blocks) == b"".join(image_blocks(8 * MiB, seed=7))


def test_daily_change_is_deterministic(tiny_workload, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = copy_share(tiny_workload, tmp_path / "a")
    b = copy_share(tiny_workload, tmp_path / "b")
    report_a = apply_daily_change(a, CHANGE)
    report_b = apply_daily_change(b, CHANGE)
    assert report_a.to_json() == report_b.to_json()
    assert compare_trees(a, b).identical


def test_daily_change_does_what_it_says(tiny_workload, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    share = copy_share(tiny_workload, tmp_path / "copy")
    original = tiny_workload.share
    report = apply_daily_change(share, CHANGE)
    assert len(report.appended) == 30  # 5% of the 600 small files (the 2 MiB ones are large)
    assert len(report.deleted) == 10 and len(report.added) == 20
    assert not set(report.appended) & set(report.deleted)
    ((old_dir, new_dir),) = report.renamed
    assert not (share / old_dir).exists() and (share / new_dir).is_dir()

    def now(rel: str) -> Path:  # where a path of the original is after the rename
        return share / (new_dir + rel[len(old_dir) :] if rel.startswith(old_dir + "/") else rel)

    for rel in report.appended:
        before = (original / rel).read_bytes()
        after = now(rel).read_bytes()
        assert len(after) > len(before) and after.startswith(before)
    for rel in report.deleted:
        assert not now(rel).exists()
    for rel in report.added:
        assert now(rel).stat().st_size > 0
    image = share / IMAGE_PATH
    assert image.stat().st_size == 3 * MiB
    assert image.read_bytes()[: 2 * MiB] == (original / IMAGE_PATH).read_bytes()
    diff = compare_trees(original, share, content=False)
    assert len(diff.extra) >= 20 and len(diff.missing) >= 10


_TOUCH = "import time; b = bytearray({mib} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
_CHILD = f"""
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "{_TOUCH.format(mib=60)}; time.sleep(30)"])
{_TOUCH.format(mib=40)}
print(grandchild.pid, flush=True)
time.sleep(30)
"""


def test_sampler_measures_the_whole_child_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        assert descendants([child.pid]) >= {child.pid, grandchild}
        deadline = time.monotonic() + 10
        while tree_rss_bytes([child.pid]) < 100 * MiB and time.monotonic() < deadline:
            time.sleep(0.05)
        with TreeMemorySampler(harness_processes, interval=0.02) as sampler:
            time.sleep(0.2)
        assert sampler.samples >= 3
        assert sampler.peak_bytes >= 100 * MiB  # 40 + 60 MiB touched, plus two interpreters
        assert sampler.peak_processes >= 2  # the child and its child
    finally:
        for pid in descendants([child.pid]) - {child.pid}:
            os.kill(pid, 9)
        child.kill()
        child.wait()


_FORKED = f"""
import os, time
{_TOUCH.format(mib=100)}
if os.fork() == 0:
    time.sleep(30)
    os._exit(0)
print(1, flush=True)
time.sleep(30)
"""


def test_a_forked_child_does_not_count_its_parent_s_memory_twice() -> None:
    """Pages a fork shares with its parent count once (PSS), not once per process."""
    parent = subprocess.Popen([sys.executable, "-c", _FORKED], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline()
        tree = descendants([parent.pid])
        assert len(tree) == 2
        with TreeMemorySampler(lambda: tree, interval=0.02) as sampler:
            time.sleep(0.1)
        assert 100 * MiB <= sampler.peak_bytes < 150 * MiB  # RSS summed: over 200 MiB
    finally:
        for pid in descendants([parent.pid]) - {parent.pid}:
            os.kill(pid, 9)
        parent.kill()
        parent.wait()


def test_sampler_leaves_out_excluded_trees() -> None:
    script = f"{_TOUCH.format(mib=80)}; print(1, flush=True); time.sleep(30)"
    other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline()
        with TreeMemorySampler(harness_processes, interval=0.02) as everything:
            time.sleep(0.1)
        with TreeMemorySampler(lambda: harness_processes([other.pid]), interval=0.02) as mine:
            time.sleep(0.1)
        assert everything.peak_bytes >= 80 * MiB
        assert mine.peak_bytes < everything.peak_bytes - 70 * MiB
    finally:
        other.kill()
        other.wait()


_SPINNING_GRANDCHILD = """
import os, subprocess, sys, time
spin = "import time\\nwhile time.process_time() < 0.4: pass\\ntime.sleep(30)"
grandchild = subprocess.Popen([sys.executable, "-c", spin])
print(grandchild.pid, flush=True)
time.sleep(30)
"""


def test_sampler_counts_the_cpu_of_processes_nobody_waits_for() -> None:
    """A worker forked by a fork server is no child of the process that waits: its CPU
    seconds come from the samples (0.4 s spent by a grandchild, then idle)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SPINNING_GRANDCHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        deadline = time.monotonic() + 20  # 0.4 s of CPU, however loaded the machine
        with TreeMemorySampler(lambda: descendants([child.pid]), 0.02, cpu=True) as sampler:
            while sampler.cpu_by_pid.get(grandchild, 0.0) < 0.38 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert sampler.cpu_by_pid[grandchild] >= 0.38
        assert sampler.cpu_by_pid[child.pid] < 0.3  # the waiting parent spends next to none
    finally:
        for pid in descendants([child.pid]) - {child.pid}:
            os.kill(pid, 9)
        child.kill()
        child.wait()
