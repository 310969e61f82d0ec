"""Restore into a bucket: every file of a restore point (or of some paths) becomes an object.

The key is the one the object had (``user.s3.key``, relative to the backed-up
prefix) under the target prefix, so a bucket restores to the same or another
bucket/prefix exactly; a file backed up from a folder gets its path as key.
Content type, the standard headers, user metadata and tags are sent with the
PUT. Objects are uploaded by a pool of workers (large ones in multipart parts,
streamed from the repository, never whole in memory). Restores into a folder
use the engine's ordinary local restore.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from ferryman.engine.browse import find_in_dir, find_node, split_path
from ferryman.engine.nodes import Node, iter_dir_nodes, load_root
from ferryman.engine.options import EngineError, RestoreResult
from ferryman.engine.restore_files import data_regions
from ferryman.engine.stats import RestoreStats, Warning_
from ferryman.repository import Repository, RepositoryError
from ferryman.sources.s3 import (
    HEADERS,
    KEY,
    META_PREFIX,
    TAGS,
    VERSION_ID,
    S3Source,
    object_error,
)
from ferryman.sources.s3_versions import DELETE_MARKER, LAYOUT, VERSIONS

SINGLE_PUT_LIMIT = 16 << 20
FETCH_BATCH = 8


class BucketRestoreFailed(EngineError):
    """Nothing could be restored (unknown point, target bucket unusable)."""


def _content(repo: Repository, node: Node) -> Iterator[bytes]:
    """The file's bytes in order, a few chunks fetched at a time; holes as zeros."""
    regions = data_regions(node.size, node.holes) if node.holes else [(0, node.size)]
    pos = 0
    ids = list(node.content)

    def stream() -> Iterator[bytes]:
        for i in range(0, len(ids), FETCH_BATCH):
            batch = ids[i : i + FETCH_BATCH]
            got = dict(repo.get_blobs(batch))
            for blob_id in batch:
                yield got[blob_id]

    pieces = stream()
    pending = b""
    for off, length in regions:
        if off > pos:
            yield bytes(off - pos)
        need = length
        while need > 0:
            if not pending:
                pending = next(pieces, b"")
                if not pending:
                    break
            take, pending = pending[:need], pending[need:]
            need -= len(take)
            yield take
        pos = off + length - need
    if pos < node.size:
        yield bytes(node.size - pos)


class _Reader(io.RawIOBase):
    """A read-only file object over an iterator of byte pieces (for multipart uploads)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buf = piece
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def put_args(node: Node) -> dict[str, Any]:
    """PUT parameters from the ``user.s3.*`` attributes of a node."""
    args: dict[str, Any] = {}
    attrs = node.xattrs
    for field, name in HEADERS.items():
        if name in attrs:
            args[field] = attrs[name].decode()
    meta = {
        k[len(META_PREFIX) :].decode(): v.decode()
        for k, v in attrs.items()
        if k.startswith(META_PREFIX)
    }
    if meta:
        args["Metadata"] = meta
    if TAGS in attrs:
        args["Tagging"] = attrs[TAGS].decode()
    return args


class BucketRestorer:
    """Uploads the files of a restore point into ``target`` (a bucket and prefix)."""

    def __init__(
        self, repo: Repository, target: S3Source, workers: int = 8, overwrite: str = "replace"
    ) -> None:
        self.repo = repo
        self.target = target
        self.overwrite = overwrite
        self.stats = RestoreStats()
        self.errors: list[Warning_] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers * 2)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="s3-restore")
        self._transfer = TransferConfig(
            multipart_threshold=SINGLE_PUT_LIMIT,
            multipart_chunksize=SINGLE_PUT_LIMIT,
            use_threads=False,
        )

    def _error(self, path: str, reason: str) -> None:
        with self._lock:
            self.stats.errors += 1
            self.errors.append(Warning_(path, reason))

    def walk(self, node: Node, path: list[str], cancel: threading.Event | None) -> None:
        """Upload a file node, or every file below a directory node.

        The versions of one key (files with ``user.s3.version-id``, from a
        ``versions=all`` share) are one job, uploaded oldest first, so the newest
        ends up current.
        """
        if cancel is not None and cancel.is_set():
            return
        if node.type == "dir":
            with self._lock:
                self.stats.dirs_restored += 1
            history: list[Node] = []
            for child in iter_dir_nodes(self.repo, node):
                name = child.name.decode("utf-8", "surrogateescape")
                if child.type == "file" and VERSION_ID in child.xattrs:
                    history.append(child)
                else:
                    self.walk(child, [*path, name], cancel)
            if history:
                self._submit(self._replay, history, path)
        elif node.type == "file":
            self._submit(self._upload, [node], path)
        else:
            with self._lock:
                self.stats.files_skipped += 1
            self._error("/".join(path), f"{node.type}: objects can only hold files, skipped")

    def _submit(self, job: Any, nodes: list[Node], path: list[str]) -> None:
        self._slots.acquire()  # bounds queued jobs (and the nodes they hold)

        def run() -> None:
            try:
                job(nodes, path)
            finally:
                self._slots.release()

        self._pool.submit(run)

    def _key(self, node: Node, shown: str) -> str:
        rel = node.xattrs[KEY].decode() if KEY in node.xattrs else shown
        return self.target.location.prefix + rel

    def _upload(self, nodes: list[Node], path: list[str]) -> None:
        shown = "/".join(path)
        for node in nodes:
            key = self._resolve_existing(node, shown)
            if key is None or not self._put(node, shown, key):
                return

    def _existing(self, key: str) -> Any:
        """The HEAD of an object already at ``key``, None when there is none."""
        try:
            return self.target.client.head_object(Bucket=self.target.location.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if isinstance(object_error(exc, key), FileNotFoundError):
                return None
            raise

    def _resolve_existing(self, node: Node, shown: str) -> str | None:
        """The overwrite policy for a plain object: the key to PUT, or None to skip."""
        key = self._key(node, shown)
        if self.overwrite == "replace":
            return key
        try:
            head = self._existing(key)
            if head is None:
                return key
            newer = node.mtime_ns <= int(head["LastModified"].timestamp()) * 1_000_000_000
            if self.overwrite == "skip" or (self.overwrite == "if-newer" and newer):
                with self._lock:
                    self.stats.files_skipped += 1
                return None
            for i in range(1, 10_000):  # keep-both, like a folder restore: KEY.restored[-N]
                candidate = key + ".restored" + ("" if i == 1 else f"-{i}")
                if self._existing(candidate) is None:
                    return candidate
            self._error(shown, "no free key for keep-both")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self._error(shown, str(object_error(exc, "existing object").strerror))
        return None

    def _replay(self, history: list[Node], path: list[str]) -> None:
        """One key's versions in order; a delete marker deletes (a new marker when versioned)."""
        shown = "/".join(path)
        for node in history:
            if DELETE_MARKER not in node.xattrs:
                if not self._put(node, shown):
                    return
                continue
            try:
                self.target.client.delete_object(
                    Bucket=self.target.location.bucket, Key=self._key(node, shown)
                )
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                self._error(shown, str(object_error(exc, "delete marker").strerror))
                return

    def _put(self, node: Node, shown: str, key: str | None = None) -> bool:
        """PUT one object (multipart when large); False (and an error listed) on failure."""
        try:
            key = key or self._key(node, shown)
            args = put_args(node)
            bucket = self.target.location.bucket
            client = self.target.client
            if node.size <= SINGLE_PUT_LIMIT:
                body = b"".join(_content(self.repo, node))
                client.put_object(Bucket=bucket, Key=key, Body=body, **args)
            else:
                reader = io.BufferedReader(_Reader(_content(self.repo, node)), 1 << 20)
                client.upload_fileobj(reader, bucket, key, ExtraArgs=args, Config=self._transfer)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self._error(shown, str(object_error(exc, "upload").strerror))
            return False
        except (RepositoryError, KeyError, ValueError) as exc:
            self._error(shown, f"cannot read the stored content: {exc}")
            return False
        except Exception as exc:  # boto3's S3UploadFailedError and the like: one object lost
            self._error(shown, f"{type(exc).__name__}: {exc}")
            return False
        with self._lock:
            self.stats.files_restored += 1
            self.stats.bytes_restored += node.size
        return True

    def finish(self) -> None:
        """Wait for every upload."""
        self._pool.shutdown(wait=True)


def restore_to_bucket(
    repo: Repository,
    point_id: str,
    target: S3Source,
    paths: list[bytes] | None = None,
    cancel: threading.Event | None = None,
    workers: int = 8,
    overwrite: str = "replace",
) -> RestoreResult:
    """Restore a restore point (or ``paths`` of it) into the target bucket/prefix.

    ``overwrite`` applies to objects already there as in a folder restore:
    ``replace``, ``skip``, ``if-newer`` (only when the stored one is newer than
    the object's Last-Modified) or ``keep-both`` (``KEY.restored``). A key's
    version history (``versions=all``) is always replayed.
    """
    started = time.monotonic()
    try:
        point = repo.load_restore_point(point_id)
        root = load_root(repo, point.root)
    except (RepositoryError, EngineError, ValueError) as exc:
        raise BucketRestoreFailed(f"restore point {point_id}: {exc}") from exc
    try:
        target.client.head_bucket(Bucket=target.location.bucket)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        reason = object_error(exc, target.description).strerror
        raise BucketRestoreFailed(f"cannot restore into {target.description}: {reason}") from None
    if overwrite not in ("replace", "skip", "if-newer", "keep-both"):
        raise BucketRestoreFailed(f"unknown overwrite policy {overwrite!r}")
    restorer = BucketRestorer(repo, target, workers, overwrite)
    try:
        if not paths:
            history = find_in_dir(repo, root, VERSIONS)
            if history is not None and history.xattrs.get(LAYOUT) == VERSIONS:
                # versions=all: replaying every version also leaves the latest current
                restorer.walk(history, ["versions"], cancel)
            else:
                restorer.walk(root, [], cancel)
        for raw in paths or []:
            try:
                parts = split_path(raw)
                chain = find_node(repo, root, parts)
            except (RepositoryError, EngineError, ValueError) as exc:
                restorer._error(raw.decode("utf-8", "replace"), str(exc))
                continue
            node = chain[-1] if chain else root
            restorer.walk(node, [p.decode("utf-8", "surrogateescape") for p in parts], cancel)
    finally:
        restorer.finish()
    stats = restorer.stats
    stats.seconds_total = time.monotonic() - started
    return RestoreResult(
        status="warning" if stats.errors else "success", stats=stats, errors=restorer.errors
    )
