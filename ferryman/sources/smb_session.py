"""One authenticated SMB 2/3 session to a share, and the few requests the SMB source needs.

Built on smbprotocol's low-level API (``Connection``/``Session``/``TreeConnect``/
``Open``): one TCP connection and one session per task, shared by every thread
of the task. smbprotocol multiplexes concurrent requests over the connection
(message ids, a receiver thread), so several files are read at once over the
one session; reads are split into requests of ``READ_PIECE`` bytes and several
are kept in flight per file. Server errors become ``OSError`` with the errno a
local filesystem would give (ENOENT, EACCES...), so the engine's per-file
warnings read the same for every source.

See docs/decisions/0005-smb-source.md for why the low-level API.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from smbprotocol.connection import Connection
from smbprotocol.exceptions import (
    LogonFailure,
    SMBAuthenticationError,
    SMBException,
    SMBResponseException,
)
from smbprotocol.header import NtStatus
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    ImpersonationLevel,
    Open,
    ShareAccess,
    SMB2QueryDirectoryRequest,
    SMB2QueryDirectoryResponse,
    SMB2QueryInfoRequest,
    SMB2QueryInfoResponse,
    SMB2SetInfoRequest,
    SMB2SetInfoResponse,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from ferryman.sources.base import SourceUnavailable
from ferryman.sources.smb_url import SmbUrl

# access mask bits (MS-SMB2 2.2.13.1)
FILE_READ_DATA = 0x1
FILE_WRITE_DATA = 0x2
FILE_READ_EA = 0x8
FILE_WRITE_EA = 0x10
FILE_LIST_DIRECTORY = 0x1
FILE_READ_ATTRIBUTES = 0x80
FILE_WRITE_ATTRIBUTES = 0x100
DELETE = 0x10000
READ_CONTROL = 0x20000
WRITE_DAC = 0x40000
WRITE_OWNER = 0x80000
MAXIMUM_ALLOWED = 0x2000000

INFO_FILE = 1
INFO_SECURITY = 3
FILE_ALL_INFORMATION = 18
FILE_BASIC_INFORMATION = 4
FILE_END_OF_FILE_INFORMATION = 20
FILE_DISPOSITION_INFORMATION = 13
FILE_ID_FULL_DIRECTORY_INFORMATION = 38
# owner, group and DACL: what an ordinary backup account may read and write (a SACL
# needs the "manage auditing" privilege)
SD_PARTS = 0x1 | 0x2 | 0x4

READ_PIECE = 1 << 20  # bytes per READ request: 16 credits
READS_IN_FLIGHT = 8  # per file
CREDIT_PAYLOAD = 65536
FILETIME_EPOCH = 116444736000000000  # 1970-01-01 in 100 ns units since 1601-01-01

_ERRNOS = {
    NtStatus.STATUS_OBJECT_NAME_NOT_FOUND: errno.ENOENT,
    NtStatus.STATUS_OBJECT_PATH_NOT_FOUND: errno.ENOENT,
    NtStatus.STATUS_NOT_FOUND: errno.ENOENT,
    NtStatus.STATUS_NO_SUCH_FILE: errno.ENOENT,
    NtStatus.STATUS_DELETE_PENDING: errno.ENOENT,
    NtStatus.STATUS_ACCESS_DENIED: errno.EACCES,
    NtStatus.STATUS_PRIVILEGE_NOT_HELD: errno.EPERM,
    NtStatus.STATUS_SHARING_VIOLATION: errno.EBUSY,
    NtStatus.STATUS_OBJECT_NAME_COLLISION: errno.EEXIST,
    NtStatus.STATUS_FILE_IS_A_DIRECTORY: errno.EISDIR,
    NtStatus.STATUS_NOT_A_DIRECTORY: errno.ENOTDIR,
    NtStatus.STATUS_DIRECTORY_NOT_EMPTY: errno.ENOTEMPTY,
    NtStatus.STATUS_DISK_FULL: errno.ENOSPC,
    NtStatus.STATUS_OBJECT_NAME_INVALID: errno.EINVAL,
    NtStatus.STATUS_STOPPED_ON_SYMLINK: errno.ELOOP,
}

T = TypeVar("T")

# smbprotocol logs every request at INFO: far too chatty for a proxy's log
for _name in ("smbprotocol", "spnego"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class SmallRead:
    """What one compound open/read/query/close returned."""

    data: bytes
    all_information: bytes
    security: bytes | None


class SmbAuthFailed(SourceUnavailable):
    """The server refused the user name or password."""


def os_error(exc: SMBException, path: str) -> OSError:
    """An ``OSError`` (with the errno a local filesystem would give) for an SMB failure."""
    if isinstance(exc, SMBResponseException):
        status = exc.status
        code = _ERRNOS.get(status, errno.EIO)
        name = next((k for k, v in vars(NtStatus).items() if v == status), f"0x{status:08x}")
        reason = os.strerror(code) if status in _ERRNOS else f"SMB error {name}"
        err = OSError(code, reason, path)
    else:
        err = OSError(errno.EIO, f"SMB failure: {exc}", path)
    err.__cause__ = exc
    return err


def filetime_to_ns(ft: int) -> int:
    """100 ns units since 1601 (FILETIME) -> ns since the Unix epoch."""
    return (ft - FILETIME_EPOCH) * 100


def ns_to_filetime(ns: int) -> int:
    """ns since the Unix epoch -> FILETIME (100 ns since 1601)."""
    return ns // 100 + FILETIME_EPOCH


class SmbSession:
    """A connected, authenticated session with the share of ``url`` (thread-safe)."""

    def __init__(self, url: SmbUrl, password: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        where = f"{url.host}:{url.port}"
        try:
            self._conn = Connection(uuid.uuid4(), url.host, url.port)
            self._conn.connect(timeout=timeout)
        except (OSError, SMBException, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise SourceUnavailable(f"cannot reach SMB server {where}: {reason}") from exc
        self._closed = False
        try:
            self._session = Session(self._conn, url.username, password, require_encryption=False)
            self._session.connect()
        except (LogonFailure, SMBAuthenticationError) as exc:
            self.close()
            raise SmbAuthFailed(
                f"SMB server {where} refused the login of user '{url.username}': "
                "wrong user name or password"
            ) from exc
        except (OSError, SMBException) as exc:
            self.close()
            raise SourceUnavailable(f"SMB login to {where} failed: {exc}") from exc
        try:
            self._tree = TreeConnect(self._session, rf"\\{url.host}\{url.share}")
            self._tree.connect()
        except SMBResponseException as exc:
            self.close()
            if exc.status == NtStatus.STATUS_BAD_NETWORK_NAME:
                raise SourceUnavailable(f"SMB server {where} has no share '{url.share}'") from exc
            if exc.status == NtStatus.STATUS_ACCESS_DENIED:
                raise SourceUnavailable(
                    f"user '{url.username}' may not access share '{url.share}' on {where}"
                ) from exc
            raise SourceUnavailable(f"cannot connect to share '{url.share}': {exc}") from exc

    # -- plumbing ------------------------------------------------------------------------

    @property
    def max_read(self) -> int:
        return min(READ_PIECE, int(self._conn.max_read_size))

    @property
    def max_write(self) -> int:
        return min(READ_PIECE, int(self._conn.max_write_size))

    def _send(self, message: Any, payload: int) -> Any:
        """Send one request, waiting while the server's credit window is too small."""
        charge = max(1, (max(0, payload - 1) // CREDIT_PAYLOAD) + 1)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self._conn.send(
                    message,
                    sid=self._session.session_id,
                    tid=self._tree.tree_connect_id,
                    credit_request=charge + 32,  # grow the window: more requests in flight
                )
            except SMBException as exc:
                if "credits" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.002)  # other threads' replies return credits

    def call(self, path: str, fn: Callable[[], T]) -> T:
        """Run ``fn``, turning SMB failures into ``OSError`` naming ``path``."""
        try:
            return fn()
        except SMBException as exc:
            raise os_error(exc, path) from exc

    def unc(self, rel: str) -> str:
        return rf"\\{self.url.host}\{self.url.share}" + (f"\\{rel}" if rel else "")

    # -- requests ------------------------------------------------------------------------

    def open(
        self,
        rel: str,
        access: int,
        *,
        directory: bool | None = None,
        disposition: int = CreateDisposition.FILE_OPEN,
        attributes: int = 0,
    ) -> Open:
        """Open ``rel`` (share-relative, ``\\``-separated); never follows a reparse point."""
        options = CreateOptions.FILE_OPEN_REPARSE_POINT
        if directory is True:
            options |= CreateOptions.FILE_DIRECTORY_FILE
        elif directory is False:
            options |= CreateOptions.FILE_NON_DIRECTORY_FILE
        handle = Open(self._tree, rel)

        def create() -> Open:
            handle.create(
                ImpersonationLevel.Impersonation,
                access,
                attributes or FileAttributes.FILE_ATTRIBUTE_NORMAL,
                ShareAccess.FILE_SHARE_READ
                | ShareAccess.FILE_SHARE_WRITE
                | ShareAccess.FILE_SHARE_DELETE,
                disposition,
                options,
            )
            return handle

        return self.call(self.unc(rel), create)

    def _query_message(
        self, file_id: bytes, info_type: int, info_class: int, additional: int, size: int
    ) -> SMB2QueryInfoRequest:
        req = SMB2QueryInfoRequest()
        req["info_type"] = info_type
        req["file_info_class"] = info_class
        req["output_buffer_length"] = size
        req["additional_information"] = additional
        req["file_id"] = file_id
        return req

    def read_whole(self, rel: str, access: int, length: int, with_sd: bool) -> SmallRead:
        """Open, read ``length`` bytes from 0, query info (and the security descriptor) and
        close in ONE round trip (a related compound): a small file costs one request."""
        handle = Open(self._tree, rel)
        placeholder = handle.file_id  # "the file of the previous request" in a related compound
        create, create_recv = handle.create(
            ImpersonationLevel.Impersonation,
            access | (READ_CONTROL if with_sd else 0),
            FileAttributes.FILE_ATTRIBUTE_NORMAL,
            ShareAccess.FILE_SHARE_READ
            | ShareAccess.FILE_SHARE_WRITE
            | ShareAccess.FILE_SHARE_DELETE,
            CreateDisposition.FILE_OPEN,
            CreateOptions.FILE_OPEN_REPARSE_POINT | CreateOptions.FILE_NON_DIRECTORY_FILE,
            send=False,
        )
        read, read_recv = handle.read(0, length, send=False)
        messages = [
            create,
            read,
            self._query_message(placeholder, INFO_FILE, FILE_ALL_INFORMATION, 0, 4096),
        ]
        if with_sd:
            messages.append(self._query_message(placeholder, INFO_SECURITY, 0, SD_PARTS, 65536))
        close, close_recv = handle.close(send=False)
        messages.append(close)
        where = self.unc(rel)

        def run() -> SmallRead:
            requests = self._send_compound(messages)
            results: list[Any] = []
            failure: SMBException | None = None
            for i, request in enumerate(requests):  # every reply must be received
                try:
                    if i == 0:
                        results.append(create_recv(request))
                    elif i == 1:
                        try:
                            results.append(read_recv(request))
                        except SMBResponseException as exc:
                            if exc.status != NtStatus.STATUS_END_OF_FILE:
                                raise
                            results.append(b"")
                    elif i == len(requests) - 1:
                        results.append(close_recv(request))
                    else:
                        response = self._conn.receive(request)
                        resp = SMB2QueryInfoResponse()
                        resp.unpack(response["data"].get_value())
                        results.append(bytes(resp["buffer"].get_value()))
                except SMBException as exc:
                    failure = failure or exc
                    results.append(None)
            if failure is not None:
                raise failure
            return SmallRead(bytes(results[1]), results[2], results[3] if with_sd else None)

        return self.call(where, run)

    def _send_compound(self, messages: list[Any]) -> list[Any]:
        """Send a related compound, waiting while the credit window is too small."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                requests: list[Any] = self._conn.send_compound(
                    messages, self._session.session_id, self._tree.tree_connect_id, related=True
                )
                return requests
            except SMBException as exc:
                if "credits" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.002)  # other threads' replies return credits

    def close_handle(self, handle: Open) -> None:
        """Close a handle; a connection already gone is not an error."""
        with contextlib.suppress(SMBException):
            handle.close()

    def query_info(
        self, handle: Open, info_type: int, info_class: int, additional: int = 0, size: int = 4096
    ) -> bytes:
        """Raw buffer of a QUERY_INFO (file information or security descriptor)."""
        req = SMB2QueryInfoRequest()
        req["info_type"] = info_type
        req["file_info_class"] = info_class
        req["output_buffer_length"] = size
        req["additional_information"] = additional
        req["file_id"] = handle.file_id

        def run() -> bytes:
            request = self._send(req, size)
            response = self._conn.receive(request)
            resp = SMB2QueryInfoResponse()
            resp.unpack(response["data"].get_value())
            return bytes(resp["buffer"].get_value())

        return self.call(self.unc(handle.file_name), run)

    def set_info(
        self, handle: Open, info_type: int, info_class: int, buffer: bytes, additional: int = 0
    ) -> None:
        """A SET_INFO request with a raw buffer."""
        req = SMB2SetInfoRequest()
        req["info_type"] = info_type
        req["file_info_class"] = info_class
        req["additional_information"] = additional
        req["file_id"] = handle.file_id
        req["buffer"] = buffer

        def run() -> None:
            request = self._send(req, len(buffer))
            response = self._conn.receive(request)
            SMB2SetInfoResponse().unpack(response["data"].get_value())

        self.call(self.unc(handle.file_name), run)

    def list_dir(self, handle: Open) -> list[bytes]:
        """Raw FileIdFullDirectoryInformation records of an open directory (all of them)."""
        records: list[bytes] = []
        size = 65536

        def page(flags: int) -> bool:
            query = SMB2QueryDirectoryRequest()
            query["file_information_class"] = FILE_ID_FULL_DIRECTORY_INFORMATION
            query["flags"] = flags
            query["file_index"] = 0
            query["file_id"] = handle.file_id
            query["output_buffer_length"] = size
            query["buffer"] = "*".encode("utf-16-le")
            request = self._send(query, size)
            try:
                response = self._conn.receive(request)
            except SMBResponseException as exc:
                if exc.status == NtStatus.STATUS_NO_MORE_FILES:
                    return False
                raise
            resp = SMB2QueryDirectoryResponse()
            resp.unpack(response["data"].get_value())
            buf = bytes(resp["buffer"].get_value())
            pos = 0
            while True:
                (next_off,) = struct.unpack_from("<I", buf, pos)
                records.append(buf[pos : pos + next_off] if next_off else buf[pos:])
                if not next_off:
                    return True
                pos += next_off

        where = self.unc(handle.file_name)
        more = self.call(where, lambda: page(0x01))  # SMB2_RESTART_SCANS on the first page
        while more:
            more = self.call(where, lambda: page(0))
        return records

    def read_into(self, handle: Open, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset`` with pipelined READs; returns bytes read (short at EOF)."""
        piece = self.max_read
        total = len(view)
        pending: list[tuple[int, int, Any, Any]] = []  # (view offset, length, request, recv)
        pos = 0
        done = 0
        eof = False

        def receive_one() -> None:
            nonlocal done, eof
            voff, length, request, recv = pending.pop(0)
            try:
                data = recv(request)
            except SMBResponseException as exc:
                if exc.status != NtStatus.STATUS_END_OF_FILE:
                    raise
                data = b""
            n = len(data)
            if not eof:
                view[voff : voff + n] = data
                if voff == done:
                    done += n
                if n < length:
                    eof = True

        def run() -> int:
            nonlocal pos
            while (pos < total and not eof) or pending:
                while pos < total and not eof and len(pending) < READS_IN_FLIGHT:
                    length = min(piece, total - pos)
                    msg, recv = handle.read(offset + pos, length, send=False)
                    pending.append((pos, length, self._send(msg, length), recv))
                    pos += length
                if pending:
                    receive_one()
            return done

        return self.call(self.unc(handle.file_name), run)

    def write_at(self, handle: Open, data: memoryview | bytes, offset: int) -> int:
        """Write all of ``data`` at ``offset`` (pipelined WRITEs); returns its length."""
        piece = self.max_write
        view = memoryview(data)

        def run() -> int:
            pending: list[tuple[Any, Any]] = []
            pos = 0
            while pos < len(view) or pending:
                while pos < len(view) and len(pending) < READS_IN_FLIGHT:
                    chunk = bytes(view[pos : pos + piece])
                    msg, recv = handle.write(chunk, offset=offset + pos, send=False)
                    pending.append((self._send(msg, len(chunk)), recv))
                    pos += len(chunk)
                request, recv = pending.pop(0)
                recv(request)
            return len(view)

        return self.call(self.unc(handle.file_name), run)

    def close(self) -> None:
        """Log off and disconnect (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        with contextlib.suppress(SMBException, OSError):
            self._conn.disconnect(close=True)
