"""Rebuild the index from the packs' own entry tables."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ferryman.repository import index, pack
from ferryman.repository.errors import CorruptObject, ObjectNotFound
from ferryman.repository.index import IndexEntry

if TYPE_CHECKING:
    from ferryman.repository.repository import Repository

log = logging.getLogger(__name__)


def list_packs(repo: Repository) -> dict[bytes, int]:
    """Every pack object present: pack id -> kind."""
    out: dict[bytes, int] = {}
    for prefix in pack.PREFIX_FOR_KIND.values():
        for name in repo.backend.list(prefix):
            parsed = pack.parse_pack_name(name)
            if parsed is not None:
                out[bytes.fromhex(parsed[1])] = parsed[0]
    return out


def table_entries(
    repo: Repository, packs: dict[bytes, int], skipping: str = "skipping pack"
) -> Iterator[list[IndexEntry]]:
    """The index entries of each of ``packs`` (pack id -> kind), in pack id order, read
    from its authenticated table (range reads). A pack whose table does not validate, or
    that is gone, is skipped with the warning ``"<skipping> <pack id>: <reason>"``."""
    for pid, kind in sorted(packs.items()):
        try:
            table = pack.read_table(repo.backend, repo.keys.encryption, kind, pid.hex())
        except (CorruptObject, ObjectNotFound) as exc:
            log.warning("%s %s: %s", skipping, pid.hex(), exc)
            continue
        yield IndexEntry.of_pack(pid, table)


def rebuild_index(repo: Repository) -> int:
    """Write fresh index segments covering every readable pack, then drop the old ones.

    Packs whose table is unreadable are skipped (and logged); ``check`` reports them.
    Must not run concurrently with garbage collection.  Returns the entry count.
    """
    old_segments = list(repo.backend.list(index.INDEX_PREFIX))
    batch: list[IndexEntry] = []
    total = 0
    for entries in table_entries(repo, list_packs(repo)):
        batch.extend(entries)
        if len(batch) >= index.MAX_ENTRIES_PER_SEGMENT:
            index.put_segment(repo.backend, repo.keys.encryption, batch)
            total += len(batch)
            batch = []
    if batch:
        index.put_segment(repo.backend, repo.keys.encryption, batch)
        total += len(batch)
    for name in old_segments:
        repo.backend.delete(name)
    repo.sync_index()
    return total
