"""Dispatcher benchmark: freed slot -> next task, and API latency, with 10,000 queued tasks.

A real backup server (SQLite in its home by default, or ``--db postgresql://…``)
without an embedded proxy, and one real ``ferryman proxy run`` process with one
task slot. The queue is filled through the REST API with repository checks of
the default repository (``POST /repositories/default/check``: one session with
one task each) while the proxy is disabled, so they all wait. Then:

1. **API, queue idle** — read calls (``GET /sessions?limit=50``, ``/proxies``,
   ``/jobs``, ``/sessions/{id}`` of a queued session) from several client
   threads for a few seconds;
2. **freed slot -> next task** — the proxy is enabled and works through the
   queue one task at a time; while it does, the same read calls run again.
   From the server's own task timestamps (``ended`` is written when the
   proxy's result arrives, ``started`` when the proxy's long-poll hands the
   task over) the gap between one task's end and the next one's start is the
   dispatcher's placement plus the delivery to the proxy.

    python -m bench.cluster.dispatcher [--small] [--queued N] [--db URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.cluster.figures import (
    API_P99_TARGET_MS,
    FREED_SLOT_TARGET_MS,
    format_table,
    gaps_ms,
    latency_summary,
    percentile,
)
from bench.cluster.fleet import (
    PRIORITY_NICE,
    FleetError,
    Proxy,
    Server,
    raise_own_priority,
    stop_all,
)
from bench.cluster.postgres import PostgresUnavailable, private_cluster
from bench.cluster.section import print_and_save
from bench.tools.ferryman import free_port

BENCH_DIR = Path(__file__).resolve().parents[1]
PROXY = "bench-dispatch"
SHM = Path("/dev/shm")
READ_CALLS = ("/sessions?limit=50", "/proxies", "/jobs", "/sessions/{id}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster.dispatcher", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--small", action="store_true", help="1,000 queued, shorter phases")
    parser.add_argument("--queued", type=int, default=None, help="tasks to queue (10,000)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks to run while measuring")
    parser.add_argument(
        "--db",
        default="sqlite",
        help="sqlite (in the server home, the default), postgres (a private cluster started"
        " for the run) or a postgresql://… URL of an empty database",
    )
    parser.add_argument("--api-seconds", type=float, default=None)
    parser.add_argument(
        "--api-threads", type=int, default=1, help="concurrent API clients (1: each call alone)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="server and proxy homes (default: a new folder in memory, /dev/shm, so the"
        " shared disk adds no stalls, removed afterwards; give a folder on disk to include"
        " its fsyncs)",
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--priority",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="as root, run server, proxy and clients at nice -10 so other work on a shared"
        " machine yields to them (default: yes)",
    )
    args = parser.parse_args(argv)
    if args.db not in ("sqlite", "postgres") and not args.db.startswith("postgresql://"):
        parser.error(f"--db must be sqlite, postgres or a postgresql:// URL, got {args.db!r}")
    args.queued = args.queued or (1_000 if args.small else 10_000)
    args.tasks = args.tasks or (60 if args.small else 200)
    args.api_seconds = args.api_seconds or (5.0 if args.small else 15.0)
    if args.tasks + 1 > args.queued:
        parser.error("--tasks must be smaller than --queued")
    return args


def _time(value: str) -> float:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def fill_queue(server: Server, count: int, threads: int = 1) -> tuple[list[int], float]:
    """Queue ``count`` repository checks through the API; returns their session ids in
    queue order and the seconds it took. One request at a time, so the queue order (by
    queued time) is the order of the ids."""
    clients = [server.client() for _ in range(threads)]
    started = time.monotonic()
    done = [0]
    lock = threading.Lock()

    def post(i: int) -> int:
        response = clients[i % threads].post("/repositories/default/check", json={})
        if response.status_code != 201:
            raise FleetError(f"queueing check {i}: {response.status_code} {response.text[:300]}")
        with lock:
            done[0] += 1
            if done[0] % 1000 == 0:
                print(f"  {done[0]} queued ({time.monotonic() - started:.0f} s)", flush=True)
        return int(response.json()["id"])

    with ThreadPoolExecutor(threads) as pool:
        ids = sorted(pool.map(post, range(count)))
    for client in clients:
        client.close()
    return ids, time.monotonic() - started


def measure_api(
    server: Server, seconds: float, threads: int, session_ids: list[int]
) -> dict[str, list[float]]:
    """Read calls from ``threads`` clients for ``seconds``; latencies in ms per call."""
    samples: dict[str, list[float]] = {call: [] for call in READ_CALLS}
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with server.client(timeout=30) as client:
            i = seed
            while time.monotonic() < stop:
                call = READ_CALLS[i % len(READ_CALLS)]
                i += 1
                path = call.format(id=rng.choice(session_ids))
                t0 = time.perf_counter()
                try:
                    response = client.get(path)
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, response = False, None
                    errors.append(f"{path}: {exc}")
                elapsed = (time.perf_counter() - t0) * 1000
                if ok:
                    samples[call].append(elapsed)
                elif response is not None:
                    errors.append(f"{path}: {response.status_code}")

    workers = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise FleetError(f"{len(errors)} API calls failed, e.g. {errors[0]}")
    return samples


def api_report(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    report = {call: latency_summary(values) for call, values in samples.items() if values}
    everything = [v for values in samples.values() for v in values]
    report["all"] = latency_summary(everything)
    return report


def api_table(title: str, report: dict[str, dict[str, float]]) -> str:
    table = [[title, "calls", "p50 ms", "p90 ms", "p99 ms", "max ms"]]
    for call, s in report.items():
        table.append(
            [
                call,
                f"{s['count']:.0f}",
                f"{s['p50_ms']:.1f}",
                f"{s['p90_ms']:.1f}",
                f"{s['p99_ms']:.1f}",
                f"{s['max_ms']:.1f}",
            ]
        )
    return format_table(table)


def ran_prefix(server: Server, ids: list[int], start: int, limit: int) -> list[tuple[float, float]]:
    """(started, ended) of the tasks of ``ids[start:]`` that have ended, in queue order, up
    to ``limit`` of them, stopping at the first one still queued or running."""
    out: list[tuple[float, float]] = []
    for session_id in ids[start : start + limit]:
        session = server.get(f"/sessions/{session_id}")
        if session["status"] == "running":
            break
        task = session["tasks"][0]
        if task["state"] not in ("success", "warning"):
            raise FleetError(f"session {session_id}: task {task['state']}: {task['error']}")
        out.append((_time(task["started"]), _time(task["ended"])))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    temporary = args.workdir is None
    if temporary:  # a folder of this run's own: runs at the same time do not collide
        args.workdir = Path(
            tempfile.mkdtemp(prefix="ferryman-bench-dispatcher-", dir=SHM if SHM.is_dir() else None)
        )
    elif args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.prioritised = raise_own_priority(args.priority)
    db_url = args.db_url if args.db != "sqlite" else None
    server = Server(
        args.workdir / "server", f"127.0.0.1:{free_port()}", db_url, priority=args.priority
    )
    proxy = Proxy(server.url, args.workdir / "proxy", PROXY, slots=1, priority=args.priority)
    try:
        server.start()
        proxy.start(server.join_token())
        server.wait_proxies({PROXY})
        # one check first: the proxy probes the repository and the path is warm
        t0 = time.monotonic()
        warm = server.post("/repositories/default/check", {})
        warm = server.wait_session(warm["id"], timeout=120)
        if warm["status"] != "success":
            raise FleetError(f"warm-up check ended {warm['status']}: {json.dumps(warm)[:800]}")
        check_seconds = time.monotonic() - t0
        print(f"one repository check through server and proxy: {check_seconds:.2f} s")

        server.post(f"/proxies/{PROXY}/disable")
        print(f"queueing {args.queued} repository checks through the API (proxy disabled)…")
        queued, fill_seconds = fill_queue(server, args.queued)
        waiting = server.get(f"/sessions/{queued[-1]}")["tasks"][0]
        if waiting["state"] != "waiting":
            raise FleetError(f"the last queued task is {waiting['state']}, not waiting")
        print(f"  {args.queued} queued in {fill_seconds:.1f} s")

        print(f"API read calls, queue idle ({args.api_seconds:.0f} s, {args.api_threads} clients)…")
        idle = api_report(measure_api(server, args.api_seconds, args.api_threads, queued))

        print(f"enabling the proxy; it runs {args.tasks} tasks one at a time, no API load…")
        server.post(f"/proxies/{PROXY}/enable")
        flow_started = time.monotonic()
        deadline = flow_started + args.tasks * 30 + 120
        last = queued[args.tasks - 1]
        while server.get(f"/sessions/{last}")["status"] == "running":
            proxy.check_alive()
            if time.monotonic() > deadline:
                raise FleetError(
                    f"{args.tasks} tasks not done after {deadline - flow_started:.0f} s"
                )
            time.sleep(1.0)
        flow_seconds = time.monotonic() - flow_started
        quiet = ran_prefix(server, queued, 0, args.tasks)

        print(f"API read calls while tasks flow ({args.api_seconds:.0f} s)…")
        first_loaded = queued.index(
            next(
                i
                for i in queued[args.tasks :]
                if server.get(f"/sessions/{i}")["status"] == "running"
            )
        )
        busy = api_report(measure_api(server, args.api_seconds, args.api_threads, queued))
        proxy.check_alive()
        loaded = ran_prefix(server, queued, first_loaded, len(queued))
        still_queued = len(queued) - first_loaded - len(loaded)
    finally:
        stop_all([proxy, server])
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)
    if len(quiet) != args.tasks:
        raise FleetError(f"only {len(quiet)} of the first {args.tasks} tasks ran in order")
    quiet.sort()  # in the order they ran (the queue's order, barring equal queued times)
    loaded.sort()
    gaps = gaps_ms([t[1] for t in quiet], [t[0] for t in quiet])
    loaded_gaps = gaps_ms([t[1] for t in loaded], [t[0] for t in loaded]) if len(loaded) > 1 else []
    durations = [end - start for start, end in quiet]
    freed = {
        "tasks": args.tasks,
        "gaps": len(gaps),
        "median_ms": percentile(gaps, 50),
        "p90_ms": percentile(gaps, 90),
        "p99_ms": percentile(gaps, 99),
        "min_ms": min(gaps),
        "max_ms": max(gaps),
        "task_median_s": percentile(durations, 50),
        "flow_seconds": flow_seconds,
        "gaps_ms": [round(g, 3) for g in gaps],
        "under_api_load": {
            "gaps": len(loaded_gaps),
            "median_ms": percentile(loaded_gaps, 50) if loaded_gaps else None,
            "p90_ms": percentile(loaded_gaps, 90) if loaded_gaps else None,
        },
    }
    return {
        "db": "sqlite" if args.db == "sqlite" else "postgresql",
        "nice": PRIORITY_NICE if args.prioritised else 0,
        "queued": args.queued,
        "fill_seconds": fill_seconds,
        "still_queued_after": still_queued,
        "check_seconds": check_seconds,
        "freed_slot": freed,
        "api_idle": idle,
        "api_busy": busy,
    }


def report(result: dict[str, Any]) -> tuple[str, bool]:
    freed = result["freed_slot"]
    worst_p99 = max(result["api_idle"]["all"]["p99_ms"], result["api_busy"]["all"]["p99_ms"])
    ok_freed = freed["median_ms"] <= FREED_SLOT_TARGET_MS
    ok_api = worst_p99 < API_P99_TARGET_MS
    lines = [
        f"dispatcher, {result['queued']} tasks queued ({result['db']}, nice {result['nice']}; "
        f"{result['still_queued_after']} still queued after the measured ones)",
        f"freed slot -> next task handed to the proxy, over {freed['gaps']} gaps: "
        f"median {freed['median_ms']:.1f} ms, p90 {freed['p90_ms']:.1f} ms, "
        f"p99 {freed['p99_ms']:.1f} ms, max {freed['max_ms']:.1f} ms "
        f"(each task: median {freed['task_median_s']:.2f} s)",
        _loaded_line(freed["under_api_load"]),
        "",
        api_table("API, queue idle", result["api_idle"]),
        "",
        api_table("API, tasks flowing", result["api_busy"]),
        "",
        format_table(
            [
                ["measure", "value", "target", ""],
                [
                    "freed slot -> next task, median",
                    f"{freed['median_ms']:.1f} ms",
                    f"<= {FREED_SLOT_TARGET_MS:.0f} ms",
                    "pass" if ok_freed else "miss",
                ],
                [
                    f"API p99 with {result['queued']} queued (worse phase)",
                    f"{worst_p99:.1f} ms",
                    f"< {API_P99_TARGET_MS:.0f} ms",
                    "pass" if ok_api else "miss",
                ],
            ]
        ),
    ]
    return "\n".join(lines), ok_freed and ok_api


def _loaded_line(loaded: dict[str, Any]) -> str:
    if not loaded["gaps"]:
        return "  (no task ended while the API was measured)"
    return (
        f"  while the API calls ran, over {loaded['gaps']} gaps: median "
        f"{loaded['median_ms']:.1f} ms, p90 {loaded['p90_ms']:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the server and proxy are stopped, the state removed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()[0]
    try:
        if args.db == "postgres":
            with private_cluster(SHM if SHM.is_dir() else None) as url:
                args.db_url = url
                result = run(args)
        else:
            args.db_url = args.db
            result = run(args)
    except PostgresUnavailable as exc:
        print(f"dispatcher benchmark failed: PostgreSQL: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; processes stopped", file=sys.stderr)
        return 130
    except (FleetError, httpx.HTTPError) as exc:
        print(f"dispatcher benchmark failed: {exc}", file=sys.stderr)
        return 2
    text, _ = report(result)
    print_and_save(result, text, args, started, load_before, "dispatcher")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
