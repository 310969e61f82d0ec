"""S3 source throughput against the local path source, on the same data, same run.

Run: ``python -m bench.sources.bench_s3 [FOLDER] [--mb 80] [--workers 4] [--json]``

Copies up to ``--mb`` MB of FOLDER (default: the bench workload share when
built, else ``/usr/share/doc``) into a bucket of a moto S3 server started on
loopback, then backs up the folder (``LocalSource``) and the bucket
(``S3Source``) into two fresh local repositories with ``run_backup`` — the way a
proxy runs a task — and prints, per source: first backup, unchanged re-run
(listing + change detection only) and restore (to a folder for the local
source, into a second bucket for S3), in seconds and MB/s, with S3 ÷ local
ratios. The S3 server is moto (a Python server, single process): the S3 figures
include its own cost and are a floor for what a real object store gives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3

from bench.tools.ferryman import free_port
from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository, open_backend
from ferryman.sources.local import LocalSource
from ferryman.sources.s3 import S3Source
from ferryman.sources.s3_restore import restore_to_bucket

HERE = Path(__file__).resolve().parent.parent
KEYS = {"access_key": "bench", "secret_key": "bench"}


def _default_folder() -> Path:
    share = HERE / "work" / "workload-small" / "share"
    return share if share.is_dir() else Path("/usr/share/doc")


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, env=env
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"moto did not start: {log.read_text()[-500:]}") from None
            time.sleep(0.2)


def sample(folder: Path, dest: Path, limit: int) -> tuple[int, int]:
    """Copy regular files of ``folder`` (sorted walk) into ``dest`` until ``limit`` bytes."""
    files = size = 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            src = Path(root) / name
            if src.is_symlink() or not src.is_file():
                continue
            target = dest / src.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, target)
            except OSError:
                continue
            files += 1
            size += target.stat().st_size
            if size >= limit:
                return files, size
    return files, size


def upload(client: Any, bucket: str, folder: Path) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            client.upload_file(str(path), bucket, str(path.relative_to(folder)))


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def repo_at(path: Path) -> Repository:
    return Repository.init(
        open_backend(str(path)), "bench", scrypt_n=1 << 10, cache_dir=path.with_suffix(".cache")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=_default_folder())
    parser.add_argument("--mb", type=int, default=80, help="data set size in MB (10^6)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ferryman-bench-s3-"))
    proc, endpoint = start_moto(work / "moto.log")
    try:
        data = work / "data"
        files, size = sample(args.folder, data, args.mb * 1_000_000)
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="bench", aws_secret_access_key="bench",
        )  # fmt: skip
        for bucket in ("data", "restored"):
            client.create_bucket(Bucket=bucket)
        upload(client, "data", data)
        options = BackupOptions(share="bench", workers=args.workers)
        results: dict[str, dict[str, float]] = {}

        local_repo = repo_at(work / "repo-local")
        s3_repo = repo_at(work / "repo-s3")
        try:
            local = LocalSource(data)
            s3 = S3Source.from_url(f"s3://data?endpoint={endpoint}", **KEYS)
            for name, source, repo in (("local", local, local_repo), ("s3", s3, s3_repo)):
                first_s, first = timed(lambda: run_backup(source, repo, options))  # noqa: B023
                rerun_s, rerun = timed(lambda: run_backup(source, repo, options))  # noqa: B023
                assert rerun.stats.files_read == 0, f"{name}: unchanged re-run read files"
                point = first.restore_point
                assert point is not None
                if name == "local":
                    restore_s, _ = timed(lambda: run_restore(local_repo, point, work / "out"))  # noqa: B023
                else:
                    target = S3Source.from_url(f"s3://restored?endpoint={endpoint}", **KEYS)
                    restore_s, _ = timed(lambda: restore_to_bucket(s3_repo, point, target))  # noqa: B023
                results[name] = {
                    "files": first.stats.files_scanned,
                    "bytes": first.stats.bytes_scanned,
                    "backup_s": round(first_s, 3),
                    "rerun_s": round(rerun_s, 3),
                    "restore_s": round(restore_s, 3),
                }
        finally:
            local_repo.close()
            s3_repo.close()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps({"files": files, "bytes": size, "results": results}, indent=2))
        return
    print(
        f"data: {files} files, {size / 1e6:.1f} MB from {args.folder}; S3 server: moto on loopback"
    )
    print_table(results, size, "s3")


def print_table(results: dict[str, dict[str, Any]], size: int, other: str) -> None:
    """Per step: seconds and MB/s of the local source and of `other`, and their time ratio."""
    ratio = f"{other}/local time"
    width = len(ratio) + 2
    print(f"{'step':<12}{'local s':>10}{'MB/s':>9}{other + ' s':>10}{'MB/s':>9}{ratio:>{width}}")
    for step in ("backup", "rerun", "restore"):
        lt, st = results["local"][f"{step}_s"], results[other][f"{step}_s"]
        print(
            f"{step:<12}{lt:>10.2f}{size / 1e6 / lt:>9.1f}{st:>10.2f}{size / 1e6 / st:>9.1f}"
            f"{st / lt:>{width}.2f}"
        )


if __name__ == "__main__":
    main()
