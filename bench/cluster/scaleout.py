"""Scale-out benchmark: job throughput with 1, 2, 3, 4 proxies, each on a link capped at
the same bandwidth, writing an S3 repository served on the far side of those links.

Layout (see ``netns.py``): a bridge in the host namespace carries the backup
server and an S3-protocol server (moto); each proxy is a real ``ferryman proxy
run`` process in its own network namespace whose veth link to the bridge is
capped with ``tc tbf`` in both directions. The share is a local folder (the
namespaces share the filesystem) of incompressible data in equal top-level
folders, split by the server into as many partitions (the share's io-control
is ``faster``, so every proxy may take part). For each N the first N proxies
are enabled and the others disabled, a fresh repository (a new S3 prefix, the
S3 server emptied) and a job are added, and the job is run: throughput is the
share's bytes over the wall time from ``POST /jobs/{name}/run`` to the end of
the session (its assembly included).

    sudo .venv/bin/python -m bench.cluster.scaleout [--small] [--rate-mbit 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench.cluster.figures import (
    SCALE_OUT_TARGET,
    ScaleRun,
    format_table,
    scale_rows,
    scale_table,
)
from bench.cluster.fleet import (
    PRIORITY_NICE,
    FleetError,
    Proxy,
    Server,
    nice_prefix,
    stop_all,
    stop_process,
)
from bench.cluster.netns import HOST_ADDRESS, Link, Namespaces, missing_requirements
from bench.cluster.section import print_and_save

BENCH_DIR = Path(__file__).resolve().parents[1]
BUCKET = "ferryman-bench"
S3_KEY = "bench"
PASSPHRASE = "scale-out benchmark passphrase"
SHARE = "scale"
SHM = Path("/dev/shm")
# one scale-out run at a time on a machine: the namespaces, bridge and addresses are global
LOCK = Path("/run/lock" if Path("/run/lock").is_dir() else "/tmp") / "ferryman-bench-scaleout.lock"
PARTS = 12  # divisible by 1, 2, 3 and 4: every proxy gets the same number of equal partitions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster.scaleout", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--small", action="store_true", help="half the data, 1 and 4 proxies only (~2 min)"
    )
    parser.add_argument(
        "--proxies", default=None, help="proxy counts to run (default 1,2,3,4; small: 1,4)"
    )
    parser.add_argument("--rate-mbit", type=float, default=16.0, help="cap of every link")
    parser.add_argument(
        "--share-mb", type=int, default=None, help="share size in MB (default 120, small 60)"
    )
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "work" / "scaleout")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--priority",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run server, proxies and the S3 server at nice -10 so other work on a shared"
        " machine yields to them (default: yes)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="homes of the server and proxies, S3 spill files (default: a new folder in"
        " memory, /dev/shm, so the shared disk adds no stalls); removed afterwards",
    )
    args = parser.parse_args(argv)
    if args.proxies is None:
        args.proxies = "1,4" if args.small else "1,2,3,4"
    try:
        args.counts = sorted({int(n) for n in args.proxies.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--proxies must be numbers like 1,2,3,4, got {args.proxies!r}")
    if not args.counts or args.counts[0] < 1 or args.counts[-1] > 16:
        parser.error("--proxies: between 1 and 16 proxies")
    if 1 not in args.counts:
        parser.error("--proxies must include 1: the one-proxy run is the baseline")
    args.share_mb = args.share_mb or (60 if args.small else 120)
    args.workdir = args.workdir.resolve()
    return args


# --- the share ----------------------------------------------------------------------------
def build_share(root: Path, total_mb: int, parts: int = PARTS, seed: int = 7) -> int:
    """``parts`` top-level folders of 4 seeded random files each; reused when unchanged.
    Returns the share's size in bytes."""
    spec = {"total_mb": total_mb, "parts": parts, "seed": seed, "files_per_part": 4}
    manifest = root.parent / "share-manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("spec") == spec:
        return int(json.loads(manifest.read_text())["bytes"])
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    file_size = total_mb * 1_000_000 // (parts * 4)
    for p in range(parts):
        folder = root / f"part{p:02d}"
        folder.mkdir(parents=True)
        for f in range(4):
            (folder / f"data{f}.bin").write_bytes(rng.randbytes(file_size))
    size = parts * 4 * file_size
    manifest.write_text(json.dumps({"spec": spec, "bytes": size}))
    return size


# --- raw link check -----------------------------------------------------------------------
LINK_CHECK = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
buf = b"\\0" * 65536
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    s.sendall(buf)
s.close()
"""


def link_check(links: list[Link], seconds: float = 3.0) -> dict[str, Any]:
    """TCP upload rate of each link alone, then of all links at once (MB/s per link)."""

    def measure(group: list[Link]) -> list[float]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST_ADDRESS, 0))
        listener.listen(len(group))
        port = listener.getsockname()[1]
        received: dict[int, float] = {}

        def drain(conn: socket.socket, index: int) -> None:
            start, total = time.monotonic(), 0
            while chunk := conn.recv(1 << 20):
                total += len(chunk)
            received[index] = total / 1e6 / max(time.monotonic() - start, 1e-6)
            conn.close()

        senders = [
            subprocess.Popen(
                [
                    *("ip", "netns", "exec", link.namespace, sys.executable, "-c", LINK_CHECK),
                    *(HOST_ADDRESS, str(port), str(seconds)),
                ]
            )
            for link in group
        ]
        readers = []
        for i in range(len(group)):
            conn, _ = listener.accept()
            thread = threading.Thread(target=drain, args=(conn, i))
            thread.start()
            readers.append(thread)
        for proc in senders:
            proc.wait(seconds + 30)
        for thread in readers:
            thread.join(30)
        listener.close()
        return [received[i] for i in sorted(received)]

    alone = [measure([link])[0] for link in links]
    together = measure(links) if len(links) > 1 else alone
    return {"alone_mb_s": alone, "together_mb_s": together}


# --- the S3 server ------------------------------------------------------------------------
class S3Server:
    """moto's S3-protocol server on the bridge address, in the host namespace."""

    def __init__(self, workdir: Path, priority: bool = False) -> None:
        self.priority = priority
        self.port = _free_port(HOST_ADDRESS)
        self.endpoint = f"http://{HOST_ADDRESS}:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        exe = Path(sys.executable).with_name("moto_server")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        spill = self.workdir / "moto-tmp"
        spill.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_KEY,
            # objects stay in memory (moto spills those above 5 MB to temporary files)
            "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 30),
            "TMPDIR": str(spill),
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*nice_prefix(self.priority), *cmd, "-H", HOST_ADDRESS, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                return self
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise FleetError(f"moto S3 server did not start: {exc}") from exc
                time.sleep(0.2)

    def reset(self) -> None:
        """Forget every bucket (moto keeps objects in memory), then make the bench bucket."""
        request = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=30).close()
        put = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        urllib.request.urlopen(put, timeout=30).close()

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}?endpoint={self.endpoint}&region=us-east-1"

    def stop(self) -> None:
        stop_process(self.proc)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- one run ------------------------------------------------------------------------------
def wait_probes(server: Server, proxies: list[str], targets: set[str], timeout: float = 60) -> None:
    """Until every named proxy has a successful probe of every target."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = []
        for name in proxies:
            probes = server.get(f"/proxies/{name}")["probes"]
            ok = {p["target"] for p in probes if p["ok"]}
            missing += [f"{name}→{t}" for t in sorted(targets - ok)]
        if not missing:
            return
        time.sleep(0.3)
    raise FleetError(f"probes missing after {timeout:.0f} s: {', '.join(missing)}")


def run_once(
    server: Server, s3: S3Server, names: list[str], count: int, share_bytes: int
) -> dict[str, Any]:
    s3.reset()
    for i, name in enumerate(names):
        server.post(f"/proxies/{name}/{'enable' if i < count else 'disable'}")
    repo, job = f"scale{count}", f"scale{count}"
    server.post(
        "/repositories",
        {
            "name": repo,
            "url": s3.url(f"run-{count}"),
            "passphrase": PASSPHRASE,
            "access_key": S3_KEY,
            "secret_key": S3_KEY,
        },
    )
    server.post("/jobs", {"name": job, "shares": [SHARE], "repository": repo})
    wait_probes(server, names[:count], {SHARE, repo})
    started = time.monotonic()
    session = server.post(f"/jobs/{job}/run")
    session = server.wait_session(session["id"])
    seconds = time.monotonic() - started
    tasks = session["tasks"]
    backups = [t for t in tasks if t["kind"] == "backup"]
    return {
        "proxies": count,
        "seconds": seconds,
        "bytes": share_bytes,
        "status": session["status"],
        "session_id": session["id"],
        "tasks": len(backups),
        "tasks_per_proxy": dict(Counter(t["proxy"] for t in backups)),
        "assemble_proxy": next((t["proxy"] for t in tasks if t["kind"] == "assemble"), None),
        "errors": [t["error"] for t in tasks if t["error"]],
        "timeline": timeline(session),
    }


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def timeline(session: dict[str, Any]) -> list[dict[str, Any]]:
    """Each task's proxy, start and end in seconds from the session's start (server clock)."""
    origin = _ts(session["started"]) or 0.0
    out = []
    for task in session["tasks"]:
        start, end = _ts(task["started"]), _ts(task["ended"])
        out.append(
            {
                "kind": task["kind"],
                "proxy": task["proxy"],
                "start": round(start - origin, 3) if start else None,
                "end": round(end - origin, 3) if end else None,
            }
        )
    out.append({"kind": "session", "end": round((_ts(session["ended"]) or origin) - origin, 3)})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"building the share ({args.share_mb} MB of random data in {PARTS} folders)…")
    share_bytes = build_share(args.workdir / "share", args.share_mb)
    if args.state_dir is None:
        parent = SHM if SHM.is_dir() else args.workdir
        homes = Path(tempfile.mkdtemp(prefix="ferryman-bench-scaleout-", dir=parent))
    else:
        homes = args.state_dir
        if homes.exists():
            shutil.rmtree(homes)
        homes.mkdir(parents=True)
    most = args.counts[-1]
    namespaces = Namespaces(most, args.rate_mbit)
    procs: list[Any] = []
    try:
        namespaces.create()
        print(f"{most} namespaces, every link capped at {args.rate_mbit:g} Mbit/s both ways")
        links = link_check(namespaces.links)
        print(
            "raw TCP upload per link, MB/s: alone "
            + ", ".join(f"{v:.2f}" for v in links["alone_mb_s"])
            + "; all at once "
            + ", ".join(f"{v:.2f}" for v in links["together_mb_s"])
        )
        s3 = S3Server(homes, args.priority)
        procs.append(s3.start())
        env = {
            # every top-level folder of the share is worth its own partition
            "FERRYMAN_PARTITION_MIN_BYTES": str(max(1, share_bytes // (PARTS * 4))),
            "FERRYMAN_PARTITION_MIN_FILES": "1",
            "FERRYMAN_MAX_PARTITIONS": str(PARTS),
        }
        listen = f"{HOST_ADDRESS}:{_free_port(HOST_ADDRESS)}"
        server = Server(homes / "server", listen, env=env, priority=args.priority)
        procs.append(server.start())
        server.post(
            "/shares", {"name": SHARE, "url": str(args.workdir / "share"), "io_control": "faster"}
        )
        names = []
        proxy_env = {"AWS_EC2_METADATA_DISABLED": "true"}
        for link in namespaces.links:
            proxy = Proxy(
                server.url,
                homes / f"p{link.index}",
                f"p{link.index}",
                slots=1,
                netns=link.namespace,
                priority=args.priority,
            )
            procs.insert(0, proxy.start(server.join_token(), proxy_env))
            names.append(proxy.name)
        server.wait_proxies(set(names))
        runs = []
        for count in args.counts:
            print(f"job with {count} prox{'y' if count == 1 else 'ies'}…", flush=True)
            for proxy in procs:
                if isinstance(proxy, Proxy):
                    proxy.check_alive()
            result = run_once(server, s3, names, count, share_bytes)
            runs.append(result)
            print(
                f"  {result['status']} in {result['seconds']:.1f} s "
                f"({share_bytes / 1e6 / result['seconds']:.2f} MB/s); "
                f"partitions per proxy {result['tasks_per_proxy']}",
                flush=True,
            )
    finally:
        stop_all(procs)
        namespaces.remove()
        shutil.rmtree(homes, ignore_errors=True)
    return {
        "rate_mbit": args.rate_mbit,
        "cap_mb_s": args.rate_mbit / 8,
        "share_bytes": share_bytes,
        "partitions": PARTS,
        "nice": PRIORITY_NICE if args.priority else 0,
        "link_check": links,
        "runs": runs,
    }


def report(result: dict[str, Any]) -> tuple[str, bool]:
    runs = [
        ScaleRun(r["proxies"], r["seconds"], r["bytes"], r["tasks"], r["status"])
        for r in result["runs"]
    ]
    rows = scale_rows(runs)
    lines = [
        f"scale-out: {result['share_bytes'] / 1e6:.0f} MB share in {result['partitions']} "
        f"partitions, every proxy link capped at {result['rate_mbit']:g} Mbit/s "
        f"({result['cap_mb_s']:.2f} MB/s), S3 repository (moto) behind the links, "
        f"nice {result['nice']}",
        "",
        format_table(scale_table(rows)),
        "",
        f"efficiency = MB/s with N proxies / (N x MB/s with one); target >= {SCALE_OUT_TARGET}",
    ]
    return "\n".join(lines), all(row.passed for row in rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"scale-out benchmark skipped: {why}")
        return 0
    # Ctrl-C and SIGTERM both unwind through the cleanup of namespaces and processes
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    lock = open(LOCK, "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another scale-out benchmark runs on this machine ({LOCK}); waiting for it…")
        fcntl.flock(lock, fcntl.LOCK_EX)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()[0]
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; namespaces and processes removed", file=sys.stderr)
        return 130
    except (FleetError, RuntimeError) as exc:
        print(f"scale-out benchmark failed: {exc}", file=sys.stderr)
        return 2
    text, _ = report(result)
    print_and_save(result, text, args, started, load_before, "scaleout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
