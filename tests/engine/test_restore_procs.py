"""The restore's worker processes: how they start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# A program (the role of the server's ``ferryman`` script) that notes every time its
# module runs (and whether the restore's worker module was already imported then),
# then restores twice through two worker processes each.
PROGRAM = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    with open(sys.argv[1] + "/runs", "a") as f:
        f.write(f"{__name__} {os.getpid()} {os.getppid()}\\n")
    with open(sys.argv[1] + "/preloaded", "a") as f:
        f.write(f"{__name__} {'ferryman.engine.restore_procs' in sys.modules}\\n")

    def main() -> None:
        from engine.restore_program import backed_up

        base = Path(sys.argv[1])
        tree = backed_up(base)
        for n in range(2):
            tree.restore_checked(base / f"out{n}")
        tree.repo.close()

    if __name__ == "__main__":
        main()
    """
)


def run_program(tmp_path: Path, source: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as the main program (as the server's script) with ``tmp_path``."""
    program = tmp_path / "program.py"
    program.write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env_extra)
    return subprocess.run(
        [sys.executable, str(program), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_worker_processes_are_forked_from_one_fork_server(tmp_path: Path) -> None:
    """Restore workers are not fresh interpreters started by the restoring process
    (each importing the engine again: ~0.3 s of CPU per worker, per task) but forks
    of one fork server, started once and kept for the next restore: the workers of
    two restores all have that one parent."""
    done = run_program(tmp_path, PROGRAM)
    assert done.returncode == 0, done.stderr
    runs = [line.split() for line in (tmp_path / "runs").read_text().splitlines()]
    main = [int(pid) for name, pid, _ in runs if name == "__main__"]
    workers = [(int(pid), int(ppid)) for name, pid, ppid in runs if name == "__mp_main__"]
    # 2 restores of up to 2 workers (a pool starts its second one when both are busy)
    assert len(main) == 1 and 2 <= len(workers) <= 4, runs
    parents = {ppid for _, ppid in workers}
    assert len(parents) == 1 and main[0] not in parents, runs
    # the workers were forked with the restore's modules imported (the fork server
    # ignores a preload module it cannot import, and a preload set after it started)
    preloaded = (tmp_path / "preloaded").read_text().splitlines()
    assert preloaded == ["__main__ False"] + ["__mp_main__ True"] * len(workers), preloaded
    assert (tmp_path / "out1" / "d2" / "f11").read_bytes() == (
        tmp_path / "src" / "d2" / "f11"
    ).read_bytes()


def test_worker_processes_that_cannot_start_leave_the_files_to_threads(tmp_path: Path) -> None:
    """The fork server cannot start when its socket's path is too long (a deep
    TMPDIR): the restore writes every file in-process instead of reporting them
    as errors."""
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    done = run_program(tmp_path, PROGRAM, TMPDIR=str(deep))
    assert done.returncode == 0, done.stderr  # the program checks both restores' files
    assert "using threads" in done.stderr
    runs = (tmp_path / "runs").read_text().split()
    assert runs[::3] == ["__main__"]  # no worker ran


# A program that restores four times; the fork server is killed after the first
# restore, and stopped then killed while the third restore's first worker is being
# forked from it (as by the OOM killer: its reply never comes).
PROGRAM_FORK_SERVER_KILLED = textwrap.dedent(
    """
    import faulthandler, os, signal, sys, threading, time
    from pathlib import Path
    from multiprocessing import forkserver

    def main() -> None:
        faulthandler.dump_traceback_later(90)  # a hang shows its stacks in the failure
        from ferryman.engine import restore_procs
        from engine.restore_program import backed_up

        base = Path(sys.argv[1])
        tree = backed_up(base)
        real_submit = restore_procs.submit
        servers = []

        def submit(pool, jobs):
            if len(servers) == 2 and not hasattr(submit, "done"):
                submit.done = True  # the third restore's first batch
                pid = forkserver._forkserver._forkserver_pid
                os.kill(pid, signal.SIGSTOP)
                threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
            return real_submit(pool, jobs)

        restore_procs.submit = submit
        for n in range(4):
            tree.restore_checked(base / f"out{n}")
            servers.append(forkserver._forkserver._forkserver_pid)
            if n == 0:
                os.kill(servers[0], signal.SIGKILL)
            if n in (0, 2):  # dead, not yet reaped: the next restore sees it gone
                stat, deadline = f"/proc/{servers[n]}/stat", time.monotonic() + 20
                while (state := Path(stat).read_text().rsplit(")", 1)[1].split()[0]) != "Z":
                    assert time.monotonic() < deadline, f"restore {n}: fork server {state}"
                    time.sleep(0.01)
        tree.repo.close()
        print(*servers)

    if __name__ == "__main__":
        main()
    """
)


def test_a_killed_fork_server_is_replaced_and_one_dying_under_a_restore_leaves_it_threads(
    tmp_path: Path,
) -> None:
    """The fork server outlives a restore: killed between two restores, the next one
    starts a new fork server (multiprocessing sees it gone); killed while a restore's
    worker is being forked from it (no reply: ``EOFError``, not an ``OSError``), that
    restore writes its files in-process, and the next one starts a new fork server."""
    done = run_program(tmp_path, PROGRAM_FORK_SERVER_KILLED)
    assert done.returncode == 0, done.stderr  # the program checks the four restores' files
    assert done.stderr.count("using threads") == 1, done.stderr  # the third restore only
    servers = done.stdout.split()
    assert len(servers) == 4 and servers[0] != servers[1], servers
    assert servers[3] not in servers[:3], servers


# A program that restores three times: after the first restore, multiprocessing's
# temporary folder (the fork server's socket) is deleted, as by a /tmp cleaner; after
# the second, the folder is deleted and made again by "someone else" (world-writable),
# with a listening socket of theirs where the fork server's was.
PROGRAM_FORK_SERVER_SOCKET_DELETED = textwrap.dedent(
    """
    import faulthandler, os, shutil, socket, sys, time
    from pathlib import Path
    from multiprocessing import forkserver, util

    def main() -> None:
        from engine.restore_program import backed_up

        faulthandler.dump_traceback_later(60, exit=True)  # a hang fails, with its stacks
        base = Path(sys.argv[1])
        tree = backed_up(base)
        servers = []
        decoy = None
        for n in range(3):
            tree.restore_checked(base / f"out{n}")
            servers.append(forkserver._forkserver._forkserver_pid)
            address = forkserver._forkserver._forkserver_address
            folder = os.path.dirname(address)
            assert folder == util.get_temp_dir(), (folder, util.get_temp_dir())
            shutil.rmtree(folder)
            if n == 1:
                os.mkdir(folder)
                os.chmod(folder, 0o777)
                decoy = socket.socket(socket.AF_UNIX)
                decoy.bind(address)
                decoy.listen()
        assert decoy is not None
        decoy.setblocking(False)
        try:
            decoy.accept()
            print("the decoy socket was contacted")
        except BlockingIOError:
            pass
        for pid in servers[:2]:  # the replaced fork servers exit after their last worker
            deadline = time.monotonic() + 10
            while True:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:  # reaped when a later pool started
                    break
                assert time.monotonic() < deadline, f"replaced fork server {pid} still runs"
                time.sleep(0.05)
        tree.repo.close()
        print(*servers)

    if __name__ == "__main__":
        main()
    """
)


def test_a_fork_server_whose_socket_was_deleted_is_replaced(tmp_path: Path) -> None:
    """A /tmp cleaner deletes the fork server's socket under a long-running proxy: the
    next restore starts a new fork server and still writes through worker processes
    (it fell back to threads for every later restore, and the process's exit printed
    a traceback); a socket put in its place by someone else is never contacted; the
    replaced fork servers do not linger (each exits after its last worker)."""
    done = run_program(tmp_path, PROGRAM_FORK_SERVER_SOCKET_DELETED)
    assert done.returncode == 0, done.stderr  # the program checks the three restores' files
    assert "using threads" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    servers = done.stdout.split()
    assert len(servers) == 3 and len(set(servers)) == 3, done.stdout
    assert done.stderr.count("is gone or replaced: starting a new one") == 2, done.stderr


# A program that sets its worker sockets' place as a server or proxy does, restores once
# through worker processes, and prints where the fork server listens.
PROGRAM_RUNTIME_DIRECTORY = textwrap.dedent(
    """
    import logging, os, sys
    from pathlib import Path
    from multiprocessing import forkserver

    def main() -> None:
        from ferryman.engine import process_pool
        from engine.restore_program import backed_up

        logging.basicConfig()
        process_pool.use_runtime_directory()
        base = Path(sys.argv[1])
        tree = backed_up(base, 6, 2)
        tree.restore_checked(base / "out")
        tree.repo.close()
        print(forkserver._forkserver._forkserver_address)

    if __name__ == "__main__":
        main()
    """
)


def test_a_service_keeps_its_worker_sockets_in_its_runtime_directory(tmp_path: Path) -> None:
    """Under systemd with ``RuntimeDirectory=`` (the deployed proxy's unit), the fork
    server's socket is in that folder (/run/..., no /tmp cleaner), removed at exit; a
    folder too deep for a socket's path leaves it in /tmp, still with worker processes."""
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    done = run_program(tmp_path, PROGRAM_RUNTIME_DIRECTORY, RUNTIME_DIRECTORY=str(runtime))
    assert done.returncode == 0, done.stderr
    address = Path(done.stdout.strip())
    assert address.parent.parent == runtime and address.parent.name.startswith("pymp-")
    assert list(runtime.iterdir()) == []  # removed when the process ended
    second = tmp_path / "second"
    deep = second / ("d" * 120)
    deep.mkdir(parents=True)
    done = run_program(second, PROGRAM_RUNTIME_DIRECTORY, RUNTIME_DIRECTORY=str(deep))
    assert done.returncode == 0, done.stderr
    assert "too deep for a socket" in done.stderr and "using threads" not in done.stderr
    assert not Path(done.stdout.strip()).is_relative_to(deep), done.stdout


# A program that restores three times; the fork server is stopped (SIGSTOP: it never
# answers) after the first restore and left so.
PROGRAM_FORK_SERVER_STOPPED = textwrap.dedent(
    """
    import faulthandler, logging, os, signal, sys
    from pathlib import Path
    from multiprocessing import forkserver

    def main() -> None:
        from ferryman.engine import process_pool
        from engine.restore_program import backed_up

        logging.basicConfig()
        faulthandler.dump_traceback_later(60, exit=True)  # a hang fails, with its stacks
        base = Path(sys.argv[1])
        tree = backed_up(base, 6, 2)
        servers = []
        for n in range(3):
            # short only for the stopped one: a new fork server imports its modules before
            # it answers (~0.2 s, more on a loaded machine), and must not be killed for it
            process_pool.FORK_SERVER_TIMEOUT = 1.0 if n == 1 else 30.0
            tree.restore_checked(base / f"out{n}")
            servers.append(forkserver._forkserver._forkserver_pid)
            if n == 0:
                os.kill(servers[0], signal.SIGSTOP)
        tree.repo.close()
        print(*servers)

    if __name__ == "__main__":
        main()
    """
)


def test_a_fork_server_that_does_not_answer_leaves_that_restore_to_threads(
    tmp_path: Path,
) -> None:
    """A stopped or hung fork server never sends the first worker's pid: the restore
    waited forever. It now waits ``FORK_SERVER_TIMEOUT``, kills that server and writes
    its files in-process; the next restore forks from a new fork server."""
    done = run_program(tmp_path, PROGRAM_FORK_SERVER_STOPPED)
    assert done.returncode == 0, done.stderr  # the program checks the three restores' files
    assert done.stderr.count("using threads") == 1, done.stderr  # the second restore only
    assert "did not answer within 1 s: killed" in done.stderr, done.stderr
    servers = done.stdout.split()
    assert len(servers) == 3 and servers[2] != servers[0], servers


def test_a_fork_server_reset_while_a_pool_connects_leaves_that_batch_to_threads(
    tmp_path: Path,
) -> None:
    """Another pool replacing a deleted fork server resets multiprocessing's address
    while this pool connects (a window of microseconds): multiprocessing then raises
    ``TypeError`` (connecting to ``None``) or ``ValueError`` ("server not running").
    The restore writes that batch in-process with a warning instead of failing."""
    racing = PROGRAM.replace(
        "    base = Path(sys.argv[1])\n",
        "    from concurrent.futures import ProcessPoolExecutor\n"
        "    real, raised = ProcessPoolExecutor.submit, []\n"
        "    def submit(pool, fn, *args):\n"
        "        if fn.__name__ == '_write_batch' and len(raised) < 2:\n"
        "            raised.append(1)\n"
        "            raise (TypeError if len(raised) == 1 else ValueError)('server reset')\n"
        "        return real(pool, fn, *args)\n"
        "    ProcessPoolExecutor.submit = submit\n"
        "    base = Path(sys.argv[1])\n",
    )
    assert racing != PROGRAM
    done = run_program(tmp_path, racing)
    assert done.returncode == 0, done.stderr  # the program checks both restores' files
    # one fallback per restore (a restore whose pool failed once stays on threads)
    assert done.stderr.count("using threads") == 2, done.stderr


# A program that starts a forked pool (the restore's) and a spawned one (the saver
# processes'), prints their workers' pids, then dies by SIGKILL (as a proxy killed
# by an administrator or the OOM killer, mid-task).
PROGRAM_OWNER_KILLED = textwrap.dedent(
    """
    import os, signal, sys

    def main() -> None:
        from ferryman.engine.process_pool import forked_pool, spawn_pool

        forked = forked_pool(2, len, b"", [])
        spawned = spawn_pool(2, len, b"")
        pids = {f.result(timeout=60) for f in [forked.submit(os.getpid) for _ in range(4)]}
        pids |= {f.result(timeout=60) for f in [spawned.submit(os.getpid) for _ in range(4)]}
        print(*pids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        main()
    """
)


def test_pool_workers_end_with_the_process_that_made_the_pool(tmp_path: Path) -> None:
    """A pool worker waits for jobs on a pipe it holds both ends of: when the process
    that made the pool dies without shutting it down (kill -9), its workers must not
    wait forever (holding the restore's folders and the service's output open)."""
    done = run_program(tmp_path, PROGRAM_OWNER_KILLED)
    assert done.returncode == -9, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) >= 2, done.stdout  # at least one worker of each pool
    deadline = time.monotonic() + 20
    while (alive := [p for p in pids if Path(f"/proc/{p}").exists()]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert not alive, f"workers still running after their pool's process died: {alive}"
