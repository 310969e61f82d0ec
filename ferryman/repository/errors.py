"""Exceptions raised by the repository layer.

Every error derives from :class:`RepositoryError` and carries a message fit to
show to a user as is (no traceback needed to understand it).
"""

from __future__ import annotations


class RepositoryError(Exception):
    """Base class of every error raised by ``ferryman.repository``."""


class NotARepository(RepositoryError):
    """The location holds no repository (no ``config`` object)."""


class RepositoryExists(RepositoryError):
    """``init`` was asked to create a repository where one already exists."""


class UnsupportedVersion(RepositoryError):
    """The repository (or one of its objects) uses a format this code does not know."""


class WrongPassphrase(RepositoryError):
    """No key slot of the repository opens with the given passphrase."""


class CorruptObject(RepositoryError):
    """A stored object is truncated, damaged, forged or malformed."""


class BlobNotFound(RepositoryError):
    """A blob id is not in the repository's index."""


class ObjectNotFound(RepositoryError):
    """A backend object does not exist."""


class BackendError(RepositoryError):
    """The storage backend failed (permission, full disk, bad credentials...)."""


class TransientBackendError(BackendError):
    """A backend failure that may succeed when retried (network, throttling, 5xx)."""


class LeaseExpired(RepositoryError):
    """A writer could not keep its lease alive; it must not publish anything more."""


class KeySlotError(RepositoryError):
    """A key-slot operation is not possible (unknown slot, last slot...)."""


class IncompleteRepository(RepositoryError):
    """Reachability is unknown (an unreadable tree, an unindexed blob): GC must not guess."""
