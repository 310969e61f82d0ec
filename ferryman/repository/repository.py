"""The Repository: open/init, blob reads, writers, restore points, keys, maintenance."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyfastcdc import FastCDC

if TYPE_CHECKING:
    from ferryman.repository.check import CheckReport
    from ferryman.repository.gc import GCReport

from ferryman.repository import blob, crypto, keys, pack, scratch, tree
from ferryman.repository.backend.base import Backend, BackendStats, CountingBackend
from ferryman.repository.config import CONFIG_NAME, ChunkerParams, RepositoryConfig
from ferryman.repository.errors import (
    BlobNotFound,
    CorruptObject,
    NotARepository,
    ObjectNotFound,
    RepositoryExists,
)
from ferryman.repository.index import IndexEntry
from ferryman.repository.index_cache import IndexCache
from ferryman.repository.lease import DEFAULT_LEASE_TIMEOUT
from ferryman.repository.pack_buffers import fix_mmap_threshold
from ferryman.repository.restore_point import POINTS_PREFIX, RestorePoint, open_point
from ferryman.repository.writer import RepositoryWriter

# Tree packs kept in memory by a Repository (each up to the tree pack size, 4 MiB).
TREE_PACKS_IN_MEMORY = 3
PREFETCHED_LOCATIONS = 20_000


def new_chunker(params: ChunkerParams, seed: int) -> FastCDC:
    """A FastCDC chunker with ``params`` and the gear table keyed by ``seed``
    (``RepositoryKeys.chunker_seed``); saver processes build theirs with it."""
    return FastCDC(
        params.avg_size,
        min_size=params.min_size,
        max_size=params.max_size,
        normalized_chunking=params.normalized_chunking,  # type: ignore[arg-type]
        seed=seed,
    )


class Repository:
    """An opened (unlocked) repository.  Thread-safe for reads."""

    def __init__(
        self,
        backend: Backend,
        config: RepositoryConfig,
        master: bytes,
        slot_id: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    ) -> None:
        # Chunk-sized buffers go through this process from now on (a backup's or a
        # restore's): each gets its own mapping, returned when freed (see pack_buffers).
        fix_mmap_threshold()
        self.stats = BackendStats()
        self.backend: Backend = CountingBackend(backend, self.stats)
        self.config = config
        self.keys = crypto.RepositoryKeys.from_master(master)
        self._master = master
        self.slot_id = slot_id
        self.lease_timeout = lease_timeout
        self._temp_cache = cache_dir is None
        base = (
            Path(tempfile.mkdtemp(prefix="ferryman-cache-"))
            if cache_dir is None
            else Path(cache_dir)
        )
        self.cache_path = base / config.id
        (self.cache_path / "packs").mkdir(parents=True, exist_ok=True)
        self.index_cache = IndexCache(self.cache_path / "index.sqlite")
        scratch.remove_stale(self.cache_path)
        self._cache_base = base
        self._sync_lock = threading.Lock()
        self._packs_dir = os.path.join(os.fspath(self.cache_path), "packs")
        # The last few tree packs read, whole, with their cipher: a walk of the
        # previous tree reads its blobs in pack order, thousands per pack.
        self._tree_packs: OrderedDict[str, tuple[bytes, AESGCM]] = OrderedDict()
        self._tree_packs_lock = threading.Lock()
        # Locations looked up ahead of get_blob (prefetch_locations), each used once.
        self._located: dict[bytes, IndexEntry] = {}

    # -- creating and opening ------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        passphrase: str,
        *,
        chunker: ChunkerParams | None = None,
        scrypt_n: int = keys.DEFAULT_SCRYPT_N,
        cache_dir: str | os.PathLike[str] | None = None,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    ) -> Repository:
        """Create a new repository in ``backend`` and return it opened."""
        if backend.exists(CONFIG_NAME):
            raise RepositoryExists(f"a repository already exists at {backend.describe()}")
        config = RepositoryConfig.new(chunker or ChunkerParams())
        master = os.urandom(crypto.KEY_SIZE)
        slot_id = keys.add_slot(backend, master, passphrase, config.id, n=scrypt_n, label="initial")
        backend.put(CONFIG_NAME, config.to_bytes())  # last: its presence means "initialized"
        if RepositoryConfig.from_bytes(backend.get(CONFIG_NAME)).id != config.id:
            # Another process initialised the same location at the same moment and won.
            backend.delete(keys.KEYS_PREFIX + slot_id)
            raise RepositoryExists(f"a repository was created at {backend.describe()} meanwhile")
        return cls(
            backend, config, master, slot_id, cache_dir=cache_dir, lease_timeout=lease_timeout
        )

    @classmethod
    def open(
        cls,
        backend: Backend,
        passphrase: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    ) -> Repository:
        """Open an existing repository; raises ``WrongPassphrase``, ``UnsupportedVersion``."""
        try:
            raw = backend.get(CONFIG_NAME)
        except ObjectNotFound:
            raise NotARepository(f"no repository at {backend.describe()} (no config)") from None
        config = RepositoryConfig.from_bytes(raw)
        master, slot_id = keys.unlock(backend, passphrase, config.id)
        return cls(
            backend, config, master, slot_id, cache_dir=cache_dir, lease_timeout=lease_timeout
        )

    @property
    def id(self) -> str:
        """Repository id (hex)."""
        return self.config.id

    def close(self) -> None:
        """Release local resources (and remove a temporary cache)."""
        self.index_cache.close()
        if self._temp_cache:
            shutil.rmtree(self._cache_base, ignore_errors=True)

    def __enter__(self) -> Repository:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- content addressing --------------------------------------------------------------------

    def chunker(self) -> FastCDC:
        """A new FastCDC chunker with this repository's parameters and keyed gear table.

        Not thread-safe: use one per thread.
        """
        return new_chunker(self.config.chunker, self.keys.chunker_seed)

    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """Keyed BLAKE3 id (32 bytes) of ``data``."""
        return crypto.blob_id(self.keys.blob_id, data)

    # -- index and reads -----------------------------------------------------------------------

    def sync_index(self) -> int:
        """Merge new index segments into the local cache; returns how many were merged."""
        with self._sync_lock:
            merged = self.index_cache.sync(self.backend, self.keys.encryption)
            if self.index_cache.rebuilt:
                self._prune_tree_cache()
            return merged

    def _prune_tree_cache(self) -> None:
        """Drop cached tree packs the index no longer names (deleted by garbage collection)."""
        indexed = {pid.hex() for pid in self.index_cache.packs()}
        for path in (self.cache_path / "packs").iterdir():
            if path.name not in indexed and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    def has_blob(self, blob_id: bytes) -> bool:
        """Whether the (locally cached) index knows ``blob_id``."""
        return self.index_cache.lookup(blob_id) is not None

    def lookup(self, blob_id: bytes) -> IndexEntry | None:
        """The index entry of ``blob_id`` (syncing the index once on a miss)."""
        entry = self.index_cache.lookup(blob_id)
        if entry is None:
            self.sync_index()
            entry = self.index_cache.lookup(blob_id)
        return entry

    def prefetch_locations(self, blob_ids: list[bytes]) -> None:
        """Look up where ``blob_ids`` are in one index query; the next :meth:`get_blob`
        of each skips its own query (a walk of a previous tree reads one blob per
        directory: the subdirectories' ids are known one level ahead).  At most
        ``PREFETCHED_LOCATIONS`` are kept; ids never read are dropped with the rest."""
        if not blob_ids:
            return
        found = self.index_cache.lookup_many(blob_ids)
        with self._tree_packs_lock:
            if len(self._located) + len(found) > PREFETCHED_LOCATIONS:
                self._located.clear()
            self._located.update(found)

    def get_blob(self, blob_id: bytes) -> bytes:
        """Read, authenticate, decompress and verify one blob."""
        located = None
        if self._located:
            with self._tree_packs_lock:
                located = self._located.pop(blob_id, None)
        if located is not None:
            try:
                return self._read(located)
            except ObjectNotFound:
                pass  # moved by garbage collection: look it up again
        for attempt in range(2):
            locations = self.index_cache.locations(blob_id)
            if not locations:
                self.sync_index()
                locations = self.index_cache.locations(blob_id)
            if not locations:
                raise BlobNotFound(f"blob {blob_id.hex()} is not in the repository index")
            for entry in locations:
                try:
                    return self._read(entry)
                except ObjectNotFound:
                    continue  # another copy, or garbage collection moved it
            if attempt == 0:
                self.sync_index()
        raise ObjectNotFound(
            f"blob {blob_id.hex()}: every pack the index names for it is missing (run check)"
        )

    def get_blobs(
        self, blob_ids: Iterable[bytes], *, max_gap: int = 1 << 20, max_request: int = 32 << 20
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(id, plaintext)`` for each id, pack by pack, with few requests.

        Records of one pack that lie within ``max_gap`` bytes of each other are
        fetched with one range request (at most ``max_request`` bytes), so a
        restore reads each pack region once.  Yields in pack/offset order, not
        in the given order; pass bounded batches (memory holds one batch's
        locations).
        """
        from ferryman.repository.batch_read import read_blobs

        return read_blobs(self, blob_ids, max_gap=max_gap, max_request=max_request)

    def _read(self, entry: IndexEntry) -> bytes:
        pack_hex = entry.pack_hex
        name = pack.pack_name(entry.kind, pack_hex)
        if entry.kind == blob.KIND_TREE:
            data, cipher = self._tree_pack(pack_hex, name)
            local = memoryview(data)[entry.offset : entry.offset + entry.length]
            try:
                return self.decode_record(cipher, entry, local, name)
            except CorruptObject:
                # The local copy may be the damaged one: drop it, use the repository's.
                self._forget_tree_pack(pack_hex)
        else:
            cipher = pack.pack_cipher(self.keys.encryption, pack_hex)
        record = self.backend.get_range(name, entry.offset, entry.length)
        return self.decode_record(cipher, entry, record, name)

    def decode_record(
        self, cipher: AESGCM, entry: IndexEntry, record: bytes | memoryview, name: str
    ) -> bytes:
        """Authenticate and decode one record read from pack ``name``."""
        if len(record) != entry.length:
            raise CorruptObject(f"pack {name}: truncated (blob {entry.blob_id.hex()} cut short)")
        return blob.open_blob(
            cipher, entry.kind, entry.blob_id, record, entry.raw_length, self.keys.blob_id, name
        )

    def _tree_pack(self, pack_hex: str, name: str) -> tuple[bytes, AESGCM]:
        """A tree pack's bytes and cipher: from memory, else from the local copy of the
        whole pack (fetched once per proxy)."""
        with self._tree_packs_lock:
            found = self._tree_packs.get(pack_hex)
            if found is not None:
                self._tree_packs.move_to_end(pack_hex)
                return found
        path = os.path.join(self._packs_dir, pack_hex)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = self.backend.get(name)
            tmp = os.path.join(
                self._packs_dir, f".{pack_hex}.{os.getpid()}.{threading.get_ident()}"
            )
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        value = (data, pack.pack_cipher(self.keys.encryption, pack_hex))
        with self._tree_packs_lock:
            self._tree_packs[pack_hex] = value
            while len(self._tree_packs) > TREE_PACKS_IN_MEMORY:
                self._tree_packs.popitem(last=False)
        return value

    def _forget_tree_pack(self, pack_hex: str) -> None:
        """Drop a (possibly damaged) tree pack from memory and from the local cache."""
        with self._tree_packs_lock:
            self._tree_packs.pop(pack_hex, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._packs_dir, pack_hex))

    def get_tree(self, tree_id: bytes) -> list[tree.Node]:
        """Read and decode a tree blob."""
        data = self.get_blob(tree_id)
        try:
            return tree.decode_tree(data)
        except tree.TreeFormatError as exc:
            raise CorruptObject(f"tree blob {tree_id.hex()}: {exc}") from None

    # -- writers and restore points ------------------------------------------------------------

    def open_writer(self, name: str = "writer", **options: Any) -> RepositoryWriter:
        """Start a writing session (registers a writer lease).  See :class:`RepositoryWriter`."""
        return RepositoryWriter(self, name, **options)

    def list_restore_points(self, *, include_checkpoints: bool = False) -> list[RestorePoint]:
        """All restore points, oldest first (checkpoints only if asked)."""
        points = []
        for name in self.backend.list(POINTS_PREFIX):
            try:
                point = open_point(self.keys.encryption, self._point_bytes(name), name)
            except ObjectNotFound:
                continue  # deleted while listing
            if include_checkpoints or not point.checkpoint:
                points.append(point)
        points.sort(key=lambda p: (p.time, p.id))
        return points

    def _point_bytes(self, name: str) -> bytes:
        """Manifests are immutable: keep their (encrypted) bytes locally once fetched."""
        point_id = name[len(POINTS_PREFIX) :]
        if not _is_point_id(point_id):
            return self.backend.get(name)  # not ours to cache (load reports it)
        path = self.cache_path / "points" / point_id
        try:
            return path.read_bytes()
        except FileNotFoundError:
            data = self.backend.get(name)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return data

    def load_restore_point(self, point_id: str) -> RestorePoint:
        """One restore point by id."""
        name = POINTS_PREFIX + point_id
        try:
            data = self.backend.get(name)
        except ObjectNotFound:
            raise ObjectNotFound(f"restore point {point_id} does not exist") from None
        return open_point(self.keys.encryption, data, name)

    def delete_restore_point(self, point_id: str) -> None:
        """Remove a restore point (its data goes at the next garbage collection)."""
        if not _is_point_id(point_id):
            raise ValueError(f"invalid restore point id {point_id!r}")
        self.backend.delete(POINTS_PREFIX + point_id)
        (self.cache_path / "points" / point_id).unlink(missing_ok=True)

    # -- key slots -----------------------------------------------------------------------------

    def list_keys(self) -> list[keys.KeySlot]:
        """The key slots (no secrets)."""
        return keys.load_slots(self.backend)

    def add_key(self, passphrase: str, *, label: str = "", scrypt_n: int | None = None) -> str:
        """Add a key slot for ``passphrase``; returns its id."""
        n = scrypt_n or keys.DEFAULT_SCRYPT_N
        return keys.add_slot(self.backend, self._master, passphrase, self.id, n=n, label=label)

    def remove_key(self, slot_id: str) -> None:
        """Remove a key slot (never the last one)."""
        keys.remove_slot(self.backend, slot_id)

    def change_passphrase(self, new_passphrase: str, *, scrypt_n: int | None = None) -> str:
        """Replace the slot this repository was opened with by one for ``new_passphrase``."""
        new_id = self.add_key(new_passphrase, label="changed", scrypt_n=scrypt_n)
        keys.remove_slot(self.backend, self.slot_id)
        self.slot_id = new_id
        return new_id

    # -- maintenance ---------------------------------------------------------------------------

    def gc(
        self,
        *,
        grace: float = 60.0,
        repack_below: float = 0.0,
        consolidate_above: int = 256,
        do_mark: bool = True,
        do_sweep: bool = True,
    ) -> GCReport:
        """Garbage collection: sweep generations whose writer fence passed, then mark.

        Safe while other processes write (docs/format.md §13.3); run one at a time.
        ``grace`` absorbs clock skew between hosts; ``repack_below`` (e.g. 0.5)
        rewrites mostly-dead live packs.
        """
        from ferryman.repository.gc import run_gc

        return run_gc(
            self,
            grace=grace,
            repack_below=repack_below,
            consolidate_above=consolidate_above,
            do_mark=do_mark,
            do_sweep=do_sweep,
        )

    def check(self, read_data: bool = False, subset: str | float | None = None) -> CheckReport:
        """Verify the repository; returns a ``CheckReport``; see ``check.run_check``."""
        from ferryman.repository.check import run_check

        return run_check(self, read_data=read_data, subset=subset)

    def rebuild_index(self) -> int:
        """Rewrite the index from the packs' own tables; returns the number of entries."""
        from ferryman.repository.rebuild import rebuild_index

        return rebuild_index(self)


def _is_point_id(text: str) -> bool:
    """Restore point ids are 32 lowercase hex digits."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)
