"""Local and S3 backends behave the same; retries; URL parsing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferryman.repository import (
    Backend,
    ObjectNotFound,
    Repository,
    RetryingBackend,
    TransientBackendError,
    open_backend,
)
from ferryman.repository.backend.local import LocalBackend
from ferryman.repository.backend.s3 import S3Backend

from .conftest import FAST_SCRYPT, PASSPHRASE, SMALL_CHUNKS
from .snapshots import make_files, read_files, store_files


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return open_backend(str(tmp_path / "b"))
    url: str = request.getfixturevalue("s3_url")
    return open_backend(url)


def test_object_operations(backend: Backend) -> None:
    assert not backend.exists("data/ab/x")
    backend.put("data/ab/x", b"hello world")
    backend.put("data/cd/y", bytearray(b"second"))
    backend.put("config", memoryview(b"cfg"))
    assert backend.get("data/ab/x") == b"hello world"
    assert backend.get_range("data/ab/x", 6, 5) == b"world"
    assert backend.get_range("data/ab/x", 6, 100) == b"world"
    assert backend.size("data/cd/y") == 6
    assert backend.exists("config")
    assert sorted(backend.list("data/")) == ["data/ab/x", "data/cd/y"]
    assert sorted(backend.list("")) == ["config", "data/ab/x", "data/cd/y"]
    backend.put("data/ab/x", b"replaced")
    assert backend.get("data/ab/x") == b"replaced"
    backend.delete("data/ab/x")
    backend.delete("data/ab/x")  # idempotent
    with pytest.raises(ObjectNotFound):
        backend.get("data/ab/x")
    with pytest.raises(ObjectNotFound):
        backend.get_range("data/ab/x", 0, 1)
    with pytest.raises(ObjectNotFound):
        backend.size("data/ab/x")


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_names_that_escape_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        LocalBackend(tmp_path).put(name, b"x")


def test_local_put_leaves_no_temp_files(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path)
    b.put("keys/k", b"1")
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["k"]
    (tmp_path / "keys" / ".tmp-leftover").write_bytes(b"partial")
    assert list(b.list("keys/")) == ["keys/k"]


def test_s3_multipart_upload(s3_url: str) -> None:
    backend = open_backend(s3_url, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    data = os.urandom(11 << 20)
    backend.put("data/aa/big", data)
    assert backend.size("data/aa/big") == len(data)
    assert backend.get_range("data/aa/big", (5 << 20) - 3, 6) == data[(5 << 20) - 3 : (5 << 20) + 3]
    assert backend.get("data/aa/big") == data


def test_s3_url_parsing(s3_url: str) -> None:
    backend = open_backend(s3_url)
    assert isinstance(backend, RetryingBackend)
    inner = backend.inner
    assert isinstance(inner, S3Backend)
    assert inner.prefix == "repo/" and inner.bucket.startswith("ferryman-")
    assert "s3://" in inner.describe()
    with pytest.raises(ValueError):
        open_backend("relative/path")


def test_repository_on_s3(s3_url: str, tmp_path: Path) -> None:
    files = make_files(11, count=15)
    repo = Repository.init(
        open_backend(s3_url), PASSPHRASE, chunker=SMALL_CHUNKS, scrypt_n=FAST_SCRYPT
    )
    with repo.open_writer("t", pack_size=30_000) as w:
        point = w.save_restore_point(share="s3share", root=store_files(repo, w, files))
    repo.close()
    with Repository.open(open_backend(s3_url), PASSPHRASE, cache_dir=tmp_path / "c") as again:
        assert read_files(again, again.load_restore_point(point.id).root) == files
        assert again.check(read_data=True).ok


class _Flaky:
    """A backend double that fails transiently a given number of times."""

    def __init__(self, inner: Backend, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name == "describe":
            return attr

        def wrapped(*args: object) -> object:
            self.calls += 1
            if self.failures > 0:
                self.failures -= 1
                raise TransientBackendError("simulated 503")
            return attr(*args)

        return wrapped


def test_retrying_backend_retries_transient_errors(tmp_path: Path) -> None:
    flaky = _Flaky(LocalBackend(tmp_path), failures=3)
    backend = RetryingBackend(flaky, attempts=5, base_delay=0.001)  # type: ignore[arg-type]
    backend.put("config", b"x")
    assert flaky.calls == 4
    assert backend.get("config") == b"x"
    flaky.failures = 10
    with pytest.raises(TransientBackendError):
        backend.get("config")


def test_missing_objects_are_not_retried(tmp_path: Path) -> None:
    flaky = _Flaky(LocalBackend(tmp_path), failures=0)
    backend = RetryingBackend(flaky, attempts=5, base_delay=0.001)  # type: ignore[arg-type]
    with pytest.raises(ObjectNotFound):
        backend.get("nothing")
    assert flaky.calls == 1
