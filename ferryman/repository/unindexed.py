"""Packs that landed without an index segment, and the entries a writer adopts from them.

A writer publishes a pack's index segment only once the pack is durable, so a writer
that dies in between leaves packs that no segment lists (docs/format.md §13.1). Their
blobs are invisible to the index: the next attempt of the same task would store them
again. A writer resuming an interrupted task lists the packs present instead, reads the
entry table of each one the index does not know and that no garbage collection
condemned, and publishes a segment for them (§13.1, step 4a): the blobs count as
present again and are not sent twice.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import TYPE_CHECKING

from ferryman.repository.index import IndexEntry
from ferryman.repository.rebuild import list_packs, table_entries

if TYPE_CHECKING:
    from ferryman.repository.repository import Repository


def unindexed_packs(repo: Repository, condemned: Container[bytes]) -> dict[bytes, int]:
    """The packs present that the (synced) index does not list and that are not
    ``condemned``: pack id -> kind. One listing of ``data/`` and ``tree/`` and one
    scan of the index cache: meant for a resumed task, not for every writer."""
    present = list_packs(repo)
    if not present:
        return {}
    indexed = repo.index_cache.packs()
    return {
        pid: kind for pid, kind in present.items() if pid not in indexed and pid not in condemned
    }


def adoptable_entries(repo: Repository, packs: dict[bytes, int]) -> Iterator[list[IndexEntry]]:
    """The index entries of each of ``packs``, read from its authenticated table (a few
    small range reads per pack). A pack whose table does not validate is skipped with
    a warning: ``check`` reports it and garbage collection removes it."""
    return table_entries(repo, packs, skipping="not adopting unindexed pack")
