"""btrfs: a read-only subvolume snapshot of the share, made for the task and deleted after.

The share must be a btrfs subvolume. Snapshots are created in a folder on the
same file system (by default ``.ferryman-snapshots`` next to the share), named
``ferryman-s<share>-t<task>`` with a lock file beside each one (see
``base.LiveLock``). On a fresh snapshot inode numbers and ctimes are those of
the share, so change detection sees unchanged files as unchanged from one run
(one snapshot) to the next; only the device number differs, and it is not
compared.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ferryman.sources.snapshots import commands
from ferryman.sources.snapshots.base import Leftovers, LiveLock, SnapshotError, SnapshotScope

log = logging.getLogger(__name__)

DEFAULT_DIR = ".ferryman-snapshots"
TIMEOUT = 300.0


@dataclass
class BtrfsSnapshot:
    path: str
    description: str
    lock: LiveLock

    def remove(self) -> None:
        """``btrfs subvolume delete`` the snapshot; the lock is dropped even on failure
        (the proxy lives on: the next task of the share retries the delete)."""
        try:
            _delete(self.path)
        finally:
            self.lock.release()


def _delete(path: str) -> None:
    commands.run(["btrfs", "subvolume", "delete", path], f"deleting btrfs snapshot {path}", TIMEOUT)


class BtrfsProvider:
    """Snapshots of a btrfs subvolume."""

    name = "btrfs"

    def __init__(self, share_path: str, snapshot_dir: str | None = None) -> None:
        self.share_path = os.path.abspath(share_path)
        parent = os.path.dirname(self.share_path.rstrip("/")) or "/"
        self.snapshot_dir = os.path.abspath(snapshot_dir or os.path.join(parent, DEFAULT_DIR))

    def remove_leftovers(self, scope: SnapshotScope) -> Leftovers:
        """Delete this share's snapshots whose lock is free (their task died)."""
        try:
            names = os.listdir(self.snapshot_dir)
        except FileNotFoundError:
            return Leftovers()
        except OSError as exc:
            return Leftovers(failed=[f"cannot list {self.snapshot_dir}: {exc.strerror}"])
        pattern = scope.pattern()
        done = Leftovers()
        for name in sorted(names):
            if not pattern.match(name):
                continue
            path = os.path.join(self.snapshot_dir, name)
            lock = LiveLock(path + ".lock")
            if not lock.acquire():
                continue  # a running task of the same share (a partition) uses it
            try:
                _delete(path)
            except SnapshotError as exc:
                done.failed.append(str(exc))
                continue
            finally:
                lock.release()
            log.info("removed leftover snapshot %s", path)
            done.removed.append(path)
        return done

    def create(self, scope: SnapshotScope) -> BtrfsSnapshot:
        """``btrfs subvolume snapshot -r`` of the share into the snapshot folder."""
        try:
            os.makedirs(self.snapshot_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise SnapshotError(
                f"cannot create snapshot folder {self.snapshot_dir}: {exc.strerror}"
            ) from exc
        path = os.path.join(self.snapshot_dir, scope.name())
        lock = LiveLock(path + ".lock")
        if not lock.acquire():
            raise SnapshotError(f"snapshot {path} is in use by another process")
        try:
            commands.run(
                ["btrfs", "subvolume", "snapshot", "-r", self.share_path, path],
                f"btrfs snapshot of {self.share_path}",
                TIMEOUT,
            )
        except SnapshotError as exc:
            lock.release()
            if "cross-device" in str(exc).lower() or self.snapshot_dir in str(exc):
                raise SnapshotError(
                    f"{exc} — {self.snapshot_dir} is not on the share's btrfs file system; "
                    "name a folder on it with --snapshot btrfs:DIR"
                ) from exc
            raise
        except BaseException:
            lock.release()
            raise
        return BtrfsSnapshot(path, f"btrfs snapshot {path}", lock)
