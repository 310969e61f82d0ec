"""Object storage (any S3-protocol server) as a backup source: ``s3://bucket[/prefix]?endpoint=…``.

Objects become a tree: the key (relative to the share's prefix) is split at
``/``; every segment but the last is a directory, the last is a regular file.
Directories are listed one at a time (``ListObjectsV2`` with a ``/``
delimiter), so the walk streams like on a file system. Segments that are not
valid entry names (``""`` from ``a//b`` or a folder marker ``a/``, ``.``, ``..``)
or that start with ``%`` get a ``%`` in front; an object whose name is also a
"directory" (keys ``a`` and ``a/b``) gets one more. The exact key is always kept
in the ``user.s3.key`` attribute, which restores to a bucket use.

Change detection works through the ordinary stat comparison: size is the
object size, mtime and ctime its Last-Modified, the inode a 63-bit hash of its
ETag (and version id), so an object with the same ETag, size and
Last-Modified is not read again and keeps its chunk list.

With ``?versions=all`` every version is kept (see ``s3_versions``).

Content type, the standard headers, user metadata, tags, ETag and version id
are kept as extended attributes under ``user.s3.`` (see docs/format.md), read
from the GET response of each object read (plus one ``GetObjectTagging``).
Objects are read by the engine's saver workers, so many GETs run at once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
import urllib.parse
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from ferryman.repository.backend.s3 import make_client
from ferryman.sources.base import SourceUnavailable

XATTR_PREFIX = b"user.s3."
KEY = b"user.s3.key"
ETAG = b"user.s3.etag"
VERSION_ID = b"user.s3.version-id"
TAGS = b"user.s3.tags"
META_PREFIX = b"user.s3.meta."
# GET/PUT parameters kept as attributes (the response field and the PUT argument share the name)
HEADERS = {
    "ContentType": b"user.s3.content-type",
    "ContentEncoding": b"user.s3.content-encoding",
    "ContentDisposition": b"user.s3.content-disposition",
    "ContentLanguage": b"user.s3.content-language",
    "CacheControl": b"user.s3.cache-control",
}

_URL_OPTIONS = {"endpoint", "region", "versions"}
_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled"}
_FILE_MODE = stat.S_IFREG | 0o644
_DIR_MODE = stat.S_IFDIR | 0o755


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where objects are: bucket, key prefix (``""`` or ending in ``/``), server."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None
    all_versions: bool = False  # ?versions=all: every version (s3_versions), not only the latest

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket[/prefix]?endpoint=…&region=…``; ``ValueError`` with a user message."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"an S3 share URL looks like s3://bucket[/prefix]?endpoint=...: {url!r}")
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted(set(query) - _URL_OPTIONS)
    if unknown:
        hint = (
            " (credentials go in --access-key-env/--secret-key-env)"
            if any(k in ("access_key", "secret_key") for k in unknown)
            else ""
        )
        raise ValueError(f"unknown S3 share URL option(s): {', '.join(unknown)}{hint}")
    endpoint = query.get("endpoint", [None])[-1]
    if endpoint is not None and urllib.parse.urlparse(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"the S3 endpoint must be an http:// or https:// URL: {endpoint!r}")
    versions = query.get("versions", ["latest"])[-1]
    if versions not in ("latest", "all"):
        raise ValueError(f"versions must be 'latest' or 'all', not {versions!r}")
    prefix = parsed.path.strip("/")
    return S3Location(
        all_versions=versions == "all",
        bucket=parsed.netloc,
        prefix=prefix + "/" if prefix else "",
        endpoint=endpoint,
        region=query.get("region", [None])[-1],
    )


def object_error(exc: Exception, what: str) -> OSError:
    """An ``OSError`` the engine reports per path (vanished, permission denied...)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _MISSING or status == "404":
            return FileNotFoundError(errno.ENOENT, f"{what}: no such object")
        if code in _DENIED or status == "403":
            return PermissionError(errno.EACCES, f"{what}: access denied ({code or status})")
        return OSError(errno.EIO, f"{what}: {code or status}")
    return OSError(errno.EIO, f"{what}: {exc}")


def _stat(size: int, last_modified: Any, etag: str, version: str | None) -> os.stat_result:
    ns = int(last_modified.timestamp()) * 1_000_000_000 if last_modified is not None else 0
    digest = hashlib.blake2b(f"{etag}\0{version or ''}".encode(), digest_size=8).digest()
    ino = int.from_bytes(digest, "big") >> 1
    sec = ns // 1_000_000_000
    blocks = (size + 511) // 512  # never taken for sparse
    uid, gid = os.getuid(), os.getgid()
    fsec = float(sec)
    # the 10 tuple fields, then float times, ns times, blksize, blocks, rdev
    fields = (_FILE_MODE, ino, 0, 1, uid, gid, size, sec, sec, sec)
    return os.stat_result((*fields, fsec, fsec, fsec, ns, ns, ns, 1 << 20, blocks, 0))


def _dir_stat() -> os.stat_result:
    uid, gid = os.getuid(), os.getgid()
    fields = (_DIR_MODE, 0, 0, 1, uid, gid, 0, 0, 0, 0)
    return os.stat_result((*fields, 0.0, 0.0, 0.0, 0, 0, 0, 4096, 0, 0))


def entry_name(segment: str) -> str:
    """The tree name of a key segment that does not clash (``%`` escapes, see module doc)."""
    if segment in ("", ".", "..") or segment.startswith("%"):
        return "%" + segment
    return segment


@dataclass(slots=True)
class _Object:
    key: str
    version: str | None
    st: os.stat_result
    extra: dict[bytes, bytes] | None = None  # more attributes (versions: latest, delete marker)


def _metadata(
    source: S3Source,
    key: str,
    version: str | None,
    resp: dict[str, Any],
    extra: dict[bytes, bytes] | None = None,
) -> dict[bytes, bytes]:
    """The ``user.s3.*`` attributes of an object from a GET/HEAD response (+ its tags)."""
    attrs: dict[bytes, bytes] = {KEY: key[len(source.location.prefix) :].encode()}
    attrs[ETAG] = str(resp.get("ETag", "")).encode()
    if version and version != "null":
        attrs[VERSION_ID] = version.encode()
    for field, name in HEADERS.items():
        if resp.get(field):
            attrs[name] = str(resp[field]).encode()
    for k, v in (resp.get("Metadata") or {}).items():
        attrs[META_PREFIX + k.encode()] = v.encode()
    # a GET answers x-amz-tagging-count when the object has tags: no tagging request
    # for untagged objects (HEAD does not say, so empty objects always ask)
    has_tags = resp.get("TagCount", 0) > 0 if resp.get("_get") else True
    tags = source.tags(key, version) if has_tags else {}
    if tags:
        attrs[TAGS] = urllib.parse.urlencode(sorted(tags.items())).encode()
    if extra:
        attrs.update(extra)
    return attrs


class S3File:
    """One object being read: a streamed GET, range GETs when reads jump."""

    def __init__(self, source: S3Source, obj: _Object) -> None:
        self._source = source
        self._obj = obj
        self._st = obj.st
        self._body: Any = None
        self._pos = 0
        self._resp: dict[str, Any] | None = None

    def _get(self, offset: int) -> None:
        self.close()
        args: dict[str, Any] = {"Bucket": self._source.location.bucket, "Key": self._obj.key}
        if self._obj.version:
            args["VersionId"] = self._obj.version
        if offset:
            args["Range"] = f"bytes={offset}-"
        try:
            resp = self._source.client.get_object(**args)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                self._body, self._pos = None, offset
                return
            raise object_error(exc, self._obj.key) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise object_error(exc, self._obj.key) from None
        resp["_get"] = True
        self._resp = resp
        total = resp.get("ContentLength", 0) + offset
        if "ContentRange" in resp:
            total = int(str(resp["ContentRange"]).rsplit("/", 1)[-1])
        # what was read is what the object is now (replaced since the listing: a change)
        self._st = _stat(
            total, resp.get("LastModified"), str(resp.get("ETag", "")), self._obj.version
        )
        self._body, self._pos = resp["Body"], offset

    def fstat(self) -> os.stat_result:
        """The listing's stat until read, then the stat of what the GET returned."""
        return self._st

    def read_at(self, buf: bytearray | memoryview, offset: int) -> int:
        """Read from ``offset`` (sequential reads continue one streamed GET)."""
        if self._resp is None or offset != self._pos:
            self._get(offset)
        if self._body is None:
            return 0
        try:
            data = self._body.read(len(buf))
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise object_error(exc, self._obj.key) from None
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read_all(self, size_hint: int) -> bytes:
        """The whole object in one GET."""
        self._get(0)
        if self._body is None:
            return b""
        try:
            data: bytes = self._body.read()
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise object_error(exc, self._obj.key) from None
        self._pos = len(data)
        return data

    def data_extents(self, size: int) -> list[tuple[int, int]]:
        """Objects have no holes."""
        return [(0, size)] if size else []

    def read_xattrs(self) -> dict[bytes, bytes]:
        """Headers, user metadata, tags, ETag and version id of the object read."""
        if self._resp is None:
            return self._source.head_metadata(self._obj)
        return _metadata(
            self._source, self._obj.key, self._obj.version, self._resp, self._obj.extra
        )

    def close(self) -> None:
        """Release the HTTP connection."""
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None


class S3Dir:
    """One "directory": the keys under a prefix, listed on first use."""

    def __init__(self, source: S3Source, prefix: str) -> None:
        self._source = source
        self.prefix = prefix
        self._files: dict[bytes, _Object] = {}
        self._dirs: dict[bytes, str] = {}
        self._listed = False

    def _list(self) -> None:
        if self._listed:
            return
        files: list[_Object] = []
        dirs: list[str] = []
        loc = self._source.location
        try:
            pages = self._source.client.get_paginator("list_objects_v2").paginate(
                Bucket=loc.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                dirs.extend(
                    p["Prefix"][len(self.prefix) : -1] for p in page.get("CommonPrefixes", [])
                )
                for o in page.get("Contents", []):
                    st = _stat(int(o["Size"]), o.get("LastModified"), str(o.get("ETag", "")), None)
                    files.append(_Object(str(o["Key"]), None, st))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise object_error(
                exc, f"listing {loc.describe()}{self.prefix[len(loc.prefix) :]}"
            ) from None
        for seg in dirs:
            self._dirs[entry_name(seg).encode()] = seg
        for obj in files:
            name = entry_name(obj.key[len(self.prefix) :]).encode()
            while name in self._dirs or name in self._files:
                name = b"%" + name
            self._files[name] = obj
        self._listed = True

    def names(self) -> list[bytes]:
        """Entry names, sorted bytewise."""
        self._list()
        return sorted([*self._files, *self._dirs])

    def stat_self(self) -> os.stat_result:
        """Directories have no metadata of their own."""
        return _dir_stat()

    def lstat(self, name: bytes) -> os.stat_result:
        """The object's stat from the listing."""
        self._list()
        if name in self._dirs:
            return _dir_stat()
        if name in self._files:
            return self._files[name].st
        raise FileNotFoundError(errno.ENOENT, f"{name!r} not listed")

    def open_dir(self, name: bytes) -> S3Dir:
        """The keys under ``prefix/segment/``."""
        self._list()
        if name not in self._dirs:
            raise NotADirectoryError(errno.ENOTDIR, f"{name!r} is not a directory")
        return S3Dir(self._source, self.prefix + self._dirs[name] + "/")

    def open_file(self, name: bytes) -> S3File:
        """An object; its content is fetched on the first read."""
        self._list()
        if name not in self._files:
            raise FileNotFoundError(errno.ENOENT, f"{name!r} not listed")
        return S3File(self._source, self._files[name])

    def read_link(self, name: bytes) -> bytes:
        """Objects are never symlinks."""
        raise OSError(errno.EINVAL, "not a symlink")

    def read_xattrs(self, name: bytes) -> dict[bytes, bytes]:
        """An object's attributes (one HEAD and one tagging request)."""
        self._list()
        if name in self._files:
            return self._source.head_metadata(self._files[name])
        return {}

    def own_xattrs(self) -> dict[bytes, bytes]:
        """Directories have none."""
        return {}

    def retain(self) -> S3Dir:
        """No handle to keep open: listing state only."""
        return self

    def release(self) -> None:
        """Nothing to close."""


class S3Source:
    """A bucket or a prefix of it, read through one thread-safe boto3 client."""

    def __init__(
        self,
        location: S3Location,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_connections: int = 32,
    ) -> None:
        self.location = location
        self.description = location.describe()
        self.client: Any = make_client(
            endpoint=location.endpoint,
            region=location.region or "us-east-1",
            access_key=access_key,
            secret_key=secret_key,
            max_pool_connections=max_connections,
        )
        self._no_tagging = threading.Event()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Source:
        """Open ``s3://bucket[/prefix]?endpoint=…`` (``ValueError`` on a bad URL)."""
        return cls(parse_s3_url(url), **kwargs)

    def open_root(self) -> Any:
        """The share's prefix; the bucket must be reachable and listable."""
        root: Any = S3Dir(self, self.location.prefix)
        if self.location.all_versions:
            from ferryman.sources.s3_versions import VersionsRoot

            root = VersionsRoot(self)
        try:
            root.names()
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot read {self.description}: {source_reason(exc)}"
            ) from None
        return root

    def snapshot(self) -> AbstractContextManager[S3Source]:
        """Object stores have no snapshot: the live bucket is read."""
        return contextlib.nullcontext(self)

    def tags(self, key: str, version: str | None) -> dict[str, str]:
        """An object's tags ({} when the server or the credentials do not allow reading them)."""
        if self._no_tagging.is_set():
            return {}
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": key}
        if version:
            args["VersionId"] = version
        try:
            resp = self.client.get_object_tagging(**args)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NotImplemented", "AccessDenied"):
                self._no_tagging.set()  # ask once, not once per object
                return {}
            raise object_error(exc, key) from None
        return {str(t["Key"]): str(t["Value"]) for t in resp.get("TagSet", [])}

    def head_metadata(self, obj: _Object) -> dict[bytes, bytes]:
        """Attributes of an object not read (empty objects) through a HEAD request."""
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": obj.key}
        if obj.version:
            args["VersionId"] = obj.version
        try:
            resp = self.client.head_object(**args)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise object_error(exc, obj.key) from None
        return _metadata(self, obj.key, obj.version, resp, obj.extra)


def source_reason(exc: OSError) -> str:
    """Why a bucket cannot be read, in words (wrong keys, no bucket, server down)."""
    text = exc.strerror or str(exc)
    for code, words in (
        ("InvalidAccessKeyId", "the access key is not known to the server"),
        ("SignatureDoesNotMatch", "wrong secret key"),
        ("NoSuchBucket", "no such bucket"),
        ("no such object", "no such bucket"),
        ("Could not connect", "the server cannot be reached"),
        ("Unable to locate credentials", "no credentials (set --access-key-env/--secret-key-env)"),
    ):
        if code in text:
            return f"{words} ({text})"
    return text
