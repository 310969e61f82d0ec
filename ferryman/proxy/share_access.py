"""Open what a task names: the share's source (local path, S3 bucket, through a snapshot
provider) and, for restores, an S3 bucket target."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

from ferryman.proxy.protocol import ShareSpec
from ferryman.sources.base import Source


class ShareUnavailable(Exception):
    """The share cannot be read from this proxy; ``str()`` is fit for a user."""


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def s3_source(url: str, credentials: dict[str, str] | None) -> Any:
    """An ``S3Source`` with the share's keys (else the proxy's AWS environment)."""
    from ferryman.sources.s3 import S3Source

    creds = credentials or {}
    try:
        return S3Source.from_url(
            url, access_key=creds.get("access_key"), secret_key=creds.get("secret_key")
        )
    except ValueError as exc:
        raise ShareUnavailable(str(exc)) from exc


def open_source(
    share: ShareSpec, task_id: int, state_dir: Path, stop: threading.Event | None = None
) -> Source:
    """The source a backup task reads (a snapshot of it when the share names a provider);
    ``stop``, the task's cancel request, cuts short an SMB source's reconnection waits."""
    if is_s3(share.url):
        return s3_source(share.url, share.credentials)  # type: ignore[no-any-return]
    if share.url.startswith("smb://"):
        from ferryman.proxy.smb_access import SmbShareError, smb_source

        try:
            return smb_source(share, stop)
        except SmbShareError as exc:
            raise ShareUnavailable(str(exc)) from exc
    if not os.path.isdir(share.url):
        raise ShareUnavailable(f"share '{share.name}': {share.url} is not a reachable folder")
    from ferryman.sources.local import LocalSource

    if not share.snapshot:
        return LocalSource(share.url)
    from ferryman.sources.snapshots import (
        SnapshotError,
        SnapshotScope,
        SnapshotSource,
        make_provider,
    )

    try:
        provider = make_provider(share.url, share.snapshot)
    except (SnapshotError, KeyError) as exc:
        raise ShareUnavailable(f"share '{share.name}': snapshot provider: {exc}") from exc
    scope = SnapshotScope(share.id, task_id, str(state_dir / "snapshots"))
    return SnapshotSource(share.url, provider, scope)


def top_level_names(source: Source) -> list[str]:
    """Names at the root of a source (for the "rest" partition of a share)."""
    root = source.open_root()
    try:
        return [os.fsdecode(n) for n in root.names()]
    finally:
        root.release()


def snapshot_report(source: Source) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """What the snapshot step did (for the task's statistics) and warnings about it."""
    report = getattr(source, "report", None)
    if report is None:
        return None, []
    warnings = [
        {"path": path, "reason": "leftover snapshot of an interrupted run removed"}
        for path in report.leftovers_removed
    ]
    warnings += [
        {"path": report.path or "(snapshot)", "reason": f"leftover snapshot not removed: {error}"}
        for error in report.leftovers_failed
    ]
    if report.remove_error:
        warnings.append({"path": report.path, "reason": report.remove_error})
    return dataclasses.asdict(report), warnings


def restore_into_bucket(
    repo: Any,
    point_id: str,
    target_url: str,
    paths: list[bytes],
    share: ShareSpec | None,
    cancel: Any,
    overwrite: str = "replace",
) -> Any:
    """Restore into ``s3://bucket/prefix`` (the share's keys when it is an S3 share)."""
    from ferryman.sources.s3_restore import BucketRestoreFailed, restore_to_bucket

    credentials = share.credentials if share is not None and is_s3(share.url) else None
    target = s3_source(target_url, credentials)
    try:
        return restore_to_bucket(repo, point_id, target, paths, cancel, overwrite=overwrite)
    except BucketRestoreFailed as exc:
        raise ShareUnavailable(str(exc)) from exc


S3_READERS = 16  # GETs wait on the network, not the CPU: keep many in flight


def reader_threads(source: Source, default: int) -> int:
    """Saver workers for a source: object reads want more in flight than there are cores."""
    from ferryman.sources.s3 import S3Source

    return max(default, S3_READERS) if isinstance(source, S3Source) else default
