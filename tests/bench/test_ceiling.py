"""The ceiling bench on a small generated tree: its restores are the tree, its figures add up."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from bench.engine.bench_engine import digest_tree
from bench.sections import _modules

ROOT = Path(__file__).resolve().parents[2]


def _make_tree(root: Path) -> None:
    rng = random.Random(7)
    for d in range(4):
        sub = root / f"dir{d}" / "inner"
        sub.mkdir(parents=True)
        for i in range(25):
            words = " ".join(f"word{rng.randrange(500)}" for _ in range(rng.randrange(1, 3000)))
            (sub / f"text{i}.txt").write_text(words)
        (sub / "same.txt").write_text("the same content in every folder\n" * 100)
        (sub / "same-again.txt").write_text("the same content in every folder\n" * 100)
    (root / "empty").write_bytes(b"")
    # above the small-file limit (4 MiB): read and cut as a large file; half random
    (root / "large.img").write_bytes(rng.randbytes(3 << 20) + b"text line\n" * (300 << 10))


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bench.engine.bench_ceiling", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ceiling_restores_the_tree_and_reports_consistent_figures(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _make_tree(tree)
    files = [p for p in tree.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    out = tmp_path / "out.json"
    ext4, shm = tmp_path / "ext4", tmp_path / "shm"
    proc = _run(
        tmp_path, str(tree), "--repeat", "2", "--levels", "0,1,3", "--ext4-dir", str(ext4),
        "--tmpfs-dir", str(shm), "--json", str(out), "--keep", "--settle", "0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["files"] == len(files) == 110 and abs(doc["mb"] - total / 1e6) < 1e-9
    rows = {r["name"]: r for r in doc["rows"]}
    assert set(rows) == {
        "backup L0, 1 thread (stages timed)",
        "backup L1, 1 thread (stages timed)",
        "backup L3, 1 thread (stages timed)",
        "backup L3, 2 threads",
        "backup L3, 2 processes",
        "backup L0, 2 threads",
        "backup L1, 2 threads",
        *(f"{k} {fs}, 2 {m}" for k in ("restore", "bare") for fs in ("tmpfs", "ext4")
          for m in ("threads", "processes")),
    }  # fmt: skip
    for r in rows.values():
        assert r["files"] == len(files) and abs(r["mb"] - total / 1e6) < 1e-9, r["name"]
        assert len(r["walls"]) == 2 and min(r["walls"]) <= r["wall_s"] <= max(r["walls"])
        assert r["cpu_s"] > 0 and abs(r["mb_s"] * r["wall_s"] - r["mb"]) < 1e-6
        assert abs(r["wall_over_budget"] * r["budget_s"] - r["wall_s"]) < 1e-9
        assert r["name"] in proc.stdout
    # repeated files are stored once (in one batch or not); random data raw, text shrinks
    l0, l1, l3 = (rows[f"backup L{lv}, 2 threads"]["stored_mb"] for lv in (0, 1, 3))
    assert 3 * 2**20 / 1e6 < l3 < 0.7 * total / 1e6
    assert l3 < l1 < l0 < total / 1e6 + 0.01  # level 0: stored raw (+29 bytes a blob)
    assert abs(doc["record_mb"] - rows["backup L3, 1 thread (stages timed)"]["stored_mb"]) < 1e-9
    assert list(doc["stages"]) == ["L0", "L1", "L3"]
    for level, stages in doc["stages"].items():
        assert list(stages) == ["read", "cut", "hash", "compress", "encrypt"]
        assert all(s > 0 for s in stages.values())
        staged = rows[f"backup {level}, 1 thread (stages timed)"]
        assert sum(stages.values()) <= max(staged["walls"])
    # every restore wrote the tree itself, every bare creation its files' sizes in zeros
    source = digest_tree(tree)
    restored = sorted(shm.glob("ferryman-ceiling-*/t*")) + sorted(ext4.glob("runs-*/t*"))
    assert len(restored) == 2 * 2 * 2 * 2  # (restore, bare) x (threads, processes) x fs x rounds
    same = [t for t in restored if digest_tree(t) == source]
    assert len(same) == 8
    for t in set(restored) - set(same):
        for p in t.rglob("*"):
            if p.is_file():
                rel = p.relative_to(t)
                assert p.stat().st_size == source[str(rel)][0]
                assert p.read_bytes().count(0) == p.stat().st_size
                assert p.stat().st_mtime_ns == (tree / rel).stat().st_mtime_ns


def test_ceiling_refuses_a_missing_folder_and_bad_levels(tmp_path: Path) -> None:
    missing = _run(tmp_path, str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"bench_ceiling: {tmp_path / 'nothing'} is not a folder"
    ]
    bad = _run(tmp_path, str(tmp_path), "--levels", "1,x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--levels" in bad.stderr


def test_ceiling_is_a_standalone_command_not_a_section() -> None:
    modules = _modules(ROOT / "bench" / "engine")
    assert "bench.engine.bench_engine" in modules
    assert "bench.engine.bench_ceiling" not in modules
    assert "bench.engine._ceiling_paths" not in modules
