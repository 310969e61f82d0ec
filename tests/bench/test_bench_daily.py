"""bench_daily's exit status: a daily restore point that does not restore as the changed
copy fails the run, also with ``--json`` (a script reading the JSON may not look)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench.engine import bench_daily
from ferryman.engine.restore import run_restore


def _share(root: Path) -> Path:
    share = root / "share"
    for d in ("docs/a", "docs/b", "src/pkg"):
        (share / d).mkdir(parents=True)
        for i in range(8):
            (share / d / f"f{i}.txt").write_bytes(f"{d} {i}\n".encode() * (50 + i))
    return share


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Any]]:
    work = tmp_path / "work"
    work.mkdir()
    argv = [str(_share(tmp_path)), "--work-dir", str(work), "--rounds", "1", "--verify"]
    status = bench_daily.main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_a_daily_run_that_restores_identically_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, rows = _run(tmp_path, capsys)
    assert [r["restore_identical"] for r in rows] == [True]
    assert status == 0


def test_a_restore_mismatch_exits_non_zero_with_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restored file damaged on disk after the (real) restore: the comparison finds it,
    the JSON says so and the exit status is 1."""

    def restore_then_damage(*args: Any, **kwargs: Any) -> Any:
        result = run_restore(*args, **kwargs)
        target = Path(args[2])
        victim = next(Path(d) / f for d, _, fs in os.walk(target) for f in sorted(fs))
        data = bytearray(victim.read_bytes())
        data[0] ^= 0xFF
        victim.write_bytes(bytes(data))
        return result

    monkeypatch.setattr(bench_daily, "run_restore", restore_then_damage)
    status, rows = _run(tmp_path, capsys)
    assert [r["restore_identical"] for r in rows] == [False]
    assert status == 1
