"""Fixtures: a real repository on the local backend in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.repository import Repository, open_backend

PASSPHRASE = "engine-tests"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = Repository.init(
        open_backend(str(tmp_path / "repo")),
        PASSPHRASE,
        scrypt_n=1 << 10,
        cache_dir=tmp_path / "cache",
    )
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def restore_pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every restore worker pool started while the test runs."""
    from ferryman.engine import restore_procs

    pools: list[int] = []
    real_start = restore_procs.start_pool

    def start_pool(setup: restore_procs.WorkerSetup, processes: int) -> object:
        pools.append(processes)
        return real_start(setup, processes)

    monkeypatch.setattr(restore_procs, "start_pool", start_pool)
    return pools
