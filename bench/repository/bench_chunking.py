"""Choosing FastCDC parameters: deduplication after small edits vs. number of chunks.

Run: ``python -m bench.repository.bench_chunking [--mib 64]``.

Input: real text/binary files of the system (``/usr/share/doc`` and the Python
standard library, concatenated as a tar-like stream), then the same stream
after 16 random 100-byte insertions and 8 MiB appended.  For each average
size it reports the chunking speed, the mean chunk size, chunks per GiB (index
entries, each ~143 bytes in the local index cache) and the share of the edited
stream that would be stored again.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from pyfastcdc import FastCDC

from bench.repository.bench_pipeline import real_text


def cut(data: bytes, avg: int) -> tuple[list[tuple[int, int]], float]:
    cdc = FastCDC(avg, min_size=avg // 4, max_size=avg * 4, seed=0x5DEECE66D)
    start = time.perf_counter()
    cuts = [(c.offset, c.length) for c in cdc.cut_buf(data)]
    return cuts, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args(argv)
    base = real_text(args.mib << 20)
    rng = random.Random(1)
    edited = bytearray(base)
    for _ in range(16):
        pos = rng.randrange(len(edited))
        edited[pos:pos] = rng.randbytes(100)
    edited += os.urandom(8 << 20)
    print(f"FastCDC parameters on {args.mib} MiB of real files; edit = 16 insertions + 8 MiB")
    print(f"{'avg KiB':>8} {'MB/s':>7} {'mean KiB':>9} {'chunks/GiB':>11} {'re-stored %':>12}")
    for avg in (256 << 10, 512 << 10, 1 << 20, 2 << 20):
        cuts, seconds = cut(base, avg)
        known = {hash(base[o : o + n]) for o, n in cuts}
        cuts2, _ = cut(bytes(edited), avg)
        new = sum(n for o, n in cuts2 if hash(bytes(edited[o : o + n])) not in known)
        mean = len(base) / len(cuts)
        print(
            f"{avg >> 10:>8} {len(base) / seconds / 1e6:>7.0f} {mean / 1024:>9.0f} "
            f"{(1 << 30) / mean:>11.0f} {100 * (new - (8 << 20)) / len(base):>11.1f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
