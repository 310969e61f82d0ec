"""The reference workload of QUALITY.md, built into a folder.

A "file share" of real content nobody in the project wrote — a copy of
``/usr/share`` and of the Python standard library as installed — plus two big
files: one like a VM image and one of seeded random bytes. The real content is
trimmed deterministically (a stable hash of each relative path decides) when it
is much bigger than the target; when it is smaller, the actual size is reported.

    python -m bench.workload DEST [--small]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.synthetic import MiB, image_blocks, random_blocks, write_blocks

SEED = 20261124
IMAGE_PATH = "images/vm-disk.img"
RANDOM_PATH = "images/random.bin"


@dataclass(frozen=True)
class WorkloadSpec:
    """What to build: targets and where the real content comes from."""

    name: str
    target_bytes: int
    target_files: int
    big_file_size: int
    sources: tuple[tuple[str, str], ...]  # (folder name in the share, source path)
    seed: int = SEED


def _stdlib() -> str:
    return sysconfig.get_paths()["stdlib"]


def reference_spec() -> WorkloadSpec:
    """≈ 2 GB, ≈ 100,000 files, two 256 MiB files."""
    return WorkloadSpec(
        "reference",
        2_000_000_000,
        100_000,
        256 * MiB,
        (("usr-share", "/usr/share"), ("python-stdlib", _stdlib())),
    )


def small_spec() -> WorkloadSpec:
    """≈ 200 MB, ≈ 10,000 files, two 32 MiB files: for quick runs."""
    return WorkloadSpec(
        "small",
        200_000_000,
        10_000,
        32 * MiB,
        (("usr-share", "/usr/share"), ("python-stdlib", _stdlib())),
    )


@dataclass
class TreeStats:
    """What a folder holds."""

    bytes: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0

    @staticmethod
    def of(root: Path) -> TreeStats:
        stats = TreeStats()
        for dirpath, dirnames, filenames in os.walk(root):
            stats.dirs += len(dirnames)
            for name in dirnames:  # os.walk does not descend into symlinked dirs
                if os.path.islink(os.path.join(dirpath, name)):
                    stats.symlinks += 1
                    stats.dirs -= 1
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISLNK(st.st_mode):
                    stats.symlinks += 1
                elif stat.S_ISREG(st.st_mode):
                    stats.files += 1
                    stats.bytes += st.st_size
        return stats


@dataclass
class Workload:
    """A built workload: ``share`` is the folder every tool backs up."""

    root: Path
    spec: WorkloadSpec
    stats: TreeStats
    keep: KeepFractions
    build_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def share(self) -> Path:
        return self.root / "share"

    def to_json(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "spec": asdict(self.spec),
            "stats": asdict(self.stats),
            "keep": asdict(self.keep),
            "build_seconds": self.build_seconds,
            "notes": self.notes,
        }


def _stable_fraction(relpath: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{relpath}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


SMALL_FILE = 256 * 1024
_SKIP_DIRS = {"site-packages", "dist-packages"}  # third-party code, not the stdlib


@dataclass(frozen=True)
class KeepFractions:
    """How much of the real content was kept: small (< 256 KiB) and large files."""

    small: float = 1.0
    large: float = 1.0


def _walk_sorted(source: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        yield dirpath, dirnames, sorted([*filenames, *links])


def _select(spec: WorkloadSpec) -> tuple[set[str], KeepFractions, int, int]:
    """Which real-content entries to copy ("folder/rel/path"), deterministically.

    Small files and symlinks are kept when a stable hash of their path falls
    under the fraction that meets the file-count target; large files are taken
    in hash order while they fit the byte budget left. Everything is kept when
    the content is not much bigger than the targets.
    """
    small: list[tuple[float, str, int]] = []
    large: list[tuple[float, str, int]] = []
    for folder, source in spec.sources:
        for dirpath, _dirs, names in _walk_sorted(Path(source)):
            rel_dir = os.path.relpath(dirpath, source)
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue  # sockets, FIFOs, devices: not part of the workload
                key = os.path.normpath(os.path.join(folder, rel_dir, name))
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                entry = (_stable_fraction(key, spec.seed), key, size)
                (large if size >= SMALL_FILE else small).append(entry)
    total_bytes = sum(e[2] for e in small) + sum(e[2] for e in large)
    total_files = len(small) + len(large)
    want_bytes = spec.target_bytes - 2 * spec.big_file_size
    want_files = spec.target_files - 2
    if total_bytes <= 1.1 * want_bytes and total_files <= 1.1 * want_files:
        return {e[1] for e in small + large}, KeepFractions(), total_bytes, total_files
    small_fraction = min(1.0, max(0.0, (want_files - len(large) * 0.5) / max(len(small), 1)))
    chosen = {key for h, key, _ in small if h < small_fraction}
    budget = want_bytes - sum(size for h, _, size in small if h < small_fraction)
    taken = 0
    for _, key, size in sorted(large):
        if size <= budget:
            chosen.add(key)
            budget -= size
            taken += 1
    large_fraction = taken / max(len(large), 1)
    return chosen, KeepFractions(small_fraction, large_fraction), total_bytes, total_files


def _copy_selected(source: Path, folder: str, dest: Path, chosen: set[str]) -> None:
    """Copy the chosen regular files and symlinks of ``source`` into ``dest``."""
    for dirpath, _dirnames, names in _walk_sorted(source):
        rel_dir = os.path.relpath(dirpath, source)
        target_dir = dest / rel_dir
        made = target_dir.exists()
        for name in names:
            if os.path.normpath(os.path.join(folder, rel_dir, name)) not in chosen:
                continue
            src = Path(dirpath, name)
            if not made:
                target_dir.mkdir(parents=True, exist_ok=True)
                made = True
            if src.is_symlink():
                os.symlink(os.readlink(src), target_dir / name)
            else:
                try:
                    shutil.copy2(src, target_dir / name)
                except PermissionError:
                    continue  # unreadable for this user: leave it out


def build_workload(dest: Path, spec: WorkloadSpec, *, force: bool = False) -> Workload:
    """Build (or reuse, if already built with the same spec) the workload in ``dest``."""
    manifest = dest / "manifest.json"
    if manifest.exists() and not force:
        data = json.loads(manifest.read_text())
        if data.get("spec") == json.loads(json.dumps(asdict(spec))):
            return Workload(
                dest,
                spec,
                TreeStats(**data["stats"]),
                KeepFractions(**data["keep"]),
                data["build_seconds"],
                data["notes"],
            )
    if dest.exists():
        shutil.rmtree(dest)
    started = time.perf_counter()
    share = dest / "share"
    share.mkdir(parents=True)
    chosen, keep, total_bytes, total_files = _select(spec)
    for folder, source in spec.sources:
        _copy_selected(Path(source), folder, share / folder, chosen)
    (share / "images").mkdir()
    write_blocks(share / IMAGE_PATH, image_blocks(spec.big_file_size, spec.seed + 1))
    write_blocks(share / RANDOM_PATH, random_blocks(spec.big_file_size, spec.seed + 2))
    stats = TreeStats.of(share)
    notes = [
        f"real content available: {total_bytes / 1e6:.0f} MB in {total_files} files; "
        f"kept fractions: small files {keep.small:.3f}, large files {keep.large:.3f}",
    ]
    if stats.bytes < 0.8 * spec.target_bytes or stats.files < 0.8 * spec.target_files:
        notes.append(
            f"smaller than the target ({spec.target_bytes / 1e6:.0f} MB, "
            f"{spec.target_files} files): this machine's /usr/share and stdlib hold less;"
            " figures are for the actual size"
        )
    workload = Workload(dest, spec, stats, keep, time.perf_counter() - started, notes)
    manifest.write_text(json.dumps(workload.to_json(), indent=2))
    return workload


def copy_share(workload: Workload, dest: Path) -> Path:
    """An identical copy of the share (``cp -a``: modes, times and symlinks kept)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(workload.share), str(dest)], check=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--small", action="store_true", help="~200 MB, ~10k files")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    spec = small_spec() if args.small else reference_spec()
    workload = build_workload(args.dest, spec, force=args.force)
    json.dump(workload.to_json(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
