"""Worker process pools of a task (saver processes, restore writers)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import forkserver, process, util
from typing import Any, TypeVar

S = TypeVar("S")

log = logging.getLogger(__name__)

# fork servers left running for their last workers after their socket vanished: reaped
# (without waiting) when the next forked pool starts
_abandoned: list[int] = []
_exit_checked = False  # the folder is checked once more at exit
SOCKET_PATH_MAX = 107  # sun_path's 108 bytes, less the final NUL
# how long the fork server may take to fork a first process (it imports its preload
# modules first: ~0.3 s, seconds on a loaded machine) before it counts as hung
FORK_SERVER_TIMEOUT = 60.0


class ForkServerUnavailable(OSError):
    """multiprocessing's fork server cannot fork worker processes (it does not answer,
    or failed): the caller does the work in-process instead."""


def spawn_pool(processes: int, init: Callable[[S], None], setup: S) -> ProcessPoolExecutor:
    """``processes`` workers started fresh, each running ``init(setup)`` first (``spawn``:
    never a fork of a threaded server, whose locks another thread may hold)."""
    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), init, setup),
    )


def _start_worker(parent: int, init: Callable[[S], None], setup: S) -> None:
    """A pool worker's initialiser: ``init(setup)``, after making sure the worker ends
    with the process that made the pool.

    A worker waits for its next job on a pipe whose both ends it holds, so it never
    sees the pool's process go: after a ``kill -9`` of the proxy, or a pool dropped
    without waiting when its fork server died mid-restore, the worker would wait
    forever, holding the restore's folders, the index cache and the service's
    stdout/stderr open.
    """
    threading.Thread(target=_exit_with, args=(parent,), name="pool-owner", daemon=True).start()
    init(setup)


def _exit_with(parent: int) -> None:
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(1)
    except OSError:  # no pidfd (kernel < 5.3, seccomp): look once a second
        while os.path.exists(f"/proc/{parent}"):
            time.sleep(1)
        os._exit(1)
    select.select([fd], [], [])  # readable once the process has exited
    os._exit(1)


def forked_pool(
    processes: int, init: Callable[[S], None], setup: S, preload: Iterable[str]
) -> ProcessPoolExecutor:
    """``processes`` workers forked from multiprocessing's fork server, each running
    ``init(setup)`` first.

    A spawned worker is a new interpreter that imports the engine, the repository and
    their libraries again: ~0.15-0.3 s of CPU per worker, per task (more where no
    bytecode cache is written). The fork server is one single-threaded process,
    spawned with the first such pool of the process and kept until the process exits;
    it imports ``preload`` once and every worker is a fork of it: the same safety as
    ``spawn`` (never a fork of a threaded server) without the start-up. A worker still
    runs the parent's main module (CPython 3.11's fork server does not preload it),
    cheap once the modules it imports are loaded. ``preload`` counts only for the pool
    that starts the fork server; a later pool's other modules are imported by its
    workers.

    The fork server listens on a socket in multiprocessing's temporary folder
    (``pymp-*`` under ``/tmp``), which a /tmp cleaner (systemd-tmpfiles, ~10 days) or an
    administrator may delete under a long-running proxy: no pool could start again.
    Each pool checks that socket first (``_replace_unreachable_fork_server``), then forks
    its first worker at once: a fork server that does not answer within
    ``FORK_SERVER_TIMEOUT`` (stopped, hung) would otherwise block the pool's first
    ``submit`` forever; it is killed (the next pool starts a new one) and
    ``ForkServerUnavailable`` raised, as when the worker cannot be forked at all.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", *preload])
    _replace_unreachable_fork_server()
    pool = ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), init, setup),
    )
    _start_first_worker(pool)
    return pool


def _start_first_worker(pool: ProcessPoolExecutor) -> None:
    failed: list[BaseException] = []

    def start() -> None:
        try:
            pool.submit(os.getpid)  # forks the first worker: returns once the server answered
        except BaseException as exc:  # reported by the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=start, name="fork-server-answer", daemon=True)
    thread.start()
    thread.join(FORK_SERVER_TIMEOUT)
    reason = None
    if thread.is_alive():
        server: Any = forkserver._forkserver
        pid = server._forkserver_pid
        if pid is not None:  # the waiting thread then reads EOF and ends
            os.kill(pid, signal.SIGKILL)
        thread.join(5)
        reason = f"(pid {pid}) did not answer within {FORK_SERVER_TIMEOUT:g} s: killed"
    elif failed:
        reason = f"failed: {failed[0]!r}"
    if reason is not None:
        if not thread.is_alive():  # its submit holds the pool's lock until it ends
            pool.shutdown(wait=False, cancel_futures=True)
        raise ForkServerUnavailable(f"multiprocessing's fork server {reason}")


def use_runtime_directory() -> None:
    """Keep multiprocessing's temporary folder (the fork server's socket) in the service's
    runtime directory when systemd gave it one (``RuntimeDirectory=``, as the deployed
    proxy's unit does: ``$RUNTIME_DIRECTORY``, under /run, the service's own and removed
    when it stops), out of /tmp and its cleaners. Called by a server or proxy before its
    first pool; without a runtime directory, ``forked_pool``'s check covers /tmp."""
    folder = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    current: Any = process.current_process()
    if not folder or current._config.get("tempdir") is not None:
        return  # not a systemd service with one, or multiprocessing chose already
    # pymp-XXXXXXXX/listener-XXXXXXXX below it must fit a socket address
    if (
        len(os.fsencode(os.path.join(folder, "pymp-12345678", "listener-12345678")))
        > SOCKET_PATH_MAX
    ):
        log.warning(
            "runtime directory %s too deep for a socket: worker sockets stay in /tmp", folder
        )
        return
    try:
        tempdir = tempfile.mkdtemp(prefix="pymp-", dir=folder)
    except OSError as exc:
        log.warning("runtime directory %s unusable (%s): worker sockets stay in /tmp", folder, exc)
        return
    util.Finalize(
        None, shutil.rmtree, args=(tempdir,), kwargs={"ignore_errors": True}, exitpriority=-100
    )
    current._config["tempdir"] = tempdir


def _replace_unreachable_fork_server() -> None:
    """Let the next pool start a new fork server when the running one's socket is gone
    (or its folder is no longer this process's own, 0700: another user could have put
    a socket of theirs there, which would receive the workers' setup, master key
    included), and give multiprocessing a temporary folder again if its own was deleted.

    The old fork server is not stopped: the workers of a pool still running were forked
    by it, and it reports their exit; it exits by itself after its last worker (the
    "alive" pipe), and is reaped by a later call.
    """
    server: Any = forkserver._forkserver  # private: CPython keeps no public handle on it
    with server._lock:
        _reap_abandoned()
        pid, address = server._forkserver_pid, server._forkserver_address
        if pid is not None and not _own_socket(address):
            log.warning(
                "multiprocessing's fork server socket %s is gone or replaced: starting a new one",
                address,
            )
            os.close(server._forkserver_alive_fd)
            _abandoned.append(pid)
            server._forkserver_pid = server._forkserver_address = None
            server._forkserver_alive_fd = None
        _restore_temp_dir()
        global _exit_checked
        if not _exit_checked:  # before multiprocessing removes the folder at exit (-100)
            util.Finalize(None, _restore_temp_dir, exitpriority=-99)
            _exit_checked = True


def _reap_abandoned() -> None:
    for pid in list(_abandoned):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _abandoned.remove(pid)


def _own_socket(address: str | bytes | None) -> bool:
    if not isinstance(address, str) or util.is_abstract_socket_namespace(address):
        return True  # nothing on the file system to lose
    try:
        return _own_folder(os.path.dirname(address)) and stat.S_ISSOCK(os.lstat(address).st_mode)
    except FileNotFoundError:
        return False


def _own_folder(path: str) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077 == 0


def _restore_temp_dir() -> None:
    """Make multiprocessing's temporary folder (where a new fork server binds its
    socket) again when it was deleted: under its old name (multiprocessing removes it
    at exit, and complains if it is missing then), or a new one if that name is
    somebody else's now."""
    current: Any = process.current_process()
    config: dict[str, Any] = current._config
    tempdir = config.get("tempdir")
    if tempdir is None or _own_folder(tempdir):
        return  # not made yet (multiprocessing makes it when needed), or still there
    try:
        os.mkdir(tempdir, 0o700)
    except FileExistsError:
        log.warning("multiprocessing's temporary folder %s was replaced: using a new one", tempdir)
        config["tempdir"] = None  # the next get_temp_dir() makes a new one
