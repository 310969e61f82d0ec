"""Running provider tools and user commands: timeouts, whole process groups, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from ferryman.sources.snapshots.base import SnapshotError, excerpt


def run(
    argv: Sequence[str],
    what: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv`` and return its stdout; ``SnapshotError`` naming ``what`` on failure.

    The command runs in its own process group so a timeout kills everything it
    started (a shell script's children included), not only the shell.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
    except OSError as exc:
        raise SnapshotError(f"{what}: cannot run {argv[0]!r}: {exc.strerror}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SnapshotError(f"{what}: no answer after {timeout:g} s (killed)") from None
    if proc.returncode != 0:
        detail = excerpt(err) or excerpt(out) or "no output"
        raise SnapshotError(f"{what} failed (exit status {proc.returncode}): {detail}")
    return out.decode("utf-8", "surrogateescape")


def shell(
    command: str,
    what: str,
    timeout: float,
    env: Mapping[str, str],
    args: Sequence[str] = (),
) -> str:
    """Run a user's command line with ``/bin/sh -c`` (``args`` become ``$1``, ``$2``...)."""
    return run(["/bin/sh", "-c", command, "ferryman-snapshot", *args], what, timeout, env)
