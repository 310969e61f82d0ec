"""The slice of the repository API the engine uses, as structural protocols.

Typing against these (rather than the concrete classes) keeps the engine's
dependency on the repository explicit and small, and lets tests substitute
fakes where a real repository is not the point.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from ferryman.repository.tree import Node


class Chunk(Protocol):
    """One chunk cut by FastCDC (``data`` views the cut buffer)."""

    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def data(self) -> memoryview: ...


class Chunker(Protocol):
    """The repository's keyed FastCDC chunker."""

    @property
    def min_size(self) -> int: ...
    def cut_buf(self, buf: Any) -> Iterable[Chunk]: ...


class WriterPort(Protocol):
    """A repository writer (thread-safe ``add_blob``)."""

    def add_blob(self, kind: int, blob_id: bytes, data: Any, *, checked: bool = False) -> bool: ...
    def add_compressed_blob(
        self,
        kind: int,
        blob_id: bytes,
        method: int,
        body: Any,
        raw_len: int,
        *,
        checked: bool = False,
    ) -> bool: ...
    def add_blobs(
        self, kind: int, blobs: Sequence[tuple[bytes, Any]], *, checked: bool = False
    ) -> list[bool]: ...
    def add_compressed_blobs(
        self, kind: int, blobs: Sequence[tuple[bytes, int, Any, int]], *, checked: bool = False
    ) -> list[bool]: ...
    def has_blob(self, blob_id: bytes) -> bool: ...
    def has_blobs(self, blob_ids: Iterable[bytes]) -> set[bytes]: ...
    def trusts_points(self, point_ids: Iterable[str]) -> bool: ...
    def flush(self) -> None: ...


class RepositoryPort(Protocol):
    """Content-addressed blob access."""

    def chunker(self) -> Chunker: ...
    def blob_id(self, data: Any) -> bytes: ...
    def get_blob(self, blob_id: bytes) -> bytes: ...
    def prefetch_locations(self, blob_ids: list[bytes]) -> None: ...
    def get_blobs(self, blob_ids: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]: ...
    def get_tree(self, tree_id: bytes) -> list[Node]: ...
