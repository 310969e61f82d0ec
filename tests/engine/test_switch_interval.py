"""A backup shortens the interpreter's switch interval while it runs, and only then."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.engine.backup import BackupFailed, run_backup
from ferryman.engine.options import BackupOptions
from ferryman.engine.switch_interval import SWITCH_INTERVAL, shorter_switch_interval
from ferryman.repository import Repository
from ferryman.sources.local import LocalSource


@pytest.fixture
def default_interval() -> Iterator[float]:
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default
    try:
        yield 0.005
    finally:
        sys.setswitchinterval(saved)


def test_a_backup_hands_the_gil_over_sooner_only_while_it_runs(
    repo: Repository, tmp_path: Path, default_interval: float
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    seen: list[float] = []
    run_backup(
        LocalSource(src),
        repo,
        BackupOptions(share="s", progress_interval=0.0),
        progress=lambda _event: seen.append(sys.getswitchinterval()),
    )
    assert seen and all(s == pytest.approx(SWITCH_INTERVAL, rel=0.05) for s in seen)
    assert sys.getswitchinterval() == pytest.approx(default_interval, rel=0.05)


def test_a_failed_backup_restores_it(
    repo: Repository, tmp_path: Path, default_interval: float
) -> None:
    with pytest.raises(BackupFailed, match="cannot open source"):
        run_backup(LocalSource(tmp_path / "missing"), repo, BackupOptions(share="s"))
    assert sys.getswitchinterval() == pytest.approx(default_interval, rel=0.05)


def test_overlapping_backups_restore_it_when_the_last_ends(default_interval: float) -> None:
    first, second = shorter_switch_interval(), shorter_switch_interval()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL, rel=0.05)
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(default_interval, rel=0.05)


def test_a_shorter_interval_set_by_the_process_is_kept() -> None:
    saved = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL / 5)
    try:
        with shorter_switch_interval():
            assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL / 5, rel=0.05)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL / 5, rel=0.05)
    finally:
        sys.setswitchinterval(saved)
