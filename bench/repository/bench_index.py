"""Index lookup rate and process memory at 1M and 10M synthetic entries.

Run: ``python -m bench.repository.bench_index [--sizes 1000000,10000000] [--lookups 200000]``.

Builds (once, reused: ``bench/work/repository-index/``) a local index cache
with N synthetic entries through the repository's own ``IndexCache`` schema,
then, in a fresh process per size, performs random lookups of present and
absent blob ids through ``IndexCache.lookup`` and reports the rate and the
peak RSS of that process.  The claim checked: peak memory grows < 10% from
1M to 10M entries (issue 3, point 5).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import blake3

from ferryman.repository.index_cache import IndexCache

WORK = Path(__file__).resolve().parent.parent / "work" / "repository-index"


def synthetic_id(i: int, n: int) -> bytes:
    """Sorted-by-construction random-looking ids: an increasing prefix, a hashed tail."""
    step = (1 << 64) // n
    return (i * step).to_bytes(8, "big") + blake3.blake3(i.to_bytes(8, "little")).digest(24)


def build(path: Path, n: int) -> float:
    """Create the cache database with ``n`` entries; return seconds taken."""
    tmp = path.with_suffix(".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    start = time.perf_counter()
    cache = IndexCache(tmp)
    pack_ids = [os.urandom(16) for _ in range((n + 29) // 30)]
    batch = 200_000
    for lo in range(0, n, batch):
        rows = (
            (synthetic_id(i, n), pack_ids[i // 30], 22 + (i % 30) * 40_000, 40_000, 39_000, 1, 1)
            for i in range(lo, min(n, lo + batch))
        )
        cache._conn.execute("BEGIN")
        cache._conn.executemany("INSERT INTO blobs VALUES (?,?,?,?,?,?,?)", rows)
        cache._conn.execute("COMMIT")
    cache._conn.execute("INSERT INTO segments VALUES ('index/synthetic')")
    cache._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    tmp.rename(path)
    return time.perf_counter() - start


def peak_rss_kib() -> int:
    """This process image's peak RSS (VmHWM; ru_maxrss would include the parent's before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def lookup_child(path: Path, n: int, lookups: int) -> None:
    """Runs in a fresh process: print 'rate_hit rate_miss maxrss_kib base_kib'."""
    base = peak_rss_kib()
    cache = IndexCache(path)
    rng = random.Random(42)
    found = found_missing = 0
    hit_time = miss_time = 0.0
    for _ in range(0, lookups, 10_000):  # ids made in small batches: RSS measures the index
        hits = [synthetic_id(rng.randrange(n), n) for _ in range(10_000)]
        misses = [rng.randbytes(32) for _ in range(10_000)]
        start = time.perf_counter()
        found += sum(cache.lookup(b) is not None for b in hits)
        mid = time.perf_counter()
        found_missing += sum(cache.lookup(b) is not None for b in misses)
        hit_time += mid - start
        miss_time += time.perf_counter() - mid
    lookups = (lookups // 10_000) * 10_000
    hit_rate, miss_rate = lookups / hit_time, lookups / miss_time
    assert found == lookups and found_missing == 0
    rss = peak_rss_kib()
    print(f"{hit_rate:.0f} {miss_rate:.0f} {rss} {base}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        lookup_child(Path(args.child[0]), int(args.child[1]), args.lookups)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"index lookups through IndexCache (SQLite, {args.lookups} hits + {args.lookups} misses)")
    print(
        f"{'entries':>11} {'build s':>8} {'db MiB':>7} {'B/entry':>8} {'hits/s':>9} "
        f"{'misses/s':>9} {'peak RSS MiB':>13} {'vs first':>9}"
    )
    first_rss = None
    for n in sizes:
        path = WORK / f"index-{n}.sqlite"
        built = build(path, n) if not path.exists() else 0.0
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.repository.bench_index",
                "--child",
                str(path),
                str(n),
                "--lookups",
                str(args.lookups),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        hit_rate, miss_rate, rss_kib = float(out[0]), float(out[1]), int(out[2])
        first_rss = first_rss or rss_kib
        size = path.stat().st_size
        growth = (rss_kib / first_rss - 1) * 100
        print(
            f"{n:>11,} {built:>8.1f} {size / 2**20:>7.0f} {size / n:>8.1f} {hit_rate:>9.0f} "
            f"{miss_rate:>9.0f} {rss_kib / 1024:>13.1f} {growth:>+8.1f}%"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
