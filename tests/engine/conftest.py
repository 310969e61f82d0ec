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
