"""The standard "daily change" of QUALITY.md, applied to a copy of the share.

Append to 1% of the small files, delete 100, add 200, append 8 MiB to the VM
image, rename one directory. Every choice comes from a seeded generator over
the sorted listing, so applying it to two identical copies leaves them
identical again (contents and names; modification times are "now").
"""

from __future__ import annotations

import os
import random
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.synthetic import MiB, TextMaker, image_blocks, write_blocks
from bench.workload import IMAGE_PATH, SEED

SMALL_FILE_LIMIT = 1 * MiB


@dataclass(frozen=True)
class DailyChange:
    """How much to change; the defaults are the standard daily change."""

    append_fraction: float = 0.01
    delete_count: int = 100
    add_count: int = 200
    image_append_bytes: int = 8 * MiB
    rename_dirs: int = 1
    seed: int = SEED + 100


@dataclass
class ChangeReport:
    """What a daily change did."""

    appended: list[str] = field(default_factory=list)
    appended_bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    added_bytes: int = 0
    image_appended_bytes: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "appended_files": len(self.appended),
            "appended_bytes": self.appended_bytes,
            "deleted_files": len(self.deleted),
            "added_files": len(self.added),
            "added_bytes": self.added_bytes,
            "image_appended_bytes": self.image_appended_bytes,
            "renamed": self.renamed,
        }

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _listing(share: Path) -> tuple[list[str], list[str]]:
    """Sorted small regular files and directories of ``share`` (relative, POSIX)."""
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(share):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, share)
        if rel_dir != ".":
            dirs.append(rel_dir)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size < SMALL_FILE_LIMIT:
                files.append(os.path.normpath(os.path.join(rel_dir, name)))
    return files, dirs


def _rename_candidates(dirs: list[str], files: list[str]) -> list[str]:
    """Directories two or more levels deep holding a modest subtree (5 to 500 files)."""
    counts = dict.fromkeys(dirs, 0)
    for f in files:
        parent = os.path.dirname(f)
        while parent:
            if parent in counts:
                counts[parent] += 1
            parent = os.path.dirname(parent)
    good = [d for d in dirs if d.count("/") >= 1 and 5 <= counts[d] <= 500]
    return good or [d for d in dirs if not d.startswith("images")] or dirs


def apply_daily_change(share: Path, change: DailyChange | None = None) -> ChangeReport:
    """Apply the daily change to ``share`` in place; returns what was done."""
    change = change or DailyChange()
    rng = random.Random(change.seed)
    text = TextMaker(change.seed + 1)
    report = ChangeReport()
    files, dirs = _listing(share)
    dirs_for_new = [d for d in dirs if not d.startswith("images")] or ["."]

    n_append = max(1, round(change.append_fraction * len(files))) if files else 0
    n_delete = min(change.delete_count, max(0, len(files) - n_append))
    picked = rng.sample(files, n_append + n_delete)
    renames = rng.sample(
        _rename_candidates(dirs, files), min(change.rename_dirs, len(dirs_for_new))
    )
    new_dirs = [rng.choice(dirs_for_new) for _ in range(change.add_count)]

    for rel in picked[:n_append]:
        data = text.text(rng.randint(64, 4096))
        with open(share / rel, "ab") as f:
            f.write(data)
        report.appended.append(rel)
        report.appended_bytes += len(data)

    for rel in picked[n_append:]:
        os.unlink(share / rel)
        report.deleted.append(rel)

    for i, rel_dir in enumerate(new_dirs):
        rel = os.path.normpath(os.path.join(rel_dir, f"bench-added-{i:04d}.txt"))
        data = text.text(rng.randint(1, 64 * 1024))
        (share / rel).write_bytes(data)
        report.added.append(rel)
        report.added_bytes += len(data)

    image = share / IMAGE_PATH
    if change.image_append_bytes and image.exists():
        blocks = image_blocks(change.image_append_bytes, change.seed + 2)
        report.image_appended_bytes = write_blocks(image, blocks, append=True)

    # rename last, so the paths chosen above stay valid; deepest first for nesting
    for rel in sorted(renames, key=lambda d: -d.count("/")):
        new = rel + ".renamed"
        os.rename(share / rel, share / new)
        report.renamed.append((rel, new))
    return report
