"""Fixtures for repository tests: small local repositories, and buckets on the shared
moto S3 server (``s3_endpoint`` in tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferryman.repository import ChunkerParams, Repository, open_backend

PASSPHRASE = "correct horse battery staple"
SMALL_CHUNKS = ChunkerParams(avg_size=8192, min_size=2048, max_size=32768)
FAST_SCRYPT = 1 << 10


@pytest.fixture
def repo_url(tmp_path: Path) -> str:
    return str(tmp_path / "repo")


@pytest.fixture
def repo(tmp_path: Path, repo_url: str) -> Iterator[Repository]:
    r = Repository.init(
        open_backend(repo_url),
        PASSPHRASE,
        chunker=SMALL_CHUNKS,
        scrypt_n=FAST_SCRYPT,
        cache_dir=tmp_path / "cache",
    )
    yield r
    r.close()


@pytest.fixture
def s3_url(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test, as an s3:// URL users would write."""
    import boto3

    bucket = "ferryman-" + request.node.name.lower().replace("_", "-").replace("[", "-")[:40]
    bucket = "".join(c for c in bucket if c.isalnum() or c == "-").strip("-")
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=bucket)
    return (
        f"s3://{bucket}/repo?endpoint={s3_endpoint}&region=us-east-1"
        "&access_key=test&secret_key=test"
    )


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir(exist_ok=True)
    return path


def reopen(url: str, cache: Path | None = None) -> Repository:
    return Repository.open(open_backend(url), PASSPHRASE, cache_dir=cache)


__all__ = ["FAST_SCRYPT", "PASSPHRASE", "SMALL_CHUNKS", "reopen", "shutil"]
