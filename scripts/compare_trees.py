"""Compare two folder trees byte for byte: content, file types, symlink targets, modes.

Used by `make demo` to verify a restore. Exits 0 when equal, 1 with a list of
differences otherwise.
"""

from __future__ import annotations

import filecmp
import os
import stat
import sys


def compare(source: str, restored: str) -> tuple[int, int, list[str]]:
    """Return (files compared, bytes compared, differences)."""
    differences: list[str] = []
    files = 0
    total = 0
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        other_dir = os.path.normpath(os.path.join(restored, rel))
        if not os.path.isdir(other_dir):
            differences.append(f"missing folder: {rel}")
            dirnames[:] = []
            continue
        expected = set(dirnames) | set(filenames)
        present = set(os.listdir(other_dir))
        extra = sorted(present - expected)
        differences.extend(f"extra entry: {os.path.join(rel, n)}" for n in extra)
        for name in dirnames + filenames:
            a = os.path.join(dirpath, name)
            b = os.path.join(other_dir, name)
            shown = os.path.normpath(os.path.join(rel, name))
            try:
                sa, sb = os.lstat(a), os.lstat(b)
            except FileNotFoundError:
                differences.append(f"missing: {shown}")
                continue
            if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
                differences.append(f"type differs: {shown}")
            elif stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
                differences.append(f"mode differs: {shown}")
            elif stat.S_ISLNK(sa.st_mode):
                if os.readlink(a) != os.readlink(b):
                    differences.append(f"symlink target differs: {shown}")
            elif stat.S_ISREG(sa.st_mode):
                files += 1
                total += sa.st_size
                if not filecmp.cmp(a, b, shallow=False):
                    differences.append(f"content differs: {shown}")
                elif sa.st_mtime_ns != sb.st_mtime_ns:
                    differences.append(f"mtime differs: {shown}")
    return files, total, differences


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: compare_trees.py SOURCE RESTORED", file=sys.stderr)
        return 2
    files, total, differences = compare(sys.argv[1], sys.argv[2])
    if differences:
        print(f"restore differs from the source in {len(differences)} place(s):")
        for line in differences[:50]:
            print(f"  {line}")
        return 1
    print(f"identical: {files} files, {total / 1e6:.1f} MB compared byte for byte")
    return 0


if __name__ == "__main__":
    sys.exit(main())
