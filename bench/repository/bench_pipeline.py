"""Chunk -> keyed hash -> compress -> encrypt -> pack throughput on real and random data.

Run: ``python -m bench.repository.bench_pipeline [--mib 128] [--threads 1,2]``.

Compressible input is real text nobody in the project wrote (``/usr/share/doc``
and the Python standard library, concatenated); incompressible input is random.
Each configuration runs the repository's own code path: ``repo.chunker()``,
``repo.blob_id``, ``RepositoryWriter.add_blob`` (zstd with the probe, AES-256-GCM,
packing) into a repository on tmpfs, so the figure includes writing packs but
not a disk; "read MB/s" reads every blob back (``get_blobs``: authenticate,
decompress, verify the id) with the same number of threads.  Prints a table;
MB/s = 10^6 bytes/s of input.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from ferryman.repository import KIND_DATA, Repository, open_backend


def real_text(limit: int) -> bytes:
    """Concatenate text files from the system until ``limit`` bytes."""
    out = bytearray()
    roots = [Path("/usr/share/doc"), Path(os.__file__).parent]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if len(out) >= limit:
                return bytes(out[:limit])
            if path.is_file() and not path.is_symlink() and path.suffix not in (".gz", ".pyc"):
                try:
                    out += path.read_bytes()
                except OSError:
                    continue
    if not out:
        out += b"".join(b"line %d of fallback text, nothing real found\n" % i for i in range(1000))
    while len(out) < limit:  # small systems: repeat what there is (dedup is off below)
        out += out[: limit - len(out)] + b"\n"
    return bytes(out[:limit])


def run_once(data: bytes, threads: int, level: int, workdir: Path) -> tuple[float, float, float]:
    """Return (write MB/s, stored/input ratio, read-back MB/s) for one configuration."""
    repo_dir = workdir / f"repo-{threads}-{level}-{time.monotonic_ns()}"
    repo = Repository.init(open_backend(str(repo_dir), fsync=False), "bench", scrypt_n=1 << 10)
    parts = [
        data[i * len(data) // threads : (i + 1) * len(data) // threads] for i in range(threads)
    ]
    # Make every part unique so deduplication does not flatter the figure.
    parts = [bytes([i]) * 64 + p for i, p in enumerate(parts)]
    try:
        with repo.open_writer("bench", compression_level=level, uploads=2) as writer:
            ids: list[list[bytes]] = [[] for _ in parts]

            def work(part: bytes) -> None:
                mine = ids[parts.index(part)]
                for chunk in repo.chunker().cut_buf(part):
                    blob_id = repo.blob_id(chunk.data)
                    writer.add_blob(KIND_DATA, blob_id, chunk.data)
                    mine.append(blob_id)

            start = time.perf_counter()
            pool = [threading.Thread(target=work, args=(p,)) for p in parts]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            writer.flush()
            elapsed = time.perf_counter() - start
            ratio = writer.stats["bytes_stored"] / max(1, writer.stats["bytes_raw"])

        def read(mine: list[bytes]) -> None:
            for i in range(0, len(mine), 64):
                for _ in repo.get_blobs(mine[i : i + 64]):
                    pass

        start = time.perf_counter()
        pool = [threading.Thread(target=read, args=(m,)) for m in ids]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        read_mbps = len(data) / (time.perf_counter() - start) / 1e6
    finally:
        repo.close()
        shutil.rmtree(repo_dir, ignore_errors=True)
    return len(data) / elapsed / 1e6, ratio, read_mbps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=128, help="input size per data kind")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--levels", default="1,3")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs")
    args = parser.parse_args(argv)
    size = args.mib << 20
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="ferryman-bench-", dir=base))
    inputs = {"text (compressible)": real_text(size), "random (incompressible)": os.urandom(size)}
    print(
        f"repository pipeline: chunk+hash+compress+encrypt+pack, {args.mib} MiB per input, "
        f"best of {args.repeat}, cpus={os.cpu_count()}"
    )
    print(
        f"{'input':<24} {'zstd':>4} {'threads':>7} {'MB/s':>8} {'stored/input':>13} "
        f"{'read MB/s':>9}"
    )
    try:
        for label, data in inputs.items():
            for level in [int(x) for x in args.levels.split(",")]:
                for threads in [int(x) for x in args.threads.split(",")]:
                    best, ratio, best_read = 0.0, 0.0, 0.0
                    for _ in range(args.repeat):
                        mbps, ratio, read_mbps = run_once(data, threads, level, workdir)
                        best, best_read = max(best, mbps), max(best_read, read_mbps)
                    print(
                        f"{label:<24} {level:>4} {threads:>7} {best:>8.0f} {ratio:>13.3f} "
                        f"{best_read:>9.0f}"
                    )
                    sys.stdout.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
