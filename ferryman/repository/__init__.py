"""Ferryman's repository: encrypted, deduplicated, multi-writer storage format.

The format is specified byte for byte in ``docs/format.md``.
"""

from __future__ import annotations

from ferryman.repository.backend import (
    Backend,
    BackendStats,
    LocalBackend,
    RetryingBackend,
    open_backend,
)
from ferryman.repository.blob import KIND_DATA, KIND_TREE
from ferryman.repository.check import CheckReport
from ferryman.repository.config import ChunkerParams
from ferryman.repository.errors import (
    BackendError,
    BlobNotFound,
    CorruptObject,
    IncompleteRepository,
    KeySlotError,
    LeaseExpired,
    NotARepository,
    ObjectNotFound,
    RepositoryError,
    RepositoryExists,
    TransientBackendError,
    UnsupportedVersion,
    WrongPassphrase,
)
from ferryman.repository.gc import GCReport
from ferryman.repository.index import IndexEntry
from ferryman.repository.repository import Repository
from ferryman.repository.restore_point import RestorePoint
from ferryman.repository.tree import Node, decode_tree, encode_tree, split_tree
from ferryman.repository.writer import RepositoryWriter

BlobId = bytes

__all__ = [
    "KIND_DATA",
    "KIND_TREE",
    "Backend",
    "BackendError",
    "BackendStats",
    "BlobId",
    "BlobNotFound",
    "CheckReport",
    "ChunkerParams",
    "CorruptObject",
    "GCReport",
    "IncompleteRepository",
    "IndexEntry",
    "KeySlotError",
    "LeaseExpired",
    "LocalBackend",
    "Node",
    "NotARepository",
    "ObjectNotFound",
    "Repository",
    "RepositoryError",
    "RepositoryExists",
    "RepositoryWriter",
    "RestorePoint",
    "RetryingBackend",
    "TransientBackendError",
    "UnsupportedVersion",
    "WrongPassphrase",
    "decode_tree",
    "encode_tree",
    "open_backend",
    "split_tree",
]
