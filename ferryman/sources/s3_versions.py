"""``?versions=all``: every version of every object, not only the latest.

The tree then has two folders at its root (marked with ``user.s3.layout``):
``latest/`` holds the current objects exactly like a plain S3 share, and
``versions/`` holds, for every key, a folder named like the key's last segment
with one file per version: ``%v<LastModified>.<n>-<version id>`` (a delete
marker: ``%v<LastModified>.<n>-deleted-<version id>``, empty; ``n`` orders
versions of the same second), so a folder lists a key's history oldest first. Each version
file carries ``user.s3.version-id`` (and ``user.s3.delete-marker``,
``user.s3.is-latest``). Versions never change, so a second run only reads the
versions added since. Restoring ``versions/`` (or a whole point) into a bucket
replays each key's versions in order, delete markers included, so a versioned
target bucket gets the same history and the same current state.
"""

from __future__ import annotations

import errno
import os
import urllib.parse
from typing import Any

import botocore.exceptions

from ferryman.sources.s3 import (
    KEY,
    VERSION_ID,
    S3Dir,
    S3File,
    S3Source,
    _dir_stat,
    _Object,
    _stat,
    entry_name,
    object_error,
)

LAYOUT = b"user.s3.layout"
LATEST = b"latest"
VERSIONS = b"versions"
DELETE_MARKER = b"user.s3.delete-marker"
IS_LATEST = b"user.s3.is-latest"

Version = tuple[bytes, _Object]  # (file name, object version)


def _object(item: dict[str, Any], deleted: bool) -> _Object:
    version = str(item.get("VersionId") or "null")
    size = 0 if deleted else int(item.get("Size", 0))
    st = _stat(size, item.get("LastModified"), str(item.get("ETag", "")), version)
    extra: dict[bytes, bytes] = {}
    if item.get("IsLatest"):
        extra[IS_LATEST] = b"1"
    if deleted:
        extra[DELETE_MARKER] = b"1"
    return _Object(str(item["Key"]), version, st, extra)


def key_history(items: list[tuple[dict[str, Any], bool]]) -> list[Version]:
    """One key's versions and delete markers, oldest first, named ``%v<time>.<n>-[deleted-]<id>``.

    ``items`` are in listing order (S3 lists a key's versions newest first).
    Last-Modified has one-second resolution: ties keep the listing order, and the
    one marked latest is last; ``<n>`` numbers versions of the same second.
    """
    ranked = sorted(
        enumerate(items),
        key=lambda e: (
            e[1][0].get("LastModified"),
            bool(e[1][0].get("IsLatest")),
            -e[0],
        ),
    )
    out: list[Version] = []
    seen: dict[str, int] = {}
    for _, (item, deleted) in ranked:
        when = item.get("LastModified")
        stamp = when.strftime("%Y%m%dT%H%M%SZ") if when is not None else "0"
        n = seen.get(stamp, 0)
        seen[stamp] = n + 1
        vid = urllib.parse.quote(str(item.get("VersionId") or "null"), safe="")
        name = f"%v{stamp}.{n:03d}-{'deleted-' if deleted else ''}{vid}"
        out.append((name.encode(), _object(item, deleted)))
    return out


def is_delete_marker(obj: _Object) -> bool:
    return bool(obj.extra and DELETE_MARKER in obj.extra)


class _NoEntries:
    """What a bucket folder cannot hold: symlinks."""

    def read_link(self, name: bytes) -> bytes:
        raise OSError(errno.EINVAL, "not a symlink")

    def stat_self(self) -> os.stat_result:
        return _dir_stat()

    def retain(self) -> Any:
        return self

    def release(self) -> None:
        """Nothing to close."""


class VersionsRoot(_NoEntries):
    """The root of a ``versions=all`` share: ``latest/`` and ``versions/``."""

    def __init__(self, source: S3Source) -> None:
        self._source = source
        # one listing serves both the check in names() and the walk of versions/
        self._versions = VersionsDir(source, source.location.prefix, [], True)

    def names(self) -> list[bytes]:
        # the bucket must answer a version listing (unversioned: one "null" version each)
        self._versions.names()
        return [LATEST, VERSIONS]

    def lstat(self, name: bytes) -> os.stat_result:
        if name not in (LATEST, VERSIONS):
            raise FileNotFoundError(errno.ENOENT, f"{name!r} not listed")
        return _dir_stat()

    def open_dir(self, name: bytes) -> Any:
        prefix = self._source.location.prefix
        if name == LATEST:
            return _Marked(S3Dir(self._source, prefix), LATEST)
        if name == VERSIONS:
            return _Marked(self._versions, VERSIONS)
        raise FileNotFoundError(errno.ENOENT, f"{name!r} not listed")

    def open_file(self, name: bytes) -> S3File:
        raise IsADirectoryError(errno.EISDIR, f"{name!r} is a folder")

    def read_xattrs(self, name: bytes) -> dict[bytes, bytes]:
        return {LAYOUT: name}

    def own_xattrs(self) -> dict[bytes, bytes]:
        return {}


class _Marked:
    """A top folder of the versions layout: its own attributes name its role."""

    def __init__(self, inner: Any, role: bytes) -> None:
        self._inner = inner
        self._role = role

    def own_xattrs(self) -> dict[bytes, bytes]:
        return {LAYOUT: self._role}

    def retain(self) -> _Marked:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VersionsDir(_NoEntries):
    """A folder of ``versions/``: the versions of one key, and the keys below it."""

    def __init__(self, source: S3Source, prefix: str, own: list[Version], children: bool) -> None:
        self._source = source
        self.prefix = prefix
        self._files: dict[bytes, _Object] = dict(own)
        self._dirs: dict[bytes, tuple[str, list[Version], bool]] = {}
        self._listed = not children  # a key without keys below it needs no listing

    def _list(self) -> None:
        if self._listed:
            return
        loc = self._source.location
        subdirs: set[str] = set()
        keys: dict[str, list[tuple[dict[str, Any], bool]]] = {}
        try:
            pages = self._source.client.get_paginator("list_object_versions").paginate(
                Bucket=loc.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                for p in page.get("CommonPrefixes", []):
                    subdirs.add(str(p["Prefix"])[len(self.prefix) : -1])
                for v in page.get("Versions", []):
                    keys.setdefault(str(v["Key"]), []).append((v, False))
                for m in page.get("DeleteMarkers", []):
                    keys.setdefault(str(m["Key"]), []).append((m, True))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            where = f"versions of {loc.describe()}{self.prefix[len(loc.prefix) :]}"
            raise object_error(exc, where) from None
        for seg in subdirs | {k[len(self.prefix) :] for k in keys}:
            own = key_history(keys.get(self.prefix + seg, []))
            self._dirs[entry_name(seg).encode()] = (seg, own, seg in subdirs)
        self._listed = True

    def names(self) -> list[bytes]:
        """Version files (oldest first) and key folders, sorted bytewise."""
        self._list()
        return sorted([*self._files, *self._dirs])

    def lstat(self, name: bytes) -> os.stat_result:
        self._list()
        if name in self._dirs:
            return _dir_stat()
        if name in self._files:
            return self._files[name].st
        raise FileNotFoundError(errno.ENOENT, f"{name!r} not listed")

    def open_dir(self, name: bytes) -> VersionsDir:
        self._list()
        if name not in self._dirs:
            raise NotADirectoryError(errno.ENOTDIR, f"{name!r} is not a directory")
        seg, own, children = self._dirs[name]
        return VersionsDir(self._source, self.prefix + seg + "/", own, children)

    def open_file(self, name: bytes) -> S3File:
        self._list()
        obj = self._files.get(name)
        if obj is None or is_delete_marker(obj):
            raise FileNotFoundError(errno.ENOENT, f"{name!r} is not an object version")
        return S3File(self._source, obj)

    def read_xattrs(self, name: bytes) -> dict[bytes, bytes]:
        """A version's attributes; a delete marker's without a request (it has no HEAD)."""
        self._list()
        obj = self._files.get(name)
        if obj is None:
            return {}
        if is_delete_marker(obj):
            rel = obj.key[len(self._source.location.prefix) :].encode()
            return {KEY: rel, VERSION_ID: (obj.version or "null").encode(), **(obj.extra or {})}
        return self._source.head_metadata(obj)

    def own_xattrs(self) -> dict[bytes, bytes]:
        return {}
