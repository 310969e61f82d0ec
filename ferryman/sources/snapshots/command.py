"""command: any other storage (ZFS, LVM, a NAS array's CLI or API) through two commands.

The create command runs with ``/bin/sh -c``; the last non-empty line it prints
on stdout is the folder to back up. The delete command receives that folder as
``$1`` and in ``FERRYMAN_SNAPSHOT_PATH``. Both also get ``FERRYMAN_SHARE_PATH``,
``FERRYMAN_SNAPSHOT_NAME`` (``ferryman-s<share>-t<task>``, a name the scripts
can give the snapshot), ``FERRYMAN_SHARE_ID`` and ``FERRYMAN_TASK_ID``.

Each snapshot is recorded in the proxy's state folder (``<name>.path``, written
before the create command runs and completed with the path after) with a lock
held while the task runs; a record whose lock is free at the start of a later
task of the share is a leftover: the delete command is run for it (with an
empty path when the task died while creating; the name still identifies it).
Example scripts: ``docs/snapshots/``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ferryman.sources.snapshots import commands
from ferryman.sources.snapshots.base import Leftovers, LiveLock, SnapshotError, SnapshotScope

log = logging.getLogger(__name__)

TIMEOUT = 600.0


def _env(share_path: str, scope_name: str, scope: SnapshotScope, path: str) -> dict[str, str]:
    return {
        "FERRYMAN_SHARE_PATH": share_path,
        "FERRYMAN_SNAPSHOT_NAME": scope_name,
        "FERRYMAN_SHARE_ID": str(scope.share_id),
        "FERRYMAN_TASK_ID": str(scope.task_id),
        "FERRYMAN_SNAPSHOT_PATH": path,
    }


@dataclass
class CommandSnapshot:
    path: str
    description: str
    provider: CommandProvider
    scope: SnapshotScope
    lock: LiveLock
    record: str

    def remove(self) -> None:
        """Run the delete command, then forget the record (kept for a retry on failure)."""
        try:
            self.provider.delete(self.scope, self.scope.name(), self.path)
            os.unlink(self.record)
        finally:
            self.lock.release()


class CommandProvider:
    """Snapshots made and removed by the administrator's commands."""

    name = "command"

    def __init__(self, share_path: str, create: str, delete: str, timeout: float = TIMEOUT) -> None:
        if not create.strip() or not delete.strip():
            raise SnapshotError("the command snapshot provider needs a create and a delete command")
        self.share_path = share_path
        self.create_command = create
        self.delete_command = delete
        self.timeout = timeout

    def _records(self, scope: SnapshotScope) -> str:
        return os.path.join(scope.state_dir, "snapshots")

    def delete(self, scope: SnapshotScope, name: str, path: str) -> None:
        """Run the delete command for one snapshot."""
        commands.shell(
            self.delete_command,
            f"snapshot delete command for {path or name}",
            self.timeout,
            _env(self.share_path, name, scope, path),
            [path],
        )

    def remove_leftovers(self, scope: SnapshotScope) -> Leftovers:
        """Run the delete command for records of this share whose task died."""
        folder = self._records(scope)
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return Leftovers()
        pattern = scope.pattern()
        done = Leftovers()
        for entry in names:
            name, ext = os.path.splitext(entry)
            if ext != ".path" or not pattern.match(name):
                continue
            record = os.path.join(folder, entry)
            lock = LiveLock(os.path.join(folder, name + ".lock"))
            if not lock.acquire():
                continue
            try:
                with open(record, encoding="utf-8", errors="surrogateescape") as f:
                    path = f.read().strip()
                self.delete(scope, name, path)
                os.unlink(record)
            except SnapshotError as exc:
                done.failed.append(str(exc))  # the record stays: tried again next time
                continue
            finally:
                lock.release()
            log.info("removed leftover snapshot %s", path or name)
            done.removed.append(path or name)
        return done

    def create(self, scope: SnapshotScope) -> CommandSnapshot:
        """Run the create command; its last stdout line is the folder to read."""
        folder = self._records(scope)
        name = scope.name()
        lock = LiveLock(os.path.join(folder, name + ".lock"))
        if not lock.acquire():
            raise SnapshotError(f"snapshot {name} is in use by another process")
        record = os.path.join(folder, name + ".path")
        try:
            with open(record, "w", encoding="utf-8") as f:
                f.write("")
            out = commands.shell(
                self.create_command,
                f"snapshot create command for {self.share_path}",
                self.timeout,
                _env(self.share_path, name, scope, ""),
            )
            lines = [line.strip() for line in out.splitlines() if line.strip()]
            path = lines[-1] if lines else ""
            with open(record, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(path)
            if not path or not os.path.isdir(path):
                shown = repr(path) if path else "nothing"
                raise SnapshotError(
                    f"snapshot create command for {self.share_path} printed {shown} "
                    "instead of the path of a folder on its last line"
                )
        except BaseException:
            lock.release(unlink=False)  # the record stays: the next run deletes what was made
            raise
        return CommandSnapshot(path, f"snapshot {path}", self, scope, lock, record)
