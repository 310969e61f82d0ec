"""How long native work waits for the GIL beside a busy Python thread, by switch interval.

Run: ``python -m bench.engine.bench_gil_handoff [--mib 128] [--intervals 0.005,0.0005]``

Cuts (FastCDC, avg 1 MiB) and hashes (BLAKE3) a buffer of 3/4 random and 1/4 zero
bytes, as the large-file reader and the saver threads do, once alone and once
beside a thread running Python code (the scanner and the tree saver of a backup):
each chunk releases the GIL twice and then waits for it, up to the switch
interval (``ferryman.engine.switch_interval``). Prints seconds per case.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import blake3
from pyfastcdc import FastCDC


def _cut_and_hash(chunker: FastCDC, buf: bytearray) -> int:
    n = 0
    for chunk in chunker.cut_buf(memoryview(buf)):
        blake3.blake3(chunk.data).digest()
        n += 1
    return n


def _busy(stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        for _ in range(100):
            n += 1


def measure(mib: int, interval: float) -> tuple[int, float, float]:
    """(chunks, seconds alone, seconds beside a busy thread) with ``interval``."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        buf = bytearray(os.urandom((mib * 3 // 4) << 20)) + bytearray((mib // 4) << 20)
        chunker = FastCDC(1 << 20, min_size=256 << 10, max_size=4 << 20)
        t0 = time.perf_counter()
        chunks = _cut_and_hash(chunker, buf)
        alone = time.perf_counter() - t0
        stop = threading.Event()
        busy = threading.Thread(target=_busy, args=(stop,))
        busy.start()
        try:
            t0 = time.perf_counter()
            _cut_and_hash(chunker, buf)
            beside = time.perf_counter() - t0
        finally:
            stop.set()
            busy.join()
        return chunks, alone, beside
    finally:
        sys.setswitchinterval(saved)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--intervals", default="0.005,0.0005")
    args = ap.parse_args(argv)
    for interval in (float(x) for x in args.intervals.split(",")):
        chunks, alone, beside = measure(args.mib, interval)
        print(
            f"switch interval {interval * 1000:.1f} ms: {chunks} chunks cut and hashed "
            f"alone {alone:.3f} s, beside a busy Python thread {beside:.3f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
