"""Fixtures for repository tests: small local repositories and a real S3 server (moto)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server in its own process on loopback; FAILS (not skips) under CI=true."""
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=logf, stderr=logf, env=env
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                message = f"moto S3 server did not start: {log.read_text()[-2000:]}"
                if os.environ.get("CI") == "true":
                    pytest.fail(message)
                pytest.skip(message)
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


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
