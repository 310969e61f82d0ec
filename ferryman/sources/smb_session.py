"""One authenticated SMB 2/3 session to a share, and the few requests the SMB source needs.

Built on smbprotocol's low-level API (``Connection``/``Session``/``TreeConnect``/
``Open``): one TCP connection and one session per task, shared by every thread
of the task. smbprotocol multiplexes concurrent requests over the connection
(message ids, a receiver thread), so several files are read at once over the
one session; reads are split into requests of ``READ_PIECE`` bytes and several
are kept in flight per file. Server errors become ``OSError`` with the errno a
local filesystem would give (ENOENT, EACCES...), so the engine's per-file
warnings read the same for every source.

A dropped connection (reset, closed, session expired, or nothing back for
``reply_timeout``) is not an entry's problem: the session logs in again and runs
the request again, re-opening its ``SmbHandle``s by path; when the server stays
away, ``SourceLost`` ends the task (see ``SmbSession``).

See docs/decisions/0009-smb-source.md (low-level API; "Reconnection").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from smbprotocol.connection import Connection
from smbprotocol.exceptions import (
    LogonFailure,
    SMBAuthenticationError,
    SMBConnectionClosed,
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

from ferryman.sources.base import SourceLost, SourceUnavailable
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
log = logging.getLogger(__name__)

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


class SmbHandle:
    """An open file or directory of a ``SmbSession`` that outlives a reconnection.

    Opened on the session's connection of the moment (``generation``); a request on a
    newer connection first opens it again by path, with the same access and options
    but never creating or truncating (``FILE_OPEN``): what was written stays, and a
    read goes on at its offset. An entry deleted or made unreadable during the outage
    then fails like any other open (ENOENT, EACCES: a per-file problem)."""

    __slots__ = (
        "_lock",
        "_open",
        "access",
        "attributes",
        "create_action",
        "generation",
        "options",
        "rel",
    )

    def __init__(
        self, rel: str, access: int, options: int, attributes: int, opened: Open, generation: int
    ) -> None:
        self.rel = rel
        self.access = access
        self.options = options
        self.attributes = attributes
        self._open = opened
        self.generation = generation
        self.create_action = int(opened.create_action or 0)
        self._lock = threading.Lock()


@dataclass(slots=True)
class _Link:
    """One connection, session and tree connect: replaced as a whole on reconnection."""

    conn: Connection
    session: Session
    tree: TreeConnect
    generation: int
    last_reply: float = field(default_factory=time.monotonic)  # when a reply last came

    def alive(self) -> bool:
        # smbprotocol closes the transport when its receiver sees EOF, a reset or an error
        return bool(self.conn.transport.connected)


# Seconds to wait before each reconnection attempt (~60 s in all): a restarted server,
# a reset NAS interface or a short network outage is survived; longer, the task fails
# and the server retries it (its checkpoints keep what was stored).
RECONNECT_DELAYS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
# reconnections one request may go through (a flapping link does not loop forever)
RETRIES_PER_REQUEST = 3
# a connection on which nothing came back for this long while we wait is taken as lost
# (a frozen server, a half-open link): smbprotocol itself would wait 10-20 minutes
NO_REPLY_TIMEOUT = 120.0
# how often a wait between reconnection attempts looks at the task's stop request
STOP_POLL = 0.1
# the server forgot our session or tree (expired, logged off, share restarted): log in again
_SESSION_GONE = {
    0xC000035C,  # STATUS_NETWORK_SESSION_EXPIRED
    NtStatus.STATUS_USER_SESSION_DELETED,
    NtStatus.STATUS_NETWORK_NAME_DELETED,
}
# kernel-level detection of a dead peer that sends no reset (cable pulled, NAS frozen)
_KEEPALIVE = {"TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}


class _NoReply(SMBException):  # type: ignore[misc]
    """Nothing came back on the connection for ``reply_timeout`` seconds."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class SmbSession:
    """An authenticated session with the share of ``url`` (thread-safe), reconnecting
    when the connection drops.

    Every request runs through ``_run``: when it fails because the connection is gone
    (reset, closed, server restarted, session expired), the session logs in again
    (new ``Connection``/``Session``/``TreeConnect``, same credentials; attempts spaced
    by ``reconnect_delays``), bumps its ``generation`` and runs the request again;
    ``SmbHandle``s are re-opened lazily on the new connection. When every attempt
    fails, ``SourceLost`` is raised, now and for every later request: the task fails
    with that reason rather than skipping the rest of the share file by file."""

    def __init__(
        self,
        url: SmbUrl,
        password: str,
        timeout: float = 30.0,
        reconnect_delays: tuple[float, ...] | None = None,
        reply_timeout: float = NO_REPLY_TIMEOUT,
        stop: threading.Event | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.stop = stop
        self.reconnect_delays = RECONNECT_DELAYS if reconnect_delays is None else reconnect_delays
        self.reply_timeout = reply_timeout
        self._password = password
        self._where = f"{url.host}:{url.port}"
        self._closed = False
        self._lost: SourceLost | None = None
        self._reconnect_lock = threading.Lock()
        self._link = self._login(0)

    def _login(self, generation: int) -> _Link:
        """Connect, authenticate and connect the tree; ``SourceUnavailable`` on failure."""
        url, where = self.url, self._where
        try:
            conn = Connection(uuid.uuid4(), url.host, url.port)
            conn.connect(timeout=self.timeout)
        except (OSError, SMBException, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise SourceUnavailable(f"cannot reach SMB server {where}: {reason}") from exc
        _keepalive(conn)
        try:
            session = Session(conn, url.username, self._password, require_encryption=False)
            session.connect()
        except (LogonFailure, SMBAuthenticationError) as exc:
            _drop(conn)
            raise SmbAuthFailed(
                f"SMB server {where} refused the login of user '{url.username}': "
                "wrong user name or password"
            ) from exc
        except (OSError, SMBException) as exc:
            _drop(conn)
            raise SourceUnavailable(f"SMB login to {where} failed: {exc}") from exc
        try:
            tree = TreeConnect(session, rf"\\{url.host}\{url.share}")
            tree.connect()
        except SMBResponseException as exc:
            _drop(conn)
            if exc.status == NtStatus.STATUS_BAD_NETWORK_NAME:
                raise SourceUnavailable(f"SMB server {where} has no share '{url.share}'") from exc
            if exc.status == NtStatus.STATUS_ACCESS_DENIED:
                raise SourceUnavailable(
                    f"user '{url.username}' may not access share '{url.share}' on {where}"
                ) from exc
            raise SourceUnavailable(f"cannot connect to share '{url.share}': {exc}") from exc
        except (OSError, SMBException) as exc:
            _drop(conn)
            raise SourceUnavailable(f"cannot connect to share '{url.share}': {exc}") from exc
        return _Link(conn, session, tree, generation)

    # -- reconnection --------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """How many times the session has been re-established (0: the first connection)."""
        return self._link.generation

    def _current(self) -> _Link:
        if self._lost is not None:
            raise self._lost
        return self._link

    @staticmethod
    def _is_lost(exc: BaseException, link: _Link) -> bool:
        """Did ``exc`` come from losing the connection (not from the entry itself)?"""
        if isinstance(exc, SMBResponseException):
            return exc.status in _SESSION_GONE  # ENOENT, EACCES...: a real answer
        if isinstance(exc, SMBConnectionClosed | _NoReply | OSError):  # OSError: the socket
            return True
        return not link.alive()  # e.g. a reply that never came because the receiver died

    def _reconnect(self, broken: _Link, cause: BaseException) -> None:
        """Replace ``broken`` with a new connection (unless another thread already did);
        raises ``SourceLost`` when every attempt fails."""
        with self._reconnect_lock:
            if self._lost is not None:
                raise self._lost
            if self._closed:
                raise SourceLost(f"SMB session to {self._where} was closed")
            if self._link.generation != broken.generation:
                return  # reconnected by another thread meanwhile
            why = _describe(cause)
            log.warning("SMB connection to %s lost (%s): reconnecting", self._where, why)
            _drop(broken.conn)
            started = time.monotonic()
            last: BaseException = cause
            tried, stopped = 0, False
            for tried, delay in enumerate(self.reconnect_delays, 1):
                if self._stopped_during(delay):
                    tried, stopped = tried - 1, True
                    break
                try:
                    self._link = self._login(broken.generation + 1)
                except SmbAuthFailed as exc:  # the password changed meanwhile: no use retrying
                    last = exc
                    break
                except SourceUnavailable as exc:
                    last = exc
                    log.info("SMB reconnection attempt %d to %s: %s", tried, self._where, exc)
                    continue
                log.warning(
                    "SMB connection to %s re-established after %.1f s (attempt %d)",
                    self._where,
                    time.monotonic() - started,
                    tried,
                )
                return
            spent = f"{time.monotonic() - started:.1f} s"
            if stopped:
                outcome = f"; stopped while reconnecting ({tried} attempt(s) in {spent})"
            elif tried:
                plural = "s" * (tried > 1)
                outcome = f" and could not reconnect ({tried} attempt{plural} in {spent}): {last}"
            else:
                outcome = ""  # no reconnection wanted (a probe)
            self._lost = SourceLost(
                f"lost the connection to SMB server {self._where} ({why}){outcome}"
            )
            log.log(logging.WARNING if stopped else logging.ERROR, "%s", self._lost)
            raise self._lost

    def _stopped_during(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a reconnection attempt; True (at once) when the task
        is stopped or the session closed meanwhile: no use waiting out the attempts."""
        deadline = time.monotonic() + delay
        while True:
            if self._closed or (self.stop is not None and self.stop.is_set()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, STOP_POLL))

    def _run(self, where: str, fn: Callable[[_Link], T]) -> T:
        """Run ``fn`` on the current connection; after a connection loss reconnect and run
        it again (``fn`` must be repeatable: whole reads and writes at fixed offsets,
        opens, queries). SMB failures become ``OSError`` naming ``where``."""
        for attempt in range(RETRIES_PER_REQUEST + 1):
            link = self._current()
            try:
                return fn(link)
            except Exception as exc:
                if not self._is_lost(exc, link):
                    if isinstance(exc, SMBException):
                        raise os_error(exc, where) from exc
                    raise
                if attempt == RETRIES_PER_REQUEST:  # given up: no new connection for it
                    _drop(link.conn)  # (a later request makes one)
                else:
                    self._reconnect(link, exc)
        raise SourceLost(
            f"the connection to SMB server {self._where} kept dropping "
            f"({RETRIES_PER_REQUEST} reconnections for one request)"
        )

    def _opened(self, handle: SmbHandle, link: _Link) -> Open:
        """The handle's ``Open`` on ``link``: opened again by path when it is older."""
        if handle.generation == link.generation:
            return handle._open
        with handle._lock:
            if handle.generation != link.generation:
                handle._open = self._create(
                    link, handle.rel, handle.access, CreateDisposition.FILE_OPEN,
                    handle.options, handle.attributes,
                )  # fmt: skip
                handle.generation = link.generation
            return handle._open

    def _await(self, link: _Link, request: Any, fresh: bool = True) -> None:
        """Wait for the reply to ``request``; raise ``_NoReply`` (a connection loss) when
        nothing at all came back on the connection for ``reply_timeout`` seconds (since
        this wait began, or with ``fresh=False`` since the last reply only)."""
        event = request.response_event
        start = time.monotonic() if fresh else 0.0
        while not event.wait(0.25):
            quiet = time.monotonic() - max(start, link.last_reply)
            if quiet > self.reply_timeout or not link.alive():
                raise _NoReply(f"no reply from the server for {quiet:.0f} s")
        link.last_reply = time.monotonic()

    def _drain(self, link: _Link, requests: list[tuple[Any, Any]]) -> None:
        """Receive the replies of requests left in flight by a failure (they hold credits
        and message ids of a connection that may go on serving other threads). Quiet is
        counted from the last reply, and the first request without one ends the drain:
        after a failure for want of a reply (a frozen server) the reconnection is not
        delayed by ``reply_timeout`` more per request left in flight (8 per file)."""
        for request, recv in requests:
            if not link.alive():
                return
            try:
                self._await(link, request, fresh=False)
            except _NoReply:
                return
            with contextlib.suppress(Exception):
                recv(request)

    # -- plumbing ------------------------------------------------------------------------

    @property
    def max_read(self) -> int:
        return min(READ_PIECE, int(self._link.conn.max_read_size))

    @property
    def max_write(self) -> int:
        return min(READ_PIECE, int(self._link.conn.max_write_size))

    def _with_credits(self, link: _Link, send: Callable[[], T]) -> T:
        """``send()``, waiting while the server's credit window is too small. Credits come
        back with replies: when none came for ``reply_timeout`` (a frozen server) the wait
        ends in ``_NoReply``, a lost connection, not this request's failure; when replies
        come but free too few credits, the credit error is raised after ``timeout``."""
        start = time.monotonic()
        while True:
            try:
                return send()
            except SMBException as exc:
                if "credits" not in str(exc):
                    raise
                now = time.monotonic()
                quiet = now - max(start, link.last_reply)
                if quiet > self.reply_timeout or not link.alive():
                    raise _NoReply(f"no reply from the server for {quiet:.0f} s") from exc
                if now - start > self.timeout and quiet < self.timeout:
                    raise
            time.sleep(0.002)  # other threads' replies return credits

    def _send(self, link: _Link, message: Any, payload: int) -> Any:
        """Send one request, waiting while the server's credit window is too small."""
        charge = max(1, (max(0, payload - 1) // CREDIT_PAYLOAD) + 1)
        return self._with_credits(
            link,
            lambda: link.conn.send(
                message,
                sid=link.session.session_id,
                tid=link.tree.tree_connect_id,
                credit_request=charge + 32,  # grow the window: more requests in flight
            ),
        )

    def unc(self, rel: str) -> str:
        return rf"\\{self.url.host}\{self.url.share}" + (f"\\{rel}" if rel else "")

    # -- requests ------------------------------------------------------------------------

    def _create(
        self, link: _Link, rel: str, access: int, disposition: int, options: int, attributes: int
    ) -> Open:
        handle = Open(link.tree, rel)
        message, recv = handle.create(
            ImpersonationLevel.Impersonation,
            access,
            attributes or FileAttributes.FILE_ATTRIBUTE_NORMAL,
            ShareAccess.FILE_SHARE_READ
            | ShareAccess.FILE_SHARE_WRITE
            | ShareAccess.FILE_SHARE_DELETE,
            disposition,
            options,
            send=False,
        )
        request = self._send(link, message, 0)
        self._await(link, request)
        recv(request)
        return handle

    def open(
        self,
        rel: str,
        access: int,
        *,
        directory: bool | None = None,
        disposition: int = CreateDisposition.FILE_OPEN,
        attributes: int = 0,
    ) -> SmbHandle:
        """Open ``rel`` (share-relative, ``\\``-separated); never follows a reparse point."""
        options = CreateOptions.FILE_OPEN_REPARSE_POINT
        if directory is True:
            options |= CreateOptions.FILE_DIRECTORY_FILE
        elif directory is False:
            options |= CreateOptions.FILE_NON_DIRECTORY_FILE

        def create(link: _Link) -> SmbHandle:
            opened = self._create(link, rel, access, disposition, options, attributes)
            return SmbHandle(rel, access, options, attributes, opened, link.generation)

        return self._run(self.unc(rel), create)

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

        def run(link: _Link) -> SmallRead:
            handle = Open(link.tree, rel)
            placeholder = handle.file_id  # "the file of the previous request" in a compound
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
            requests = self._send_compound(link, messages)
            results: list[Any] = []
            failure: Exception | None = None
            for i, request in enumerate(requests):  # every reply must be received
                try:
                    self._await(link, request)
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
                        response = link.conn.receive(request)
                        resp = SMB2QueryInfoResponse()
                        resp.unpack(response["data"].get_value())
                        results.append(bytes(resp["buffer"].get_value()))
                except Exception as exc:
                    failure = failure or exc
                    results.append(None)
                    if isinstance(exc, _NoReply) or not link.alive():
                        break  # no more replies will come
            if failure is not None:
                raise failure
            return SmallRead(bytes(results[1]), results[2], results[3] if with_sd else None)

        return self._run(self.unc(rel), run)

    def _send_compound(self, link: _Link, messages: list[Any]) -> list[Any]:
        """Send a related compound, waiting while the credit window is too small."""
        return self._with_credits(
            link,
            lambda: list(
                link.conn.send_compound(
                    messages, link.session.session_id, link.tree.tree_connect_id, related=True
                )
            ),
        )

    def close_handle(self, handle: SmbHandle) -> None:
        """Close a handle; one of a lost connection (the server closed it) is left alone."""
        link = self._link
        if handle.generation != link.generation or not link.alive() or self._lost is not None:
            return
        with contextlib.suppress(Exception):
            message, recv = handle._open.close(send=False)
            request = self._send(link, message, 0)
            self._await(link, request)
            recv(request)

    def query_info(
        self,
        handle: SmbHandle,
        info_type: int,
        info_class: int,
        additional: int = 0,
        size: int = 4096,
    ) -> bytes:
        """Raw buffer of a QUERY_INFO (file information or security descriptor)."""

        def run(link: _Link) -> bytes:
            opened = self._opened(handle, link)
            req = self._query_message(opened.file_id, info_type, info_class, additional, size)
            request = self._send(link, req, size)
            self._await(link, request)
            response = link.conn.receive(request)
            resp = SMB2QueryInfoResponse()
            resp.unpack(response["data"].get_value())
            return bytes(resp["buffer"].get_value())

        return self._run(self.unc(handle.rel), run)

    def set_info(
        self,
        handle: SmbHandle,
        info_type: int,
        info_class: int,
        buffer: bytes,
        additional: int = 0,
    ) -> None:
        """A SET_INFO request with a raw buffer."""

        def run(link: _Link) -> None:
            req = SMB2SetInfoRequest()
            req["info_type"] = info_type
            req["file_info_class"] = info_class
            req["additional_information"] = additional
            req["file_id"] = self._opened(handle, link).file_id
            req["buffer"] = buffer
            request = self._send(link, req, len(buffer))
            self._await(link, request)
            response = link.conn.receive(request)
            SMB2SetInfoResponse().unpack(response["data"].get_value())

        self._run(self.unc(handle.rel), run)

    def list_dir(self, handle: SmbHandle) -> list[bytes]:
        """Raw FileIdFullDirectoryInformation records of an open directory (all of them;
        listed again from the start after a reconnection)."""
        size = 65536

        def run(link: _Link) -> list[bytes]:
            opened = self._opened(handle, link)
            records: list[bytes] = []
            flags = 0x01  # SMB2_RESTART_SCANS on the first page
            while True:
                query = SMB2QueryDirectoryRequest()
                query["file_information_class"] = FILE_ID_FULL_DIRECTORY_INFORMATION
                query["flags"] = flags
                query["file_index"] = 0
                query["file_id"] = opened.file_id
                query["output_buffer_length"] = size
                query["buffer"] = "*".encode("utf-16-le")
                request = self._send(link, query, size)
                self._await(link, request)
                try:
                    response = link.conn.receive(request)
                except SMBResponseException as exc:
                    if exc.status == NtStatus.STATUS_NO_MORE_FILES:
                        return records
                    raise
                flags = 0
                resp = SMB2QueryDirectoryResponse()
                resp.unpack(response["data"].get_value())
                buf = bytes(resp["buffer"].get_value())
                pos = 0
                while True:
                    (next_off,) = struct.unpack_from("<I", buf, pos)
                    records.append(buf[pos : pos + next_off] if next_off else buf[pos:])
                    if not next_off:
                        break
                    pos += next_off

        return self._run(self.unc(handle.rel), run)

    def read_into(self, handle: SmbHandle, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset`` with pipelined READs; returns bytes read (short at EOF).
        After a reconnection the whole range is read again on the re-opened handle."""
        piece = self.max_read
        total = len(view)

        def run(link: _Link) -> int:
            opened = self._opened(handle, link)
            pending: list[tuple[int, int, Any, Any]] = []  # (view offset, length, request, recv)
            pos = done = 0
            eof = False
            try:
                while (pos < total and not eof) or pending:
                    while pos < total and not eof and len(pending) < READS_IN_FLIGHT:
                        length = min(piece, total - pos)
                        msg, recv = opened.read(offset + pos, length, send=False)
                        pending.append((pos, length, self._send(link, msg, length), recv))
                        pos += length
                    if not pending:
                        continue
                    voff, length, request, recv = pending.pop(0)
                    self._await(link, request)
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
            finally:
                self._drain(link, [(request, recv) for _, _, request, recv in pending])
            return done

        return self._run(self.unc(handle.rel), run)

    def write_at(self, handle: SmbHandle, data: memoryview | bytes, offset: int) -> int:
        """Write all of ``data`` at ``offset`` (pipelined WRITEs); returns its length.
        After a reconnection all of it is written again (same offsets: nothing doubles)."""
        piece = self.max_write
        view = memoryview(data)

        def run(link: _Link) -> int:
            opened = self._opened(handle, link)
            pending: list[tuple[Any, Any]] = []
            pos = 0
            try:
                while pos < len(view) or pending:
                    while pos < len(view) and len(pending) < READS_IN_FLIGHT:
                        chunk = bytes(view[pos : pos + piece])
                        msg, recv = opened.write(chunk, offset=offset + pos, send=False)
                        pending.append((self._send(link, msg, len(chunk)), recv))
                        pos += len(chunk)
                    request, recv = pending.pop(0)
                    self._await(link, request)
                    recv(request)
            finally:
                self._drain(link, pending)
            return len(view)

        return self._run(self.unc(handle.rel), run)

    def close(self) -> None:
        """Log off and disconnect (idempotent)."""
        if self._closed:
            return
        self._closed = True
        link = self._link
        if link.alive() and self._lost is None:  # log off politely, but never wait long
            logoff = threading.Thread(target=_logoff, args=(link.conn,), daemon=True)
            logoff.start()
            logoff.join(self.timeout)
        _drop(link.conn)


def _logoff(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.disconnect(close=True)


def _drop(conn: Connection) -> None:
    """Close a connection without logging off (it is broken, or being given up)."""
    with contextlib.suppress(Exception):
        conn.disconnect(close=False)


def _keepalive(conn: Connection) -> None:
    """TCP keepalive and a user timeout on the connection's socket, so a peer that vanished
    without a reset (cable pulled, NAS frozen) is noticed within ~30 s, not after minutes."""
    sock = getattr(conn.transport, "_sock", None)
    if not isinstance(sock, socket.socket):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000)
