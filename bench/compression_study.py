"""Compression strategies on a real share: CPU seconds and stored bytes per strategy.

Run: ``python -m bench.compression_study bench/work/workload-reference/share [--only a,b]``.

The share is cut into blobs as the engine does (``ferryman/engine/file_saver.py``):
files up to ``SMALL_FILE_LIMIT`` are read whole and kept as one blob when no larger
than the chunker's ``min_size``, otherwise cut with the repository's FastCDC
parameters (a large file's cut points equal whole-file chunking); identical blobs
are kept once (deduplication).  Each strategy then turns every unique blob into a
``(method, body)`` pair; the table gives the compression CPU seconds (thread time,
one thread, measured around each call only: reading is not counted) and the bytes
the payloads would take (``1 + len(body)`` per blob, before encryption).

A second table splits the current strategy by blob size (where compressing tiny
blobs stops paying), and a third gives the probe's verdicts against a full
compression of every blob over 64 KiB (false negatives: stored raw although
level 3 would have saved >= 3 %; false positives: compressed for < 3 % gain).
``--grouped`` compares today's one frame per blob with one frame per small-file
batch (a format change, measured only: see ``grouped_table``).
"""

from __future__ import annotations

import argparse
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import blake3
import zstandard

from ferryman.engine.file_saver import SMALL_FILE_LIMIT
from ferryman.repository import compression
from ferryman.repository.config import ChunkerParams
from ferryman.repository.crypto import RepositoryKeys
from ferryman.repository.repository import new_chunker

Blob = tuple[str, int, int]  # path, offset, length
Body = tuple[int, int]  # method, body length
Method = Callable[[memoryview], Body]


def walk_files(root: str) -> Iterator[tuple[str, int]]:
    """Regular files under ``root`` (no symlinks), in a stable order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size:
                yield path, st.st_size


def unique_blobs(root: str) -> list[Blob]:
    """Every distinct blob of the share, located by file, offset and length."""
    params = ChunkerParams()
    seed = RepositoryKeys.from_master(bytes(32)).chunker_seed
    cdc = new_chunker(params, seed)
    seen: set[bytes] = set()
    blobs: list[Blob] = []
    for path, size in walk_files(root):
        with open(path, "rb") as f:
            data = f.read()
        if size <= SMALL_FILE_LIMIT and len(data) <= params.min_size:
            pieces = [(0, len(data))]
        else:
            pieces = [(c.offset, c.length) for c in cdc.cut_buf(data)]
        view = memoryview(data)
        for offset, length in pieces:
            digest = blake3.blake3(view[offset : offset + length]).digest()
            if digest not in seen:
                seen.add(digest)
                blobs.append((path, offset, length))
    return blobs


def read_blobs(blobs: list[Blob]) -> Iterator[memoryview]:
    """The blobs' bytes, one at a time (files read once each, from the page cache)."""
    current: str | None = None
    data = b""
    for path, offset, length in blobs:
        if path != current:
            with open(path, "rb") as f:
                data = f.read()
            current = path
        yield memoryview(data)[offset : offset + length]


def compressor(level: int, **params: int) -> zstandard.ZstdCompressor:
    """A compressor at ``level`` with some parameters overridden (others: the level's)."""
    if not params:
        return zstandard.ZstdCompressor(level=level, write_content_size=True)
    cp = zstandard.ZstdCompressionParameters(
        compression_level=level, write_content_size=1, **params
    )
    return zstandard.ZstdCompressor(compression_params=cp)


@dataclass
class Strategy:
    """The writer's rule with its knobs exposed (see ``compression.compress_body``);
    the defaults are the writer's before decision 0012 (plain level 3, four slices)."""

    level: int = 3
    params: dict[str, int] | None = None
    probe: bool = True
    probe_ratio: float = compression.PROBE_RATIO
    probe_slices: int = 4  # the writer's before decision 0012 (now compression.PROBE_SLICES)
    probe_level: int = 1
    raw_below: int = 0  # blobs shorter than this are stored without trying zstd
    small_level: int | None = None  # level for blobs up to 64 KiB (default: ``level``)

    def method(self) -> Method:
        comp = compressor(self.level, **(self.params or {}))
        small = comp if self.small_level is None else compressor(self.small_level)
        probe_comp = zstandard.ZstdCompressor(level=self.probe_level)
        whole = compression.PROBE_SIZE
        slice_size = whole // self.probe_slices

        def probe(view: memoryview) -> bool:
            step = len(view) // self.probe_slices
            for i in range(self.probe_slices):
                piece = view[i * step : i * step + slice_size]
                if len(probe_comp.compress(piece)) < self.probe_ratio * len(piece):
                    return True
            return False

        def run(view: memoryview) -> Body:
            n = len(view)
            if n < self.raw_below:
                return 0, n
            if n <= whole:
                body = len(small.compress(view))
                return (1, body) if body < compression.PROBE_RATIO * n else (0, n)
            if self.probe and not probe(view):
                return 0, n
            body = len(comp.compress(view))
            return (1, body) if body < n else (0, n)

        return run


def strategies() -> dict[str, Method]:
    """Every strategy the study compares, by name."""
    s: dict[str, Method] = {
        "current (compress_body)": lambda v: _real(v),
    }
    for level in (3, 2, 1, -1, -3):
        s[f"L{level}"] = Strategy(level=level).method()
    s["L3 no probe"] = Strategy(probe=False).method()
    s["L1 no probe"] = Strategy(level=1, probe=False).method()
    for ratio in (0.90, 0.95, 0.99):
        s[f"L3 probe<{ratio}"] = Strategy(probe_ratio=ratio).method()
    s["L3 probe 1 slice"] = Strategy(probe_slices=1).method()
    for slices in (8, 16):
        s[f"L3 probe {slices} slices"] = Strategy(probe_slices=slices).method()
    for tiny in (64, 128, 256, 512):
        s[f"L3 raw<{tiny}B"] = Strategy(raw_below=tiny).method()
    tuned: dict[str, dict[str, int]] = {
        "hlog16": {"hash_log": 16},
        "hlog16 clog14": {"hash_log": 16, "chain_log": 14},
        "hlog15 clog14": {"hash_log": 15, "chain_log": 14},
        "hlog16 clog15": {"hash_log": 16, "chain_log": 15},
        "hlog15": {"hash_log": 15},
        "hlog15 clog15": {"hash_log": 15, "chain_log": 15},
        "hlog16 clog13": {"hash_log": 16, "chain_log": 13},
        "hlog14 clog14": {"hash_log": 14, "chain_log": 14},
        "hlog16 clog15 wlog20": {"hash_log": 16, "chain_log": 15, "window_log": 20},
        "hlog17 clog14": {"hash_log": 17, "chain_log": 14},
        "wlog20": {"window_log": 20},
        "wlog18": {"window_log": 18},
        "mml6": {"min_match": 6},
        "mml6 hlog16": {"min_match": 6, "hash_log": 16},
        "mml4": {"min_match": 4},
        "clog18 hlog18 (L4 tables)": {"chain_log": 18, "hash_log": 18},
    }
    for name, params in tuned.items():
        s[f"L3 {name}"] = Strategy(params=params).method()
    s["L2 mml5"] = Strategy(level=2, params={"min_match": 5}).method()
    s["L2 dfast"] = Strategy(level=2, params={"strategy": zstandard.STRATEGY_DFAST}).method()
    for name in ("hlog16 clog15", "hlog16 clog14", "hlog15 clog14"):
        s[f"L3 {name}, probe 8 slices"] = Strategy(params=tuned[name], probe_slices=8).method()
    s["L3 (L2 up to 64K)"] = Strategy(small_level=2).method()
    s["L2 (L3 up to 64K)"] = Strategy(level=2, small_level=3).method()
    return s


def _real(view: memoryview) -> Body:
    method, body = compression.compress_body(view)
    return method, len(body)


def measure(blobs: list[Blob], run: Method) -> tuple[float, int, list[Body]]:
    """CPU seconds, payload bytes and each blob's result for one strategy."""
    cpu = 0.0
    stored = 0
    results: list[Body] = []
    clock = time.thread_time
    for view in read_blobs(blobs):
        blake3.blake3(view)  # the engine hashes a blob just before storing it: warm caches
        t0 = clock()
        result = run(view)
        cpu += clock() - t0
        stored += 1 + result[1]
        results.append(result)
    return cpu, stored, results


def measure_interleaved(
    blobs: list[Blob], methods: dict[str, Method]
) -> tuple[dict[str, float], dict[str, int], dict[str, list[Body]]]:
    """Like :func:`measure` for several strategies at once, each blob through every
    strategy in turn (in a rotating order): a change of machine load hits them all
    alike.  Each strategy's tables are colder than in :func:`measure`, as in the
    engine, where hashing, encryption and other threads run between two blobs."""
    cpu = dict.fromkeys(methods, 0.0)
    stored = dict.fromkeys(methods, 0)
    results: dict[str, list[Body]] = {name: [] for name in methods}
    clock = time.thread_time
    order = list(methods.items())
    for i, view in enumerate(read_blobs(blobs)):
        blake3.blake3(view)
        # rotate the order: running first (colder caches) falls on each strategy alike
        for name, run in order[i % len(order) :] + order[: i % len(order)]:
            t0 = clock()
            result = run(view)
            cpu[name] += clock() - t0
            stored[name] += 1 + result[1]
            results[name].append(result)
    return cpu, stored, results


BUCKETS = (64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144, 1 << 20, 1 << 30)


def size_table(blobs: list[Blob]) -> None:
    """Per size bucket: blobs, raw bytes, bytes saved by level 3 and its CPU."""
    comp = compressor(3)
    rows: dict[int, list[float]] = {b: [0, 0, 0, 0.0] for b in BUCKETS}
    clock = time.thread_time
    for view in read_blobs(blobs):
        bucket = next(b for b in BUCKETS if len(view) <= b)
        t0 = clock()
        body = len(comp.compress(view))
        row = rows[bucket]
        row[3] += clock() - t0
        row[0] += 1
        row[1] += len(view)
        row[2] += max(0, len(view) - body)
    head = ("blob size <=", "blobs", "raw MB", "saved MB", "CPU s", "us/blob")
    print("\n" + " ".join(f"{h:>{w}}" for h, w in zip(head, (12, 8, 9, 9, 7, 8), strict=True)))
    for bucket, (count, raw, saved, cpu) in rows.items():
        if count:
            print(
                f"{bucket:>12} {int(count):>8} {raw / 1e6:>9.2f} {saved / 1e6:>9.2f} "
                f"{cpu:>7.2f} {1e6 * cpu / count:>8.1f}"
            )


SIZE_CLASSES = (4096, 65536, 262144, 1 << 30)
LEVELS = (1, 2, 3, 4, 5, 6, 7)


def level_matrix(blobs: list[Blob]) -> None:
    """Stored bytes and CPU per level and blob size class, each blob at every level in
    turn (load changes hit every level alike); blobs the probe rejects are left out."""
    comps = {level: compressor(level) for level in LEVELS}
    cpu = {(c, lv): 0.0 for c in SIZE_CLASSES for lv in LEVELS}
    out = {(c, lv): 0 for c in SIZE_CLASSES for lv in LEVELS}
    raw = dict.fromkeys(SIZE_CLASSES, 0)
    clock = time.thread_time
    for view in read_blobs(blobs):
        if len(view) > compression.PROBE_SIZE and not compression.looks_compressible(view):
            continue
        size_class = next(c for c in SIZE_CLASSES if len(view) <= c)
        raw[size_class] += len(view)
        for level, comp in comps.items():
            t0 = clock()
            body = len(comp.compress(view))
            cpu[size_class, level] += clock() - t0
            out[size_class, level] += min(body, len(view))
    print("\nlevel by blob size (probed-compressible blobs only): stored MB / CPU s")
    print(f"{'size <=':>11} {'raw MB':>8} " + " ".join(f"{'L' + str(lv):>14}" for lv in LEVELS))
    for c in SIZE_CLASSES:
        cells = " ".join(f"{out[c, lv] / 1e6:>8.1f}/{cpu[c, lv]:<5.2f}" for lv in LEVELS)
        print(f"{c:>11} {raw[c] / 1e6:>8.1f} {cells}")


GROUP_BYTES = 2 << 20  # a small-file batch of the saver (file_saver.BATCH_BYTES)
GROUP_BLOBS = 64  # (file_saver.BATCH_FILES)


def grouped_table(blobs: list[Blob], min_size: int) -> None:
    """Per-blob frames (today's format) against one zstd frame per group of uncut
    small-file blobs (up to ``GROUP_BLOBS`` blobs or ``GROUP_BYTES``, in walk order,
    each unique blob once), as a format storing a small-file batch's new blobs in one
    shared frame would; cut (larger) blobs keep one frame each in both columns.
    Each level runs both ways on every group in turn (a load change hits both alike)."""
    comps = {
        level: compressor(level, **compression.TUNED_PARAMS.get(level, {})) for level in (1, 2, 3)
    }
    cpu = {(lv, way): 0.0 for lv in comps for way in ("blob", "group")}
    out = {(lv, way): 0 for lv in comps for way in ("blob", "group")}
    clock = time.thread_time
    group: list[bytes] = []

    def one(comp: zstandard.ZstdCompressor, view: bytes | memoryview) -> int:
        body = len(comp.compress(view))
        return 1 + (body if body < compression.PROBE_RATIO * len(view) else len(view))

    def close() -> None:
        if not group:
            return
        joined = b"".join(group)
        for level, comp in comps.items():
            t0 = clock()
            stored = sum(one(comp, b) for b in group)
            t1 = clock()
            grouped = one(comp, joined)
            t2 = clock()
            cpu[level, "blob"] += t1 - t0
            cpu[level, "group"] += t2 - t1
            out[level, "blob"] += stored
            out[level, "group"] += grouped
        group.clear()

    small = raw = 0
    for view in read_blobs(blobs):
        if len(view) > min_size:
            continue
        group.append(bytes(view))
        small += 1
        raw += len(view)
        if len(group) >= GROUP_BLOBS or sum(map(len, group)) >= GROUP_BYTES:
            close()
    close()
    print(f"\nuncut small blobs ({small}, {raw / 1e6:.1f} MB): one frame per blob vs per group")
    print(f"{'level':>6} {'blob MB':>9} {'blob CPU s':>11} {'group MB':>9} {'group CPU s':>12}")
    for level in comps:
        print(
            f"{'L' + str(level):>6} {out[level, 'blob'] / 1e6:>9.2f} {cpu[level, 'blob']:>11.2f} "
            f"{out[level, 'group'] / 1e6:>9.2f} {cpu[level, 'group']:>12.2f}"
        )


def probe_table(blobs: list[Blob], full: list[Body], probed: list[Body], name: str) -> None:
    """Probe verdicts of strategy ``name`` against full level-3 results."""
    fn = fp = fn_loss = fp_bytes = big = 0
    for (_, _, length), (fm, fbody), (pm, _) in zip(blobs, full, probed, strict=True):
        if length <= compression.PROBE_SIZE:
            continue
        big += 1
        pays = fm == 1 and fbody < compression.PROBE_RATIO * length
        if pm == 0 and pays:
            fn += 1
            fn_loss += length - fbody
        if pm == 1 and not pays:
            fp += 1
            fp_bytes += length
    print(
        f"\n{name}: probe on {big} blobs > 64 KiB: {fn} false negatives (stored raw, level 3 would "
        f"save {fn_loss / 1e6:.2f} MB), {fp} false positives ({fp_bytes / 1e6:.1f} MB compressed "
        "for < 3 % gain)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("share")
    parser.add_argument("--only", default="", help="strategy names separated by ;")
    parser.add_argument("--tables", action="store_true", help="also size and probe tables")
    parser.add_argument("--levels", action="store_true", help="also the level-by-size matrix")
    parser.add_argument(
        "--interleave", action="store_true", help="every strategy on each blob in turn"
    )
    parser.add_argument(
        "--grouped", action="store_true", help="also small blobs in one frame per batch"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds (strategies alternate)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    blobs = unique_blobs(args.share)
    raw = sum(n for _, _, n in blobs)
    print(f"{len(blobs)} unique blobs, {raw / 1e6:.1f} MB ({time.perf_counter() - t0:.1f} s)")
    every = strategies()
    chosen = [n.strip() for n in args.only.split(";") if n.strip()] or list(every)
    base: tuple[float, int] | None = None
    results: dict[str, list[Body]] = {}
    best: dict[str, float] = {}
    stored_by: dict[str, int] = {}
    if args.interleave:
        best, stored_by, results = measure_interleaved(blobs, {n: every[n] for n in chosen})
    for round_ in range(0 if args.interleave else args.repeat):
        for name in chosen:
            cpu, stored, per_blob = measure(blobs, every[name])
            results[name] = per_blob
            best[name] = min(cpu, best.get(name, cpu))
            stored_by[name] = stored
            print(f"  round {round_ + 1} {name}: {cpu:.2f} CPU s", flush=True)
    print(f"{'strategy':<32} {'CPU s':>7} {'stored MB':>10} {'CPU x':>6} {'stored x':>9}")
    for name in chosen:
        cpu, stored = best[name], stored_by[name]
        base = base or (cpu, stored)
        print(
            f"{name:<32} {cpu:>7.2f} {stored / 1e6:>10.2f} {cpu / base[0]:>6.2f} "
            f"{stored / base[1]:>9.4f}"
        )
    if args.levels:
        level_matrix(blobs)
    if args.grouped:
        grouped_table(blobs, ChunkerParams().min_size)
    if args.tables:
        size_table(blobs)
        full = results.get("L3 no probe") or measure(blobs, every["L3 no probe"])[2]
        for name in ("L3", "current (compress_body)"):
            probed = results.get(name) or measure(blobs, every[name])[2]
            probe_table(blobs, full, probed, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
