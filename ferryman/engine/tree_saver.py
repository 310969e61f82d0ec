"""Tree saver: turns the scanner's ordered event stream into tree blobs, on its own thread.

The scanner runs ahead and sends batches of events (enter dir, entry, leave
dir, checkpoint) through a bounded queue; this thread waits for each file's
content in order (``PendingContent.result()``), so the scanner and the workers
never wait for a directory to complete. Each directory level keeps at most one
tree blob's worth of nodes in memory; full blobs are stored as soon as they
fill. Periodic checkpoints are taken here, since this thread knows what is
complete; the scanner only asks for one when the task is cancelled.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ferryman.engine.file_saver import PendingContent
from ferryman.engine.nodes import MAX_NODES_PER_TREE, Node, store_tree
from ferryman.engine.ports import RepositoryPort, WriterPort
from ferryman.engine.stats import StatsCollector
from ferryman.repository.tree import TARGET_TREE_BYTES


@dataclass(slots=True)
class EnterDir:
    """The scanner entered a directory (its node, without subtrees yet)."""

    node: Node
    path: bytes


@dataclass(slots=True)
class Entry:
    """A non-directory entry; ``pending`` is set when its content is being stored."""

    node: Node
    path: bytes
    pending: PendingContent | None = None


@dataclass(slots=True)
class LeaveDir:
    """The scanner finished the directory entered last."""


@dataclass(slots=True)
class CheckpointNow:
    """Save a checkpoint of everything before this event."""


Event = EnterDir | Entry | LeaveDir | CheckpointNow
CheckpointCallback = Callable[[Node], None]


@dataclass(slots=True)
class _Builder:
    node: Node
    buffer: list[Node] = field(default_factory=list)
    blob_ids: list[bytes] = field(default_factory=list)
    approx_bytes: int = 0


def approx_size(node: Node) -> int:
    """Rough encoded size of a node (keeps tree blobs near ``TARGET_TREE_BYTES``)."""
    size = 120 + len(node.name) + 34 * (len(node.content) + len(node.subtrees))
    if node.xattrs:
        size += sum(len(k) + len(v) + 4 for k, v in node.xattrs.items())
    return size + len(node.acl_access) + len(node.acl_default) + len(node.link_target)


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
        max_nodes: int = MAX_NODES_PER_TREE,
        queue_batches: int = 64,
        checkpoint_interval: float = 300.0,
    ) -> None:
        self._interval = checkpoint_interval
        self._last_checkpoint = time.monotonic()
        self._repo = repo
        self._writer = writer
        self._stats = collector
        self._on_checkpoint = on_checkpoint
        self._max_nodes = max_nodes
        self._queue: queue.Queue[list[Event] | None] = queue.Queue(maxsize=queue_batches)
        self._stack: list[_Builder] = []
        self.root: Node | None = None
        self.error: BaseException | None = None
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
        if self.error is not None:
            raise TreeSaverFailed(str(self.error)) from self.error
        return self.root

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self.error is not None:
                continue  # drain so the scanner never blocks on a dead consumer
            try:
                for ev in batch:
                    self._handle(ev)
                    if time.monotonic() - self._last_checkpoint >= self._interval:
                        self._handle(CheckpointNow())
            except BaseException as exc:  # reported to the scanner by put()/finish()
                self.error = exc

    def _handle(self, ev: Event) -> None:
        if isinstance(ev, Entry):
            node = ev.node
            if ev.pending is not None:
                out = ev.pending.result()
                if out.error is not None:
                    self._stats.warn(os.fsdecode(ev.path), out.error)
                    return
                if out.warning is not None:
                    self._stats.warn(os.fsdecode(ev.path), out.warning)
                node.content = out.content
                node.size = out.size
                node.holes = out.holes
            self._add(node)
        elif isinstance(ev, EnterDir):
            self._stack.append(_Builder(ev.node))
        elif isinstance(ev, LeaveDir):
            b = self._stack.pop()
            if b.buffer or not b.blob_ids:
                b.blob_ids.append(self._store(b.buffer))
            b.node.subtrees = b.blob_ids
            if self._stack:
                self._add(b.node)
            else:
                self.root = b.node
        else:
            self._last_checkpoint = time.monotonic()
            if self._on_checkpoint is not None and self._stack:
                self._on_checkpoint(self.partial_root())

    def _add(self, node: Node) -> None:
        b = self._stack[-1]
        b.buffer.append(node)
        b.approx_bytes += approx_size(node)
        if len(b.buffer) >= self._max_nodes or b.approx_bytes >= TARGET_TREE_BYTES:
            b.blob_ids.append(self._store(b.buffer))
            b.buffer = []
            b.approx_bytes = 0

    def _store(self, nodes: list[Node]) -> bytes:
        blob_id = store_tree(self._repo, self._writer, nodes)
        self._stats.add(trees_written=1)
        return blob_id

    def partial_root(self) -> Node:
        """The root node of a tree holding everything completed so far (for checkpoints)."""
        child: Node | None = None
        for b in reversed(self._stack):
            nodes = b.buffer + ([child] if child is not None else [])
            ids = list(b.blob_ids)
            for i in range(0, max(len(nodes), 1), self._max_nodes):
                ids.append(self._store(nodes[i : i + self._max_nodes]))
            child = dataclasses.replace(b.node, subtrees=ids)
        assert child is not None
        return child
