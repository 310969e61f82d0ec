"""Scanner: the depth-first walk of the source, in sorted name order, on the task's thread.

For each entry it lstat()s, applies the partition selection and the masks,
asks change detection whether a file must be read, hands files to the file
saver and sends ordered events to the tree saver. The walk is iterative (an
explicit stack, so depth is not limited by Python's recursion limit) and holds
one open directory handle per level; it never follows a symlink.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass

from ferryman.engine import walk_helper
from ferryman.engine.change_detection import PreviousListing, unchanged
from ferryman.engine.checkpoint import resumable_prefix
from ferryman.engine.file_saver import FileSaver, PendingContent, describe_os_error
from ferryman.engine.listing_cache import ListingCache, stat_key
from ferryman.engine.nodes import (
    Node,
    NodeMap,
    node_from_map,
    node_from_stat,
    node_to_map,
    node_type,
)
from ferryman.engine.ports import RepositoryPort, WriterPort
from ferryman.engine.selection import PathFilter, Selection
from ferryman.engine.stats import StatsCollector
from ferryman.engine.tree_saver import (
    CheckpointNow,
    EnterDir,
    Entry,
    Event,
    LeaveDir,
    PrevRun,
    RawFile,
    RawRun,
    TreeSaver,
)
from ferryman.sources.base import SourceDir
from ferryman.sources.local import LocalDir
from ferryman.sources.metadata import split_acls

EVENT_BATCH = 512


class ScanCancelled(Exception):
    """The cancel event was set; a checkpoint was requested before stopping."""


@dataclass(slots=True)
class _Frame:
    dir: SourceDir | None
    names: list[bytes]
    index: int
    rel: bytes
    prev: list[PreviousListing]
    selection: Selection | None
    reuse: NodeMap | None = None  # previous record of this dir while it may be reused
    lent: bool = False  # a RawFile carries a reference to ``dir`` to the tree saver
    # the walk helper's flat verdict: non-directory entries it found unchanged
    flat: frozenset[bytes] | None = None


@dataclass(slots=True)
class _Hardlink:
    path: bytes
    pending: PendingContent | None
    node: Node
    left: int  # names not seen yet: the entry is dropped when all were (bounded memory)


class Scanner:
    """Walks a source and feeds the file saver and the tree saver."""

    def __init__(
        self,
        repo: RepositoryPort,
        writer: WriterPort,
        saver: FileSaver,
        trees: TreeSaver,
        collector: StatsCollector,
        path_filter: PathFilter,
        *,
        one_file_system: bool = False,
        read_xattrs: bool = True,
        cancel: threading.Event | None = None,
        trust_reused: bool = False,
        listings: ListingCache | None = None,
        prev_entries: int = 0,
    ) -> None:
        # entries of the previous walk: from walk_helper.SPLIT_MIN_ENTRIES on, a helper
        # process checks subtrees from the other end (see ``walk_helper``)
        self._prev_entries = prev_entries
        self._helper: walk_helper.WalkHelper | None = None
        self._trust_reused = trust_reused  # writer.trusts_points(parents), see TreeSaver
        # compact listings of previous tree blobs; only with trust: an unchanged run's
        # records are then decoded late (by the tree saver), or never
        self._listings = listings if trust_reused else None
        self._repo = repo
        self._writer = writer
        self._saver = saver
        self._trees = trees
        self._stats = collector
        self._counts = collector.stats  # scanner-only counters: updated without the lock
        self._filter = path_filter
        self._one_fs = one_file_system
        self._xattrs = read_xattrs
        self._cancel = cancel
        self._events: list[Event] = []
        self._weight = 0  # entries in ``_events`` (a RawRun counts each of its entries)
        self._hardlinks: dict[tuple[int, int], _Hardlink] = {}
        self._root_dev = 0

    # -- event plumbing ------------------------------------------------------------

    def _emit(self, ev: Event, weight: int = 1) -> None:
        self._events.append(ev)
        self._weight += weight
        if self._weight >= EVENT_BATCH:
            self._flush_events()

    def _flush_events(self) -> None:
        if not self._events:
            return
        events, self._events = self._events, []
        self._weight = 0
        if not self._trees.put(events, block=False):
            self._saver.flush_batch()  # the tree saver may be waiting on the open batch
            self._trees.put(events)

    def _check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            self._emit(CheckpointNow())
            self._saver.flush_batch()
            self._flush_events()
            raise ScanCancelled("backup cancelled")

    # -- the walk --------------------------------------------------------------------

    def run(self, root: SourceDir, selection: Selection | None, prev_roots: list[Node]) -> None:
        """Walk from ``root``; emits the root EnterDir ... LeaveDir.

        ``prev_roots``: root nodes of the trees used for change detection, most
        authoritative first (a newer checkpoint, then the previous restore point).
        """
        t0 = time.perf_counter()
        st = root.stat_self()
        self._root_dev = st.st_dev
        root_node = node_from_stat(b"root", st)
        self._emit(EnterDir(root_node, b""))
        prev_maps = [node_to_map(p) for p in prev_roots]
        top = self._frame(root, b"", prev_maps, selection)
        if prev_maps and unchanged(prev_maps[0], st):
            top.reuse = prev_maps[0]
        stack = [top]
        count = 0
        next_cancel_check = 256
        runs = len(prev_maps) == 1 and not self._filter.active
        helper = self._helper = self._start_helper(root, prev_maps, selection)
        try:
            while stack:
                frame = stack[-1]
                ahead = None
                if runs and frame.dir is not None and len(frame.prev) == 1:
                    start = frame.index
                    ahead, again = self._raw_run(frame)
                    count += frame.index - start
                    if count >= next_cancel_check:
                        next_cancel_check = count + 256
                        self._check_cancel()
                        if helper is not None:
                            helper.drain()  # it waits while its pipe is full
                    if again:
                        continue
                if frame.index >= len(frame.names):
                    stack.pop()
                    if helper is not None:
                        helper.inside.discard(frame.rel)
                    if frame.dir is not None:
                        frame.dir.release()
                    reuse = frame.reuse
                    if reuse is not None and not frame.prev[0].all_matched():
                        reuse = None
                    self._emit(LeaveDir(reuse))
                    continue
                name = frame.names[frame.index]
                frame.index += 1
                count += 1
                if count >= next_cancel_check:
                    next_cancel_check = count + 256
                    self._check_cancel()
                    if helper is not None:
                        helper.drain()
                child = self._entry(frame, name, ahead)
                if child is not None:
                    stack.append(child)
                    if helper is not None:
                        helper.inside.add(child.rel)
        finally:
            if helper is not None:
                self._helper = None
                helper.close()
            for frame in stack:
                if frame.dir is not None:
                    frame.dir.release()
            self._saver.flush_batch()
            self._flush_events()
            self._stats.add(seconds_scan=time.perf_counter() - t0)

    def _start_helper(
        self, root: SourceDir, prev_maps: list[NodeMap], selection: Selection | None
    ) -> walk_helper.WalkHelper | None:
        """The helper process, for a large local share re-run against one previous tree
        whose listings are cached (trusted); None: this thread walks alone."""
        if (
            self._listings is None
            or len(prev_maps) != 1
            or selection is not None
            or not isinstance(root, LocalDir)
            or self._prev_entries < walk_helper.SPLIT_MIN_ENTRIES
            or not self._listings.path.exists()  # the helper only reads it
        ):
            return None
        return walk_helper.WalkHelper.start(
            root,
            list(prev_maps[0].get("st", ())),
            self._listings.path,
            one_file_system=self._one_fs,
            root_dev=self._root_dev,
            path_filter=self._filter,
        )

    def _frame(
        self, d: SourceDir | None, rel: bytes, prevs: list[NodeMap], selection: Selection | None
    ) -> _Frame:
        names: list[bytes] = []
        if d is not None:
            try:
                names = d.names()
            except OSError as exc:
                self._stats.warn(os.fsdecode(rel) or ".", f"cannot list: {describe_os_error(exc)}")
            if selection is not None:
                wanted = set(names)
                for missing in sorted(n for n in selection if n not in wanted):
                    path = os.fsdecode(rel + b"/" + missing if rel else missing)
                    self._stats.warn(path, "selected path does not exist")
                names = [n for n in names if n in selection]
        # the helper's verdicts serve a directory with one previous record, no selection
        helper = self._helper if len(prevs) == 1 and selection is None else None
        vouched = None
        if helper is not None:
            # a subdirectory the helper found unchanged is not walked (``_dir``): its
            # listing is not read ahead (each row read drops the GIL and waits for it)
            prefix = rel + b"/" if rel else b""

            def vouched(record: NodeMap) -> bool:
                return helper.holds(prefix + record["n"], record)

        listings = [
            PreviousListing(self._repo, list(p.get("st", ())), self._listings, vouched)
            for p in prevs
        ]
        self._counts.dirs_scanned += 1
        frame = _Frame(d, names, 0, rel, listings, selection)
        if helper is not None and d is not None:
            # its stat after its listing: the directory the helper saw, unchanged since
            frame.flat = helper.take_flat(rel, list(prevs[0].get("st", ())), d.stat_self)
        return frame

    def _raw_run(self, frame: _Frame) -> tuple[os.stat_result | None, bool]:
        """Take the run of entries from ``frame.index`` on that are unchanged regular
        files with one link or unchanged symlinks (the cases ``_entry`` would send
        as ``RawFile`` / raw ``Entry``), matched in the only previous listing's
        current tree blob, and send them as one ``RawRun`` (which refers to the
        previous records by position: they are decoded only if the tree saver needs
        them). Returns ``(st, again)``: ``again`` when the run stopped at a bound
        (batch size, end of a previous tree blob) and another may follow; else
        ``st`` is the lstat result of the entry it stopped at, when taken
        (``_entry`` uses it rather than asking again).

        An entry in the walk helper's flat verdict on this directory (``frame.flat``)
        is taken without ``lstat``: the helper compared the same key with the same
        previous tree blobs; its ``sts`` entry is None.

        The test is ``unchanged`` (size, mtime, ctime, inode, mode, rdev) against the
        record of the same name, exactly as for a single entry, on the compact
        listing's key tuples: the mode decides the type (a regular file compares
        its size, anything else 0, as the stored size of a non-file is 0).
        """
        d = frame.dir
        assert d is not None
        names = frame.names
        listing = frame.prev[0]
        if frame.index < len(names):  # past previous entries deleted since (as ``find``)
            listing.skip_before(names[frame.index])
        blob = listing.blob
        pnames = blob.listing.names
        keys = blob.listing.keys
        lstat = d.lstat
        is_reg, is_lnk = stat.S_ISREG, stat.S_ISLNK
        i = start = frame.index
        j = first = listing.i
        # bounded events and cancel checks; one previous tree blob per run
        end = min(len(names), start + EVENT_BATCH, start + len(pnames) - j)
        sts: list[os.stat_result | None] = []
        files = size = 0
        st: os.stat_result | None = None
        flat = frame.flat
        while i < end:
            name = names[i]
            if pnames[j] != name:
                st = None
                break
            if flat is not None and name in flat:
                key = keys[j]
                if is_reg(key[4]):
                    files += 1
                    size += key[0]
                elif not is_lnk(key[4]):  # _entry's cases (the helper checked it)
                    st = None
                    break
                sts.append(None)
                i += 1
                j += 1
                continue
            try:
                st = lstat(name)
            except OSError:
                st = None  # _entry asks again and reports it
                break
            mode = st.st_mode
            if is_reg(mode):
                # same mode implies a regular file before too; hard links go through _file
                if st.st_nlink != 1 or keys[j] != (
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                    mode,
                    st.st_rdev,
                ):
                    break
                files += 1
                size += st.st_size
            elif not is_lnk(mode) or keys[j] != (
                0,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                mode,
                st.st_rdev,
            ):
                break
            sts.append(st)
            i += 1
            j += 1
        else:
            st = None
        if i == start:
            return st, False
        frame.index = i
        counts = self._counts
        counts.files_scanned += i - start
        counts.bytes_scanned += size
        counts.files_unchanged += files
        owns = False
        if files and not frame.lent:  # one reference per directory, as for RawFile
            d.retain()
            frame.lent = owns = True
        self._emit(RawRun(PrevRun(blob, first, j), sts, d, frame.rel, owns), i - start)
        listing.i = j - 1
        listing.take()  # past the run; loads the next tree blob at the end of this one
        return st, st is None and i < len(names)

    def _entry(
        self, frame: _Frame, name: bytes, ahead: os.stat_result | None = None
    ) -> _Frame | None:
        """Handle one entry; ``ahead``: its lstat result when ``_raw_run`` took it."""
        rel = frame.rel + b"/" + name if frame.rel else name
        if self._filter.active and self._filter.excluded(name, rel):
            return None
        d = frame.dir
        assert d is not None
        if ahead is not None:
            st = ahead
        else:
            try:
                st = d.lstat(name)
            except OSError as exc:
                self._stats.warn(os.fsdecode(rel), describe_os_error(exc))
                return None
        mode = st.st_mode
        is_dir = stat.S_ISDIR(mode)
        if not is_dir and self._filter.has_include and not self._filter.included(name, rel):
            return None
        prevs: list[NodeMap] = []
        first_listing_match = False
        key = None  # a small file's previous record is needed only when it is unchanged
        if stat.S_ISREG(mode) and self._saver.is_small(st):
            key = stat_key(st, st.st_size)
        for i, listing in enumerate(frame.prev):
            found = listing.find(name, key)
            if found is not None:
                prevs.append(found)
                first_listing_match = first_listing_match or i == 0
        if frame.reuse is not None and not first_listing_match:
            frame.reuse = None
        if stat.S_ISREG(mode):
            if not self._file(frame, d, name, st, rel, prevs) and frame.reuse is not None:
                frame.reuse = None
            return None
        if is_dir:
            return self._dir(d, frame, name, st, rel, prevs, first_listing_match)
        self._counts.files_scanned += 1
        kind = node_type(mode)
        for p in prevs:
            if p.get("t") == kind and unchanged(p, st):
                self._emit(Entry(None, rel, raw=p))  # a symlink's target changes its inode
                return None
        frame.reuse = None
        node = node_from_stat(name, st)
        if stat.S_ISLNK(mode):
            try:
                node.link_target = d.read_link(name)
            except OSError as exc:
                self._stats.warn(os.fsdecode(rel), describe_os_error(exc))
                return None
        self._read_xattrs(d, node, rel, None)
        self._emit(Entry(node, rel))
        return None

    def _read_xattrs(self, d: SourceDir, node: Node, rel: bytes, prev: Node | None) -> None:
        if not self._xattrs:
            return
        if prev is not None:  # same inode and ctime: xattrs and ACLs cannot have changed
            node.xattrs, node.acl_access, node.acl_default = (
                prev.xattrs,
                prev.acl_access,
                prev.acl_default,
            )
            return
        try:
            attrs = d.read_xattrs(node.name)
        except OSError as exc:
            self._stats.warn(os.fsdecode(rel), f"extended attributes: {describe_os_error(exc)}")
            return
        self._set_xattrs(node, attrs)

    @staticmethod
    def _set_xattrs(node: Node, attrs: dict[bytes, bytes]) -> None:
        if attrs:
            node.xattrs, access, default = split_acls(attrs)
            node.acl_access = access or b""
            node.acl_default = default or b""

    def _file(
        self,
        frame: _Frame,
        d: SourceDir,
        name: bytes,
        st: os.stat_result,
        rel: bytes,
        prevs: list[NodeMap],
    ) -> bool:
        """Handle a regular file; True when its previous record was reused as is."""
        counts = self._counts
        counts.files_scanned += 1
        counts.bytes_scanned += st.st_size
        prev = None
        for p in prevs:
            if p.get("t") == "file" and unchanged(p, st):
                prev = p
                break
        if prev is not None and st.st_nlink == 1:
            # the tree saver checks (off this thread) that its chunks are still stored
            counts.files_unchanged += 1
            owns = not frame.lent  # one reference per directory, not per file
            if owns:
                d.retain()
                frame.lent = True
            self._emit(RawFile(prev, rel, d, st, owns))
            return True
        if (
            prev is not None
            and not self._trust_reused
            and not all(map(self._writer.has_blob, prev.get("c", ())))
        ):
            prev = None  # content gone (garbage-collected): read the file again
        node = node_from_stat(name, st)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            first = self._hardlinks.get(key)
            if first is not None:
                first.left -= 1
                if first.left <= 0:
                    del self._hardlinks[key]
                node.link_to = first.path
                self._read_xattrs(d, node, rel, first.node)
                if first.pending is None:
                    node.content, node.holes = first.node.content, first.node.holes
                self._emit(Entry(node, rel, first.pending))
                return False
        pending: PendingContent | None = None
        if prev is not None:
            old = node_from_map(prev)
            node.content, node.holes = old.content, old.holes
            counts.files_unchanged += 1
            self._read_xattrs(d, node, rel, old)
        else:
            self._stats.current_path = os.fsdecode(rel)
            if st.st_size == 0:
                # empty at lstat time: nothing to read (size and mtime are in the node)
                self._read_xattrs(d, node, rel, None)
            elif self._saver.is_small(st):
                pending = self._saver.save_small(d, name, st)
            else:
                # a checkpoint may hold the stored prefix of this file: read only the rest
                resume = None
                if st.st_nlink == 1:
                    resume = resumable_prefix(prevs, st, self._writer.has_blobs)
                pending = self._saver.save_large(d, name, st, resume=resume)
        if st.st_nlink > 1:
            self._hardlinks[key] = _Hardlink(rel, pending, node, st.st_nlink - 1)
        self._emit(Entry(node, rel, pending))
        if pending is not None and pending.progress is not None:
            # hand the large file to the tree saver now (it checkpoints while waiting for
            # it) and notice a cancel between large files, not only every 256 entries
            self._flush_events()
            self._check_cancel()
        return False

    def _reused_xattrs(self, node: Node, reuse: NodeMap) -> None:
        """A reused directory's xattrs and ACLs, from its previous record (same inode and
        ctime: they cannot have changed)."""
        if self._xattrs:
            xattrs = reuse.get("x")
            node.xattrs = dict(xattrs) if xattrs else {}
            node.acl_access = reuse.get("aa", b"")
            node.acl_default = reuse.get("ad", b"")

    def _reuse_checked(
        self, node: Node, rel: bytes, reuse: NodeMap, verdict: walk_helper.Verdict
    ) -> None:
        """A subdirectory the helper found unchanged: its previous record, as the walk
        of it would have reused it (``LeaveDir(reuse)`` of an empty, all-raw buffer)."""
        self._reused_xattrs(node, reuse)
        self._emit(EnterDir(node, rel))
        self._emit(LeaveDir(reuse))
        counts = self._counts
        counts.dirs_scanned += verdict.dirs
        counts.files_scanned += verdict.files
        counts.bytes_scanned += verdict.bytes
        counts.files_unchanged += verdict.unchanged

    def _dir(
        self,
        d: SourceDir,
        frame: _Frame,
        name: bytes,
        st: os.stat_result,
        rel: bytes,
        prevs: list[NodeMap],
        first_listing_match: bool,
    ) -> _Frame | None:
        """Enter a directory; None when the helper found its subtree unchanged (its
        previous record is then reused without opening it)."""
        node = node_from_stat(name, st)
        selection: Selection | None = None
        if frame.selection is not None:
            selection = frame.selection.get(name)
        prev_dirs = [p for p in prevs if p.get("t") == "dir"]
        reuse = None
        if first_listing_match and prev_dirs and unchanged(prev_dirs[0], st):
            reuse = prev_dirs[0]
        sub: SourceDir | None = None
        other_fs = self._one_fs and st.st_dev != self._root_dev
        if other_fs:
            reuse = None  # another filesystem: keep the mount point, not its content
        elif reuse is not None and self._helper is not None and selection is None:
            verdict = self._helper.take(rel, reuse)
            if verdict is not None:
                self._reuse_checked(node, rel, reuse, verdict)
                return None
        if not other_fs:
            try:
                sub = d.open_dir(name)
            except OSError as exc:
                reuse = None
                self._stats.warn(os.fsdecode(rel), f"cannot open: {describe_os_error(exc)}")
        if reuse is not None:
            self._reused_xattrs(node, reuse)
        elif sub is not None and self._xattrs:
            try:
                self._set_xattrs(node, sub.own_xattrs())
            except OSError as exc:
                self._stats.warn(os.fsdecode(rel), f"extended attributes: {describe_os_error(exc)}")
        else:
            self._read_xattrs(d, node, rel, None)
        self._emit(EnterDir(node, rel))
        child = self._frame(sub, rel, prev_dirs, selection)
        child.reuse = reuse if selection is None else None
        return child
