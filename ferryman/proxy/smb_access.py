"""What a proxy does with ``smb://`` shares: open the source, open a restore target, probe.

The password comes with the task or the probe request (the server decrypts the
share's stored secret for it); it is never logged or put in a message.
"""

from __future__ import annotations

import stat
import threading
import time
from typing import Any

from ferryman.proxy.protocol import ProbeRequest, ShareSpec
from ferryman.sources.base import SourceError
from ferryman.sources.smb import SmbDir, SmbSource
from ferryman.sources.smb_target import SmbRestoreTarget
from ferryman.sources.smb_url import SmbUrl, SmbUrlError, parse_smb_url


class SmbShareError(Exception):
    """The SMB share cannot be used from here; ``str()`` is fit for a user."""


def is_smb(url: str) -> bool:
    return url.startswith("smb://")


def _password(credentials: dict[str, str] | None, what: str) -> str:
    password = (credentials or {}).get("password")
    if password is None:
        raise SmbShareError(f"{what}: the server sent no password for this SMB share")
    return password


def smb_source(share: ShareSpec, stop: threading.Event | None = None) -> SmbSource:
    """The source of an smb:// share (connects when the backup opens it); ``stop`` is the
    task's cancel request, which ends a wait between reconnection attempts."""
    if getattr(share, "snapshot", None):
        raise SmbShareError(
            f"share '{share.name}': snapshot providers apply to local paths, not SMB shares"
        )
    try:
        password = _password(share.credentials, f"share '{share.name}'")
        return SmbSource(share.url, password, stop=stop)
    except SmbUrlError as exc:
        raise SmbShareError(f"share '{share.name}': {exc}") from exc


def _same_login(a: SmbUrl, b: SmbUrl) -> bool:
    return (a.host.lower(), a.port, a.share.lower(), a.username.lower()) == (
        b.host.lower(),
        b.port,
        b.share.lower(),
        b.username.lower(),
    )


def smb_restore_target(
    target: str, share: ShareSpec | None, stop: threading.Event | None = None
) -> SmbRestoreTarget:
    """A restore target on an SMB share: the restore point's own share (in place or another
    folder of it), logged in with that share's stored password."""
    try:
        url = parse_smb_url(target)
    except SmbUrlError as exc:
        raise SmbShareError(str(exc)) from exc
    if share is None or not is_smb(share.url) or not _same_login(url, parse_smb_url(share.url)):
        raise SmbShareError(
            f"no password is known for {url.display()}: restore into the SMB share the point "
            "was backed up from (same server, share and user), or to a local path"
        )
    password = _password(share.credentials, f"share '{share.name}'")
    return SmbRestoreTarget(url, password, stop=stop)


SAMPLE_BYTES = 4 << 20
SAMPLE_FILES = 50
SCAN_SECONDS = 30.0


def _sample(root: SmbDir) -> int:
    """Read up to SAMPLE_BYTES from the first files of the share root; bytes read."""
    done = 0
    for name in root.names()[:SAMPLE_FILES]:
        try:
            st = root.lstat(name)
            if not stat.S_ISREG(st.st_mode) or not st.st_size:
                continue
            f = root.open_file(name)
        except OSError:
            continue
        try:
            buf = bytearray(min(st.st_size, SAMPLE_BYTES - done))
            done += f.read_at(buf, 0)
        except OSError:
            pass
        finally:
            f.close()
        if done >= SAMPLE_BYTES:
            break
    return done


def _scan(root: SmbDir, budget: float) -> dict[str, Any] | None:
    """Files and bytes per top-level entry (one listing per folder); None over the budget."""
    deadline = time.monotonic() + budget
    top: dict[str, list[int]] = {}
    for name in root.names():
        files, size = 0, 0
        stack: list[tuple[SmbDir, bytes]] = [(root.retain(), name)]
        while stack:
            parent, entry = stack.pop()
            try:
                st = parent.lstat(entry)
                if stat.S_ISDIR(st.st_mode):
                    sub = parent.open_dir(entry)
                    stack.extend((sub.retain(), child) for child in sub.names())
                    sub.release()
                else:
                    files += 1
                    size += st.st_size
            except OSError:
                pass
            finally:
                parent.release()
            if time.monotonic() > deadline:
                for d, _ in stack:
                    d.release()
                return None
        top[name.decode("utf-8", "surrogateescape")] = [files, size]
    return {
        "files": sum(v[0] for v in top.values()),
        "bytes": sum(v[1] for v in top.values()),
        "top": top,
    }


def probe_share(request: ProbeRequest) -> tuple[float, float | None, dict[str, Any] | None]:
    """Log in, open the folder, time a metadata round trip and a short read.

    Returns ``(rtt seconds, throughput bytes/s or None, scan or None)``; raises
    ``SmbShareError``/``SourceError`` with a one-line reason.
    """
    # a probe measures the link as it is: a connection lost meanwhile fails it at once
    source = SmbSource(
        request.url,
        _password(request.credentials, "probe"),
        timeout=15.0,
        reconnect_delays=(),
        reply_timeout=15.0,
    )
    try:
        root = source.open_root()
        try:
            started = time.perf_counter()
            root.stat_self()
            rtt = time.perf_counter() - started
            started = time.perf_counter()
            done = _sample(root)
            elapsed = time.perf_counter() - started
            throughput = round(done / elapsed, 1) if done and elapsed > 0 else None
            scan = _scan(root, SCAN_SECONDS) if request.scan else None
        finally:
            root.release()
    finally:
        source.close()
    return rtt, throughput, scan


__all__ = [
    "SmbShareError",
    "SourceError",
    "is_smb",
    "probe_share",
    "smb_restore_target",
    "smb_source",
]
