"""Backup from storage snapshots: a share names a provider; each task reads a snapshot.

Providers (one per module): ``btrfs`` (a read-only subvolume snapshot made for
the task), ``nas-dir:GLOB`` (the newest snapshot folder the NAS already made)
and ``command`` (the administrator's create and delete commands, for ZFS, LVM or
a NAS array's CLI). ``SnapshotSource`` wraps the share's ``LocalSource``: its
``snapshot()`` removes leftovers of interrupted runs, creates the snapshot,
yields a source reading it, and always removes it. Paths in the restore point
are relative to the share root, so a restore point made from a snapshot browses,
restores and feeds change detection exactly like one made from the live share.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ferryman.sources.local import LocalDir, LocalSource
from ferryman.sources.snapshots.base import (
    Snapshot,
    SnapshotError,
    SnapshotProvider,
    SnapshotScope,
)
from ferryman.sources.snapshots.btrfs import BtrfsProvider
from ferryman.sources.snapshots.command import CommandProvider
from ferryman.sources.snapshots.nas_dir import NasDirProvider

__all__ = [
    "PROVIDERS",
    "SnapshotError",
    "SnapshotScope",
    "SnapshotSource",
    "make_provider",
    "parse_snapshot",
]

log = logging.getLogger(__name__)

PROVIDERS = ("btrfs", "nas-dir", "command")


def parse_snapshot(
    spec: str | None, create: str | None = None, delete: str | None = None
) -> dict[str, Any] | None:
    """The stored form of ``--snapshot SPEC [--snapshot-create CMD --snapshot-delete CMD]``.

    ``btrfs`` or ``btrfs:DIR`` (where snapshots are made), ``nas-dir:GLOB``,
    ``command``. Raises ``ValueError`` with a message fit for a user.
    """
    if not spec:
        if create or delete:
            raise ValueError("--snapshot-create/--snapshot-delete need --snapshot command")
        return None
    kind, _, arg = spec.partition(":")
    if kind not in PROVIDERS:
        raise ValueError(f"unknown snapshot provider {kind!r} (one of: {', '.join(PROVIDERS)})")
    if kind != "command" and (create or delete):
        raise ValueError("--snapshot-create/--snapshot-delete only go with --snapshot command")
    if kind == "btrfs":
        if arg and not arg.startswith("/"):
            raise ValueError("btrfs:DIR needs an absolute folder")
        return {"provider": "btrfs", "dir": arg or None}
    if kind == "nas-dir":
        if not arg or arg.startswith("/") or ".." in arg.split("/"):
            raise ValueError(
                "nas-dir needs a pattern relative to the share, e.g. nas-dir:.zfs/snapshot/auto-*"
            )
        return {"provider": "nas-dir", "glob": arg}
    if arg:
        raise ValueError("use --snapshot command with --snapshot-create and --snapshot-delete")
    if not (create and create.strip()) or not (delete and delete.strip()):
        raise ValueError("--snapshot command needs --snapshot-create CMD and --snapshot-delete CMD")
    return {"provider": "command", "create": create, "delete": delete}


def make_provider(share_path: str, config: Mapping[str, Any]) -> SnapshotProvider:
    """The provider a share's stored snapshot configuration names."""
    kind = config.get("provider")
    if kind == "btrfs":
        return BtrfsProvider(share_path, config.get("dir"))
    if kind == "nas-dir":
        return NasDirProvider(share_path, str(config["glob"]))
    if kind == "command":
        return CommandProvider(share_path, str(config["create"]), str(config["delete"]))
    raise SnapshotError(f"unknown snapshot provider {kind!r}")


@dataclass
class SnapshotReport:
    """What the snapshot step did, for the task's statistics."""

    provider: str
    path: str = ""
    leftovers_removed: list[str] = field(default_factory=list)
    leftovers_failed: list[str] = field(default_factory=list)
    removed: bool = False
    remove_error: str | None = None


class SnapshotSource:
    """A share read through a snapshot: ``snapshot()`` yields the snapshot's source."""

    def __init__(self, share_path: str, provider: SnapshotProvider, scope: SnapshotScope) -> None:
        self.share = LocalSource(share_path)
        self.description = self.share.description
        self.provider = provider
        self.scope = scope
        self.report = SnapshotReport(provider.name)

    def open_root(self) -> LocalDir:
        """The live share (only used without ``snapshot()``, e.g. by a probe)."""
        return self.share.open_root()

    @contextmanager
    def snapshot(self) -> Iterator[LocalSource]:
        """Remove leftovers, create the snapshot, yield it, always remove it."""
        leftovers = self.provider.remove_leftovers(self.scope)
        self.report.leftovers_removed = leftovers.removed
        self.report.leftovers_failed = leftovers.failed
        snap: Snapshot = self.provider.create(self.scope)
        self.report.path = snap.path
        view = LocalSource(snap.path)
        view.description = f"{self.description} ({snap.description})"
        try:
            yield view
        finally:
            # a failed delete must not turn a good backup into a failed one: it is
            # reported, and the next task of the share retries it as a leftover
            try:
                snap.remove()
                self.report.removed = True
            except SnapshotError as exc:
                self.report.remove_error = str(exc)
                log.error("%s", exc)
