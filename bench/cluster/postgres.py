"""A private PostgreSQL cluster for ``bench.cluster.dispatcher --db postgres``.

Made with the distribution's ``initdb`` in a folder of its own and started with
``pg_ctl`` on a free loopback port (as the ``postgres`` user when run as root,
since initdb refuses root), like the test suite's fixture; stopped and deleted
afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.tools.ferryman import free_port


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed or its cluster did not start."""


def _bindir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return os.path.dirname(candidates[-1])
    found = shutil.which("initdb")
    if found is None:
        raise PostgresUnavailable("initdb not found (apt-get install postgresql)")
    return os.path.dirname(found)


@contextmanager
def private_cluster(parent: Path | None = None) -> Iterator[str]:
    """Yield the URL of an empty database ``ferryman`` on a fresh private cluster."""
    bindir = _bindir()
    as_root = os.geteuid() == 0
    tmp = tempfile.mkdtemp(prefix="ferryman-bench-pg-", dir=parent)
    data = os.path.join(tmp, "data")
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(tmp, user="postgres")
    port = free_port()
    pg_ctl = [*prefix, f"{bindir}/pg_ctl", "-D", data]
    try:
        subprocess.run(
            [*prefix, f"{bindir}/initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        options = f"-k {tmp} -h 127.0.0.1 -p {port} -c max_connections=200"
        subprocess.run(
            [*pg_ctl, "-o", options, "-l", f"{tmp}/log", "-w", "start"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *prefix,
                f"{bindir}/createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                user,
                "ferryman",
            ],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip()
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        raise PostgresUnavailable(f"cannot start a cluster: {exc} {detail[:300]}") from exc
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/ferryman"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
