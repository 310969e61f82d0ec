"""Compare a restored tree with its source: names, types, sizes, symlink targets, bytes."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

_BLOCK = 1024 * 1024


@dataclass
class TreeDifference:
    """What differs between two trees (empty lists: identical)."""

    missing: list[str] = field(default_factory=list)  # in source, not restored
    extra: list[str] = field(default_factory=list)  # restored, not in source
    different: list[str] = field(default_factory=list)  # type, size, target or bytes
    compared_files: int = 0
    compared_bytes: int = 0

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def summary(self, limit: int = 5) -> str:
        if self.identical:
            return f"identical ({self.compared_files} files, {self.compared_bytes / 1e6:.0f} MB)"
        parts = []
        for label, items in (
            ("missing", self.missing),
            ("extra", self.extra),
            ("different", self.different),
        ):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:limit])})")
        return "; ".join(parts)


def _entries(root: Path) -> dict[str, os.stat_result]:
    found: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            found[os.path.normpath(os.path.join(rel_dir, name))] = os.lstat(path)
    return found


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            block_a = fa.read(_BLOCK)
            if block_a != fb.read(_BLOCK):
                return False
            if not block_a:
                return True


def compare_trees(source: Path, restored: Path, *, content: bool = True) -> TreeDifference:
    """Compare ``restored`` against ``source``; ``content=False`` skips reading bytes."""
    src, dst = _entries(source), _entries(restored)
    diff = TreeDifference(
        missing=sorted(set(src) - set(dst)),
        extra=sorted(set(dst) - set(src)),
    )
    for rel in sorted(set(src) & set(dst)):
        a, b = src[rel], dst[rel]
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            diff.different.append(rel)
        elif stat.S_ISLNK(a.st_mode):
            if os.readlink(source / rel) != os.readlink(restored / rel):
                diff.different.append(rel)
        elif stat.S_ISREG(a.st_mode):
            diff.compared_files += 1
            diff.compared_bytes += a.st_size
            if a.st_size != b.st_size or (
                content and not _same_bytes(source / rel, restored / rel)
            ):
                diff.different.append(rel)
    return diff
