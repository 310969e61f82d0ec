"""Shared fixtures: a real PostgreSQL server, a real S3 server (moto) and a btrfs file
system on a loop device, for the tests that need them.

A private cluster is created with `initdb` in a temporary folder and started
with `pg_ctl` on a free loopback port (as the `postgres` user when running as
root, since initdb refuses root). Without PostgreSQL installed the tests that
need it are skipped locally and FAIL under CI (`CI=true`).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loopback_ports import ADDRESS_IN_USE, PortTaken, on_free_port
from s3_server import start_moto

# The files that take longest (seconds on a clean-clone run, 2 cores), longest first.
_LONG_FILES = (
    "integration/test_failover.py",  # ~170
    "integration/test_deploy.py",  # ~130
    "web/test_console_e2e.py",  # ~80
    "cli/test_end_to_end.py",  # ~55
    "repository/test_crash.py",  # ~50
    "engine/test_large_inputs.py",  # ~50
    "cli/test_schedules_retention.py",  # ~45
    "repository/test_concurrency.py",  # ~40
    "cli/test_observability.py",  # ~35
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`: `-n 3 --dist loadfile --no-loadscope-reorder`) the
    longest files come first, longest first, so the workers start on them and finish
    together instead of one worker running a two-minute file alone at the end. The order
    inside a file is kept; a plain `pytest` run keeps the collection order."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    here = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(here).as_posix() if item.path.is_relative_to(here) else ""
        return _LONG_FILES.index(name) if name in _LONG_FILES else len(_LONG_FILES)

    items.sort(key=rank)


def _pg_bin() -> str | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return os.path.dirname(candidates[-1])
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start a private PostgreSQL cluster; yields its base URL (`postgresql://user@127.0.0.1:PORT`)."""
    bindir = _pg_bin()
    if bindir is None:
        _unavailable("initdb not found (apt-get install postgresql)")
        return
    as_root = os.geteuid() == 0
    tmp = tempfile.mkdtemp(prefix="ferryman-pg-")
    data = os.path.join(tmp, "data")
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(tmp, user="postgres")
    log = os.path.join(tmp, "log")

    def start(port: int) -> int:
        logged = os.path.getsize(log) if os.path.exists(log) else 0
        options = f"-k {tmp} -h 127.0.0.1 -p {port} -c fsync=off -c max_connections=300"
        pg_ctl = [*prefix, f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", log]
        try:
            subprocess.run([*pg_ctl, "-w", "start"], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            with open(log, errors="replace") as f:
                if ADDRESS_IN_USE in f.read()[logged:]:
                    raise PortTaken(port) from None
            raise
        return port

    try:
        subprocess.run(
            [*prefix, f"{bindir}/initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        port = on_free_port(start)
    except (subprocess.CalledProcessError, FileNotFoundError, PortTaken) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(tmp, ignore_errors=True)
        _unavailable(f"cannot start a cluster: {exc} {detail.decode(errors='replace')[:300]}")
        return
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)


_counter = itertools.count()


@pytest.fixture
def postgres_database(postgres_server: str) -> Callable[[], str]:
    """A factory of fresh, empty databases on the shared cluster; returns their URLs."""
    import psycopg

    def create() -> str:
        name = f"t{os.getpid()}_{next(_counter)}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{postgres_server}/{name}"

    return create


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server in its own process on loopback; FAILS (not skips) under CI=true.

    Used by the S3 repository backend tests and the S3 source tests.
    """
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    proc, url = start_moto(log, env)
    yield url
    proc.terminate()
    proc.wait(10)


def _no_btrfs(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"btrfs on a loop device is required under CI: {reason}")
    pytest.skip(f"btrfs not available: {reason}")


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh btrfs file system on a loop device, mounted in a temporary folder."""
    if os.geteuid() != 0:
        _no_btrfs("needs root (losetup, mount)")
    for tool in ("mkfs.btrfs", "btrfs", "losetup", "mount"):
        if shutil.which(tool) is None:
            _no_btrfs(f"{tool} not found (apt-get install btrfs-progs)")
    base = tmp_path_factory.mktemp("btrfs")
    image, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(256 << 20)  # sparse: costs only what is written
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    attach = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True
    )
    if attach.returncode != 0:
        _no_btrfs(f"losetup: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        mounted = subprocess.run(["mount", device, str(mnt)], capture_output=True, text=True)
        if mounted.returncode != 0:
            _no_btrfs(f"mount: {mounted.stderr.strip()}")
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
