"""Reading many blobs with few requests: neighbouring records of a pack in one range GET."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ferryman.repository import blob, pack
from ferryman.repository.errors import BlobNotFound, ObjectNotFound
from ferryman.repository.index import IndexEntry

if TYPE_CHECKING:
    from ferryman.repository.repository import Repository


def read_blobs(
    repo: Repository, blob_ids: Iterable[bytes], *, max_gap: int, max_request: int
) -> Iterator[tuple[bytes, bytes]]:
    """See :meth:`Repository.get_blobs`."""
    by_pack: dict[bytes, list[IndexEntry]] = {}
    ids = list(dict.fromkeys(blob_ids))
    known = repo.index_cache.lookup_many(ids)  # one query per 500 ids
    for blob_id in ids:
        entry = known.get(blob_id) or repo.lookup(blob_id)  # a miss syncs the index
        if entry is None:
            raise BlobNotFound(f"blob {blob_id.hex()} is not in the repository index")
        by_pack.setdefault(entry.pack_id, []).append(entry)
    for entries in by_pack.values():
        entries.sort(key=lambda e: e.offset)
        run: list[IndexEntry] = []
        for entry in entries:
            end = entry.offset + entry.length
            if run and (
                entry.offset - (run[-1].offset + run[-1].length) > max_gap
                or end - run[0].offset > max_request
            ):
                yield from _read_run(repo, run)
                run = []
            run.append(entry)
        if run:
            yield from _read_run(repo, run)


def _read_run(repo: Repository, run: list[IndexEntry]) -> Iterator[tuple[bytes, bytes]]:
    first = run[0]
    if first.kind == blob.KIND_TREE:
        for entry in run:
            yield entry.blob_id, repo.get_blob(entry.blob_id)
        return
    name = pack.pack_name(first.kind, first.pack_hex)
    start, end = first.offset, run[-1].offset + run[-1].length
    try:
        window = repo.backend.get_range(name, start, end - start)
    except ObjectNotFound:
        for entry in run:  # moved by garbage collection: the slow path re-syncs
            yield entry.blob_id, repo.get_blob(entry.blob_id)
        return
    cipher = pack.pack_cipher(repo.keys.encryption, first.pack_hex)
    view = memoryview(window)
    for entry in run:
        record = view[entry.offset - start : entry.offset - start + entry.length]
        yield entry.blob_id, repo.decode_record(cipher, entry, record, name)
