"""Tree saver: turns the scanner's ordered event stream into tree blobs, on its own thread.

The scanner runs ahead and sends batches of events (enter dir, entry, leave
dir, checkpoint) through a bounded queue; this thread waits for each file's
content in order (``PendingContent.result()``), so the scanner and the workers
never wait for a directory to complete. Each directory level keeps at most one
tree blob's worth of nodes in memory; full blobs are stored as soon as they
fill. Periodic checkpoints are taken here, since this thread knows what is
complete; the scanner only asks for one when the task is cancelled. While it
waits for a large file, checkpoints go on and include the file's stored prefix
as a partial node (see ``checkpoint.partial_file_map``); a file interrupted by a
cancel is checkpointed the same way, and everything after it is dropped.

A large file still being read does not stop this thread: its place in its
directory's buffer is held (``_Held``) and the events after it are taken
meanwhile, so the scan runs on instead of waiting behind it (an appended disk
image in a daily change stalled the walk ~0.8 s). A directory left with a held
entry is held the same way in its parent, with its last buffer. Held entries
are completed, in order, before a buffer holding one is stored (its blob is
full, or it is the root's), before a checkpoint, and before waiting for a large
file that is not held; memory stays one tree blob per level of the held files'
paths. At most ``MAX_HELD`` files of up to ``HOLD_MAX_BYTES`` each are held, so
checkpoints are never put off for long.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from ferryman.engine.checkpoint import partial_file_map
from ferryman.engine.file_saver import FileOutcome, PendingContent, describe_os_error
from ferryman.engine.listing_cache import (
    CompactListing,
    ListingCache,
    PrevBlob,
    approx_size,
    map_key,
)
from ferryman.engine.nodes import (
    MAX_NODES_PER_TREE,
    Node,
    NodeMap,
    TreeLayoutError,
    encode_record,
    node_from_map,
    node_to_map,
    tree_blob,
)
from ferryman.engine.ports import RepositoryPort, WriterPort
from ferryman.engine.stats import StatsCollector
from ferryman.repository.blob import KIND_TREE
from ferryman.repository.tree import TARGET_TREE_BYTES
from ferryman.sources.base import SourceDir
from ferryman.sources.metadata import split_acls


@dataclass(slots=True)
class EnterDir:
    """The scanner entered a directory (its node, without subtrees yet)."""

    node: Node
    path: bytes


@dataclass(slots=True)
class Entry:
    """A non-directory entry: a new ``node`` (``pending`` while its content is stored),
    or ``raw``, the previous record reused unchanged."""

    node: Node | None
    path: bytes
    pending: PendingContent | None = None
    raw: NodeMap | None = None


@dataclass(slots=True)
class RawFile:
    """An unchanged regular file whose previous record is reused once its chunks are
    confirmed present (``writer.has_blob``); otherwise it is read again from ``dir``.

    ``owns``: the first RawFile of a directory carries one reference to ``dir``
    (retained by the scanner), released here when the directory is left or the
    event dropped; the next RawFiles of that directory borrow it, so reference
    counting costs once per directory, not once per file.
    """

    raw: NodeMap
    path: bytes
    dir: SourceDir
    st: os.stat_result
    owns: bool = True


class PrevRun:
    """Entries ``start`` to ``stop`` of a previous tree blob, by position: their records
    are decoded (``maps``) only when they must be stored again."""

    __slots__ = ("blob", "start", "stop")

    def __init__(self, blob: PrevBlob, start: int, stop: int) -> None:
        self.blob = blob
        self.start = start
        self.stop = stop

    def __len__(self) -> int:
        return self.stop - self.start

    def maps(self) -> list[NodeMap]:
        """The run's previous records (decodes the tree blob once if needed).

        The scanner took them as unchanged on the cached listing's stat keys: when
        that listing proved stale, each record's own key must be the same, else
        the task fails rather than store a record of other content."""
        blob = self.blob
        maps = blob.maps()[self.start : self.stop]
        if blob.stale and tuple(map(map_key, maps)) != blob.listing.keys[self.start : self.stop]:
            raise TreeLayoutError(
                f"tree blob {blob.blob_id.hex()[:16]} does not match its cached "
                "listing (dropped: the next backup decodes the blob)"
            )
        return maps

    def approx_bytes(self) -> int:
        """The sum of ``approx_size`` of the run's records, without decoding them."""
        return sum(self.blob.listing.approx[self.start : self.stop])

    def records(self) -> list[msgspec.Raw] | None:
        """The run's records as stored, copied from the previous blob (None: its cached
        listing proved stale; ``maps`` then checks and gives the records)."""
        return self.blob.records(self.start, self.stop)


@dataclass(slots=True)
class RawRun:
    """Consecutive unchanged entries of one directory: regular files with one link and
    symlinks whose previous records (``run``) are reused as they are, in name order.

    One event for the run instead of one per entry: an unchanged re-run costs the
    scanner and this thread a few operations per entry, not an event each. The run
    stays a reference into the previous tree blob in its directory's buffer: when
    the directory's previous tree blobs are reused whole, its records are never
    decoded. Like a ``RawFile``, a file whose chunks are gone is read again (from
    ``dir``, with its ``sts`` entry, or a new ``lstat`` where it is None: an entry the
    walk helper found unchanged; only checked without trust); ``owns`` as for
    ``RawFile``.
    """

    run: PrevRun
    sts: list[os.stat_result | None]
    dir: SourceDir
    rel: bytes  # the directory's path
    owns: bool = False


@dataclass(slots=True)
class LeaveDir:
    """The scanner finished the directory entered last.

    ``reuse``: the directory's previous record, when its stat is unchanged and the
    scan matched every previous entry (its tree blobs are reused if every entry
    also came back unchanged).
    """

    reuse: NodeMap | None = None


@dataclass(slots=True)
class CheckpointNow:
    """Save a checkpoint of everything before this event."""


Event = EnterDir | Entry | RawFile | RawRun | LeaveDir | CheckpointNow
RereadFile = Callable[[SourceDir, bytes, os.stat_result], FileOutcome]
CheckpointCallback = Callable[[Node], None]


@dataclass(slots=True)
class _Builder:
    node: Node
    dir: SourceDir | None = None  # owned by a RawFile inside: released when left
    # records, and runs of previous records decoded only when the buffer is stored
    buffer: list[NodeMap | PrevRun] = field(default_factory=list)
    blob_ids: list[bytes] = field(default_factory=list)
    approx_bytes: int = 0
    count: int = 0  # entries in ``buffer`` (a run counts each of its entries)
    all_raw: bool = True
    held: int = 0  # entries of ``buffer`` still waiting for a large file's content
    parent: _Builder | None = None
    slot: int = -1  # once left while held: the index of its hole in ``parent.buffer``


@dataclass(slots=True)
class _SeenDir:
    """A directory open in the events ``_prefetch_prev`` has seen so far."""

    blobs: list[PrevBlob] = field(default_factory=list)  # the previous blobs of its runs
    stored: bool = False  # it is stored again (its blobs are read)


@dataclass(slots=True)
class _Held:
    """An entry whose place is ``builder.buffer[index]``: a large file being read
    (``ev``), or a directory left with held entries (``dir``, its builder)."""

    builder: _Builder
    index: int
    ev: Entry | None = None
    dir: _Builder | None = None
    seq: int = 0  # 1, 2, ... in the order held


# Large files held at once while the events after them are taken, and the largest
# one held: checkpoints wait for held files, so a held file is one read in seconds.
MAX_HELD = 4
HOLD_MAX_BYTES = 1 << 30
# Tree blobs built before they are added to the writer together (``_add_built``):
# one index query and one claim for the batch instead of one each per blob (after
# the daily change, ~700 new tree blobs each paid an index lookup that dropped and
# waited to take back the GIL).
BUILT_MAX = 64
BUILT_MAX_BYTES = 4 << 20
_HOLE: NodeMap = {}  # stands in a buffer for a held entry until it is completed


def expand(buffer: Sequence[NodeMap | PrevRun]) -> list[NodeMap]:
    """A buffer's records, runs of previous records decoded."""
    out: list[NodeMap] = []
    for x in buffer:
        if isinstance(x, PrevRun):
            out.extend(x.maps())
        else:
            out.append(x)
    return out


class TreeSaverFailed(Exception):
    """Raised in the scanner when the tree saver thread died; wraps its error."""


class TreeSaver:
    """Consumes events, stores tree blobs, produces the root directory node."""

    def __init__(
        self,
        repo: RepositoryPort,
        writer: WriterPort,
        collector: StatsCollector,
        on_checkpoint: CheckpointCallback | None = None,
        reread: RereadFile | None = None,
        max_nodes: int = MAX_NODES_PER_TREE,
        queue_batches: int = 16,
        checkpoint_interval: float = 30.0,
        trust_reused: bool = False,
        listings: ListingCache | None = None,
    ) -> None:
        # the previous trees' blobs may be referenced unconfirmed (writer.trusts_points)
        self._trust_reused = trust_reused
        self._listings = listings  # compact listings of the tree blobs stored, cached
        self._interval = checkpoint_interval
        self._last_checkpoint = time.monotonic()
        self._repo = repo
        self._writer = writer
        self._stats = collector
        self._on_checkpoint = on_checkpoint
        self._reread = reread
        self._max_nodes = max_nodes
        self._queue: queue.Queue[list[Event] | None] = queue.Queue(maxsize=queue_batches)
        self._stack: list[_Builder] = []
        self.root: Node | None = None
        self.error: BaseException | None = None
        self._present: set[bytes] = set()  # reused ids of the current batch, confirmed
        self.stopped = False  # a file was interrupted by a cancel: the rest is dropped
        self._added = 0  # entries completed so far
        # (entries, partial bytes) last saved; (-seq, prefix) of the first held file
        self._checkpointed: tuple[int, int] = (0, 0)
        self._held: list[_Held] = []  # in event order
        self._holds = 0  # entries held so far
        # tree blobs built, not yet added (id, blob, listing parts); referenced only by
        # blobs built after them, so every one is added before a checkpoint or the root
        self._built: list[tuple[bytes, bytes, list[CompactListing]]] = []
        self._built_bytes = 0
        self._seen_dirs: list[_SeenDir] = []  # the open directories, as events are seen
        self._thread = threading.Thread(target=self._run, name="tree-saver", daemon=True)
        self._thread.start()

    def put(self, events: list[Event], block: bool = True) -> bool:
        """Queue a batch of events; returns False when the queue is full and not blocking."""
        if self.error is not None:
            raise TreeSaverFailed(str(self.error)) from self.error
        try:
            self._queue.put(events, block=block, timeout=None)
        except queue.Full:
            return False
        return True

    def finish(self) -> Node | None:
        """Wait for every queued event; return the root directory node (None if unfinished)."""
        self._queue.put(None)
        self._thread.join()
        for b in self._stack:  # directories left open by a failure or a cancel
            self._release_dir(b)
        if self.error is not None:
            raise TreeSaverFailed(str(self.error)) from self.error
        return self.root

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                try:
                    if self.error is None:
                        self._add_built()  # the root's tree blobs, and those before
                except BaseException as exc:  # reported to the scanner by finish()
                    self.error = exc
                return
            events = iter(batch)
            try:
                if self.error is None and not self.stopped:
                    self._prefetch_prev(batch)
                    if not self._trust_reused:
                        self._present = self._confirm(batch)
                    for ev in events:
                        self._handle(ev)
                        if self.stopped:
                            break
                        if time.monotonic() - self._last_checkpoint >= self._interval:
                            self._periodic_checkpoint()
            except BaseException as exc:  # reported to the scanner by put()/finish()
                self.error = exc
            # dropped events (dead or stopped consumer, which still drains the queue so
            # the scanner never blocks): release the directories they hold
            for ev in events:
                if isinstance(ev, RawFile | RawRun) and ev.owns:
                    ev.dir.release()

    def _handle(self, ev: Event) -> None:
        if isinstance(ev, RawRun):
            if ev.owns:
                self._stack[-1].dir = ev.dir
            if self._trust_reused:
                self._add_run(ev.run)
            else:
                self._add_confirmed(ev)
        elif isinstance(ev, RawFile):
            if ev.owns:
                self._stack[-1].dir = ev.dir
            if self._trust_reused or all(map(self._present.__contains__, ev.raw.get("c", ()))):
                self._add(ev.raw, raw=True)
            else:
                self._reread_file(ev)
        elif isinstance(ev, Entry):
            if ev.raw is not None:
                self._add(ev.raw, raw=True)
                return
            node = ev.node
            assert node is not None
            if ev.pending is not None:
                if self._may_hold(ev.pending, node):
                    b = self._stack[-1]
                    self._hold(_Held(b, len(b.buffer), ev=ev))
                    return
                if ev.pending.progress is not None:
                    self._resolve_held()  # in order; no hole in its partial checkpoints
                    if self.stopped:
                        return
                out = self._outcome(ev.pending, node)
                if out.interrupted:  # cancelled mid-file: keep its stored prefix, stop
                    self._checkpoint(partial_file_map(node, out.partial))
                    self.stopped = True
                    return
                if not self._completed(ev, node, out):
                    return
            self._add(node_to_map(node), raw=False)
        elif isinstance(ev, EnterDir):
            self._stack.append(_Builder(ev.node, parent=self._stack[-1] if self._stack else None))
        elif isinstance(ev, LeaveDir):
            self._leave(ev)
        else:
            self._checkpoint()

    def _completed(self, ev: Entry, node: Node, out: FileOutcome) -> bool:
        """Put a file's stored content into ``node``; False (warned) when not stored."""
        if out.error is not None:
            self._stats.warn(os.fsdecode(ev.path), out.error)
            return False
        if out.warning is not None:
            self._stats.warn(os.fsdecode(ev.path), out.warning)
        node.content = out.content
        node.size = out.size
        node.holes = out.holes
        if out.xattrs:
            node.xattrs, access, default = split_acls(out.xattrs)
            node.acl_access = access or b""
            node.acl_default = default or b""
        return True

    def _may_hold(self, pending: PendingContent, node: Node) -> bool:
        """Whether to take the next events while this large file is still being read."""
        return (
            pending.progress is not None
            and sum(h.ev is not None for h in self._held) < MAX_HELD
            and node.size <= HOLD_MAX_BYTES
            and not pending.wait(0)
        )

    def _hold(self, h: _Held) -> None:
        b = h.builder
        b.buffer.append(_HOLE)
        b.count += 1
        b.held += 1
        b.all_raw = False
        self._holds += 1
        h.seq = self._holds
        self._held.append(h)

    def _resolve_held(self) -> None:
        """Wait for every held file, in order, and put its record in its place.

        A file cancelled mid-read leaves its partial record (or nothing) and stops
        this thread after one checkpoint of everything else, as for a file not held.
        """
        interrupted = False
        while self._held:
            h = self._held[0]  # first: periodic checkpoints while waiting stop before it
            m: NodeMap | None = None
            if h.dir is not None:  # its held entries came before it: all completed
                d = h.dir
                assert d.held == 0
                if d.buffer or not d.blob_ids:
                    d.blob_ids.append(self._store(d.buffer))
                d.node.subtrees = d.blob_ids
                m = node_to_map(d.node)
            else:
                assert h.ev is not None and h.ev.node is not None and h.ev.pending is not None
                pending = h.ev.pending
                if self._on_checkpoint is not None:
                    while not pending.wait(
                        self._interval - (time.monotonic() - self._last_checkpoint)
                    ):
                        self._periodic_checkpoint()
                out = pending.result()
                if out.interrupted:
                    interrupted = True
                    m = partial_file_map(h.ev.node, out.partial)
                elif self._completed(h.ev, h.ev.node, out):
                    m = node_to_map(h.ev.node)
            del self._held[0]
            b = h.builder
            b.held -= 1
            if m is None:  # not stored: the hole goes, later holes move up one
                del b.buffer[h.index]
                b.count -= 1
                for later in self._held:
                    if later.builder is b:
                        later.index -= 1
                        if later.dir is not None:
                            later.dir.slot -= 1
            else:
                b.buffer[h.index] = m
                b.approx_bytes += approx_size(m)
                self._added += 1
        if interrupted:
            self._checkpoint()
            self.stopped = True

    def _periodic_checkpoint(self) -> None:
        """A checkpoint on schedule; while files are held, of everything before the
        first one and its stored prefix (as when it was waited for in order)."""
        if not self._held:
            self._checkpoint()
            return
        self._last_checkpoint = time.monotonic()
        first = self._held[0]
        ev = first.ev
        assert ev is not None and ev.node is not None and ev.pending is not None
        assert ev.pending.progress is not None
        last = partial_file_map(ev.node, ev.pending.progress.stored_prefix())
        # keyed by the file, not by ``_added``: that counts entries after it, left out
        # here (what comes before the first held file no longer changes)
        progress = (-first.seq, int(last["s"]) if last is not None else 0)
        if progress == self._checkpointed or self._on_checkpoint is None:
            return
        self._publish(self._chain_root(first.builder, first.index, last), progress)

    def _checkpoint(self, last: NodeMap | None = None) -> None:
        """Save a checkpoint of everything completed (and ``last``, a partial file);
        skipped when nothing was completed since the previous one."""
        self._resolve_held()
        if self.stopped:
            return
        self._last_checkpoint = time.monotonic()
        progress = (self._added, int(last["s"]) if last is not None else 0)
        if progress == self._checkpointed:
            return
        if self._on_checkpoint is not None and self._stack:
            self._publish(self.partial_root(last), progress)

    def _publish(self, root: Node, progress: tuple[int, int]) -> None:
        """Save ``root`` as a checkpoint once every tree blob built so far (its own among
        them) is added to the writer."""
        assert self._on_checkpoint is not None
        self._add_built()
        self._on_checkpoint(root)
        self._checkpointed = progress

    def _outcome(self, pending: PendingContent, node: Node) -> FileOutcome:
        """Wait for a file's content; checkpoints stay on schedule meanwhile (large files)."""
        if self._on_checkpoint is not None and pending.progress is not None:
            while not pending.wait(self._interval - (time.monotonic() - self._last_checkpoint)):
                self._checkpoint(partial_file_map(node, pending.progress.stored_prefix()))
        return pending.result()

    def _prefetch_prev(self, batch: list[Event]) -> None:
        """Look up where the previous tree blobs are that ``batch`` will read, in one
        index query (``get_blob`` asked one each: ~700 after the daily change).

        Without trust, ``_confirm`` reads every run's blob. With it, a run's blob is read
        when its directory is stored again: the batch shows that at the directory's
        ``LeaveDir``, when one of its entries was new or changed, a subdirectory was
        stored again, or its own record is not reused. Only a hint: a blob not looked
        up here is looked up when read, one located here and never read is dropped."""
        wanted: dict[bytes, None] = {}
        seen = self._seen_dirs
        trusted = self._trust_reused
        for ev in batch:
            if isinstance(ev, RawRun):
                blob = ev.run.blob
                if not trusted:
                    if blob.unread():
                        wanted[blob.blob_id] = None
                elif seen:
                    blobs = seen[-1].blobs
                    if not blobs or blobs[-1] is not blob:  # a large directory: many runs
                        blobs.append(blob)
            elif isinstance(ev, EnterDir):
                seen.append(_SeenDir())
            elif isinstance(ev, LeaveDir):
                if not seen:
                    continue
                left = seen.pop()
                if left.stored or ev.reuse is None:
                    wanted.update((b.blob_id, None) for b in left.blobs if b.unread())
                    if seen:
                        seen[-1].stored = True
            elif isinstance(ev, Entry) and ev.raw is None and seen:
                seen[-1].stored = True
        if wanted:
            self._repo.prefetch_locations(list(wanted))

    def _confirm(self, batch: list[Event]) -> set[bytes]:
        """The reused chunk and tree ids of ``batch`` that the writer may reference
        (``has_blob``), asked in one call for the whole batch."""
        ids: list[bytes] = []
        for ev in batch:
            if isinstance(ev, RawRun):
                for m in ev.run.maps():
                    ids.extend(m.get("c", ()))
            elif isinstance(ev, RawFile):
                ids.extend(ev.raw.get("c", ()))
            elif isinstance(ev, LeaveDir) and ev.reuse is not None:
                ids.extend(ev.reuse.get("st", ()))
        return self._writer.has_blobs(ids) if ids else set()

    def _reread_file(self, ev: RawFile) -> None:
        """Chunks of an unchanged file are gone (garbage-collected): read it again."""
        node = node_from_map(ev.raw)
        self._stats.add(files_unchanged=-1)
        if self._reread is None:
            self._stats.warn(os.fsdecode(ev.path), "previous content gone; not re-read")
            return
        out = self._reread(ev.dir, node.name, ev.st)
        if out.error is not None:
            self._stats.warn(os.fsdecode(ev.path), out.error)
            return
        if out.warning is not None:
            self._stats.warn(os.fsdecode(ev.path), out.warning)
        node.content, node.size, node.holes = out.content, out.size, out.holes
        self._add(node_to_map(node), raw=False)

    def _add_confirmed(self, ev: RawRun) -> None:
        """Add a run's entries whose chunks ``_confirm`` found; read the others again."""
        present = self._present.__contains__
        prefix = ev.rel + b"/" if ev.rel else b""
        for m, st in zip(ev.run.maps(), ev.sts, strict=True):
            if all(map(present, m.get("c", ()))):
                self._add(m, raw=True)
            else:
                if st is None:  # taken on the walk helper's verdict
                    try:
                        st = ev.dir.lstat(m["n"])
                    except OSError as exc:
                        self._stats.add(files_unchanged=-1)
                        self._stats.warn(os.fsdecode(prefix + m["n"]), describe_os_error(exc))
                        continue
                self._reread_file(RawFile(m, prefix + m["n"], ev.dir, st, owns=False))

    @staticmethod
    def _release_dir(b: _Builder) -> None:
        if b.dir is not None:
            b.dir.release()
            b.dir = None

    def _leave(self, ev: LeaveDir) -> None:
        if self._stack[-1].held and len(self._stack) == 1:
            self._resolve_held()  # the root: its node is the result
            if self.stopped:
                return
        b = self._stack.pop()
        self._release_dir(b)
        if b.held:  # completed with its held entries, in order
            b.slot = len(self._stack[-1].buffer)
            self._hold(_Held(self._stack[-1], b.slot, dir=b))
            return
        prev = ev.reuse
        reused = (
            prev is not None
            and b.all_raw
            and (self._trust_reused or all(map(self._present.__contains__, prev.get("st", ()))))
        )
        if reused and prev is not None:
            b.node.subtrees = list(prev.get("st", []))
            entry, raw = prev, True
        else:
            if b.buffer or not b.blob_ids:
                b.blob_ids.append(self._store(b.buffer))
            b.node.subtrees = b.blob_ids
            entry, raw = node_to_map(b.node), False
        if self._stack:
            self._add(entry, raw=raw)
        else:
            self.root = b.node

    def _add_run(self, run: PrevRun) -> None:
        """``_add(m, raw=True)`` for each record of ``run``, undecoded, so blob boundaries
        stay those of ``_add``: in one step when they fit the current tree blob (the
        usual case), else split where ``_add`` would store the blob (a change early in
        a large directory moves every later boundary: its runs straddle them)."""
        b = self._stack[-1]
        while len(run):
            n = len(run)
            size = b.approx_bytes + run.approx_bytes()
            if b.count + n < self._max_nodes and size < TARGET_TREE_BYTES:
                self._added += n
                b.buffer.append(run)
                b.count += n
                b.approx_bytes = size
                return
            approx = run.blob.listing.approx
            stop, count, size = run.start, b.count, b.approx_bytes
            while True:  # at least one entry, as ``_add`` stores after adding
                size += approx[stop]
                count += 1
                stop += 1
                if count >= self._max_nodes or size >= TARGET_TREE_BYTES:
                    break
            self._added += stop - run.start
            b.buffer.append(PrevRun(run.blob, run.start, stop))
            b.count, b.approx_bytes = count, size
            if not self._store_full(b):
                return
            run = PrevRun(run.blob, stop, run.stop)

    def _add(self, m: NodeMap, raw: bool) -> None:
        self._added += 1
        b = self._stack[-1]
        b.buffer.append(m)
        b.count += 1
        b.all_raw = b.all_raw and raw
        b.approx_bytes += approx_size(m)
        if b.count >= self._max_nodes or b.approx_bytes >= TARGET_TREE_BYTES:
            self._store_full(b)

    def _store_full(self, b: _Builder) -> bool:
        """Store the directory's full buffer as one tree blob and start the next; False
        if the saver stopped while its held files were resolved (nothing stored)."""
        if b.held:
            self._resolve_held()
            if self.stopped:
                return False
        b.blob_ids.append(self._store(b.buffer))
        b.buffer = []
        b.count = 0
        b.approx_bytes = 0
        return True

    def _store(self, buffer: Sequence[NodeMap | PrevRun]) -> bytes:
        """Build a buffer's tree blob and return its id; the blob is added to the writer
        (and its listing cached) with the next ones, in ``_add_built``.

        Runs of unchanged entries are copied as stored in their previous blob, with
        their listing columns: only new records are encoded (a directory encoded again
        because one entry changed cost ~7 us per unchanged entry to decode, encode and
        list again; the blob is still decoded once, to check it against its listing)."""
        records: list[bytes | msgspec.Raw] = []
        listed: list[CompactListing] = []
        for x in buffer:
            raw = x.records() if isinstance(x, PrevRun) else None
            if isinstance(x, PrevRun) and raw is not None:
                records.extend(raw)
                listed.append(x.blob.listing.part(x.start, x.stop))
                continue
            maps = x.maps() if isinstance(x, PrevRun) else [x]
            records.extend(map(encode_record, maps))
            listed.append(CompactListing.from_maps(maps))
        data = tree_blob(records)
        blob_id = self._repo.blob_id(data)
        self._built.append((blob_id, data, listed))
        self._built_bytes += len(data)
        if len(self._built) >= BUILT_MAX or self._built_bytes >= BUILT_MAX_BYTES:
            self._add_built()
        return blob_id

    def _add_built(self) -> None:
        """Add the tree blobs built since the last call to the writer in one ``add_blobs``
        (which asks the index about them in one query); the listings of the new ones are
        cached (an old blob's listing is cached when read)."""
        built, self._built, self._built_bytes = self._built, [], 0
        if not built:
            return
        new = self._writer.add_blobs(KIND_TREE, [(i, data) for i, data, _ in built])
        self._stats.add(trees_written=sum(new))
        if self._listings is not None:
            for (blob_id, _, listed), stored in zip(built, new, strict=True):
                if stored:
                    self._listings.put(blob_id, CompactListing.join(listed))

    def partial_root(self, last: NodeMap | None = None) -> Node:
        """The root node of a tree holding everything completed so far (for checkpoints).

        ``last``: an entry of the innermost open directory that sorts after every
        completed one (the partial node of the file being read).
        """
        b = self._stack[-1]
        return self._chain_root(b, len(b.buffer), last)

    def _chain_root(self, b: _Builder | None, upto: int, last: NodeMap | None) -> Node:
        """The root node of a tree holding ``b.buffer[:upto]`` (then ``last``) and, in
        each directory above ``b``, the entries before it (``partial_root``)."""
        child: Node | None = None
        while b is not None:
            maps = expand(b.buffer[:upto]) + ([node_to_map(child)] if child is not None else [])
            if last is not None:
                maps, last = [*maps, last], None
            ids = list(b.blob_ids)
            for i in range(0, max(len(maps), 1), self._max_nodes):
                ids.append(self._store(maps[i : i + self._max_nodes]))
            child = dataclasses.replace(b.node, subtrees=ids)
            parent = b.parent
            upto = b.slot if b.slot >= 0 else len(parent.buffer) if parent is not None else 0
            b = parent
        assert child is not None
        return child
