"""SMB source throughput against the local path source, on the same data, same run.

Run: ``python -m bench.sources.bench_smb [FOLDER] [--mb 80] [--workers 4] [--json]``

Copies up to ``--mb`` MB of FOLDER (default: the bench workload share when
built, else ``/usr/share/doc``) into a share of a real Samba ``smbd`` started on
loopback (the tests' launcher, ``tests/sources/smb_server.py``; needs root and
the ``samba`` package), then backs up the same folder once as a local path
(``LocalSource``) and once over SMB (``SmbSource``: one session, the saver
workers reading files concurrently) into two fresh local repositories with
``run_backup`` — the way a proxy runs a task — and prints, per source: first
backup, unchanged re-run (listing + change detection only) and restore (to a
folder for the local source, into a second SMB share for SMB), in seconds and
MB/s, with SMB ÷ local ratios. Client and server share the machine's cores:
smbd's CPU time is inside the SMB figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.sources.bench_s3 import print_table, repo_at, sample, timed
from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions
from ferryman.engine.restore import run_restore
from ferryman.sources.local import LocalSource
from ferryman.sources.smb import SmbSource
from ferryman.sources.smb_target import SmbRestoreTarget

HERE = Path(__file__).resolve().parent.parent


def _default_folder() -> Path:
    share = HERE / "work" / "workload-small" / "share"
    return share if share.is_dir() else Path("/usr/share/doc")


def _launcher() -> ModuleType:
    path = HERE.parent / "tests" / "sources" / "smb_server.py"
    sys.path.insert(0, str(path.parent.parent))  # it imports loopback_ports as the tests do
    spec = importlib.util.spec_from_file_location("ferryman_bench_smb_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=_default_folder())
    parser.add_argument("--mb", type=int, default=80, help="data set size in MB (10^6)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    launcher = _launcher()
    work = Path(tempfile.mkdtemp(prefix="ferryman-bench-smb-"))
    try:
        with launcher.run_samba(["data", "restored"]) as samba:
            data = samba.shares["data"]
            files, size = sample(args.folder, data, args.mb * 1_000_000)
            options = BackupOptions(share="bench", workers=args.workers)
            results: dict[str, dict[str, Any]] = {}
            local_repo = repo_at(work / "repo-local")
            smb_repo = repo_at(work / "repo-smb")
            try:
                local = LocalSource(data)
                smb = SmbSource(samba.url("data"), samba.password)
                for name, source, repo in (("local", local, local_repo), ("smb", smb, smb_repo)):
                    first_s, first = timed(lambda: run_backup(source, repo, options))  # noqa: B023
                    rerun_s, rerun = timed(lambda: run_backup(source, repo, options))  # noqa: B023
                    assert rerun.stats.files_read == 0, f"{name}: unchanged re-run read files"
                    point = first.restore_point
                    assert point is not None
                    target: Any = work / "out"
                    if name == "smb":
                        target = SmbRestoreTarget(samba.url("restored"), samba.password)
                    restore_s, _ = timed(lambda: run_restore(repo, point, target))  # noqa: B023
                    if name == "smb":
                        target.close()
                    results[name] = {
                        "files": first.stats.files_scanned,
                        "bytes": first.stats.bytes_scanned,
                        "backup_s": round(first_s, 3),
                        "rerun_s": round(rerun_s, 3),
                        "restore_s": round(restore_s, 3),
                    }
            finally:
                local_repo.close()
                smb_repo.close()
    except launcher.SambaUnavailable as exc:
        raise SystemExit(f"SMB benchmark skipped: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps({"files": files, "bytes": size, "results": results}, indent=2))
        return
    print(
        f"data: {files} files, {size / 1e6:.1f} MB from {args.folder}; SMB server: smbd on loopback"
    )
    print_table(results, size, "smb")


if __name__ == "__main__":
    main()
