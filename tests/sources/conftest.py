"""Fixtures shared by the source tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.repository import Repository, open_backend


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    """A new local repository (a cheap key derivation: tests only)."""
    r = Repository.init(
        open_backend(str(tmp_path / "repo")), "pw", scrypt_n=1 << 10, cache_dir=tmp_path / "cache"
    )
    try:
        yield r
    finally:
        r.close()
