"""End to end through the CLI: an S3 bucket share and a btrfs share read through snapshots,
backed up by the server's proxy and restored (in place into the bucket, to another
bucket, to a folder)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from .installation import Installation, new_installation
from .test_end_to_end import tree

pytestmark = pytest.mark.timeout(300)

KEYS = {"FM_TEST_S3_KEY": "test", "FM_TEST_S3_SECRET": "test"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = new_installation(tmp_path_factory.mktemp("cli-sources"))
    try:
        installation.start()
        yield installation
    finally:
        installation.stop()


def run_ok(server: Installation, *args: str) -> str:
    done = server.ferryman(*args, env=KEYS)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}\n{server.server_log()}"
    return done.stdout


def backup_task(server: Installation, job: str) -> dict[str, Any]:
    sessions = server.json("session", "list", "--job", job, "--kind", "backup")
    shown = json.loads(server.ok("session", "show", str(sessions[-1]["id"]), "--json"))
    tasks: list[dict[str, Any]] = shown["tasks"]
    return tasks[-1]


def test_s3_share_backup_and_restores(server: Installation, s3_endpoint: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    s3.create_bucket(Bucket="e2e-media")
    s3.create_bucket(Bucket="e2e-copy")
    objects = {f"photos/{i:02}.jpg": os.urandom(20_000 + i) for i in range(12)}
    objects["photos/index.html"] = b"<html>"
    for key, data in objects.items():
        s3.put_object(Bucket="e2e-media", Key=key, Body=data, ContentType="image/jpeg")
    url = f"s3://e2e-media/photos?endpoint={s3_endpoint}"
    keys = ["--access-key-env", "FM_TEST_S3_KEY", "--secret-key-env", "FM_TEST_S3_SECRET"]
    run_ok(server, "share", "add", "media", url, *keys)
    server.ok("job", "add", "media-job", "--share", "media", "--repo", "default")
    assert "ended SUCCESS" in server.ok("job", "run", "media-job", "--follow")
    point = server.json("point", "list")[-1]
    assert point["share"] == "media" and point["files"] == len(objects)
    # second run: nothing changed, nothing read
    assert "ended SUCCESS" in server.ok("job", "run", "media-job", "--follow")
    stats = backup_task(server, "media-job")["stats"]
    assert stats["files_read"] == 0 and stats["files_unchanged"] == len(objects)

    s3.delete_object(Bucket="e2e-media", Key="photos/03.jpg")
    s3.put_object(Bucket="e2e-media", Key="photos/04.jpg", Body=b"overwritten")
    assert "ended SUCCESS" in server.ok("restore", str(point["id"]), "--in-place", "--follow")
    for key, data in objects.items():
        assert s3.get_object(Bucket="e2e-media", Key=key)["Body"].read() == data
    assert s3.head_object(Bucket="e2e-media", Key="photos/03.jpg")["ContentType"] == "image/jpeg"

    copy = f"s3://e2e-copy/restored?endpoint={s3_endpoint}"
    done = server.ferryman("restore", str(point["id"]), "--to", copy, "--follow")
    assert "ended SUCCESS" in done.stdout, done.stdout + done.stderr
    listed = s3.list_objects_v2(Bucket="e2e-copy")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(
        "restored/" + k.removeprefix("photos/") for k in objects
    )


def test_btrfs_share_is_read_through_a_snapshot(server: Installation, btrfs_mount: Path) -> None:
    share = btrfs_mount / "e2e-vol"
    subprocess.run(["btrfs", "subvolume", "create", str(share)], check=True, capture_output=True)
    (share / "dir").mkdir()
    for i in range(20):
        (share / "dir" / f"f{i}").write_bytes(os.urandom(10_000))
    server.ok("share", "add", "vol", str(share), "--snapshot", "btrfs")
    assert server.json("share", "list")[-1]["snapshot"] == {"provider": "btrfs", "dir": None}
    server.ok("job", "add", "vol-job", "--share", "vol", "--repo", "default")
    assert "ended SUCCESS" in server.ok("job", "run", "vol-job", "--follow")
    task = backup_task(server, "vol-job")
    snap = task["stats"]["snapshot"]
    assert snap["provider"] == "btrfs" and snap["removed"] is True
    assert snap["path"].startswith(str(btrfs_mount / ".ferryman-snapshots" / "ferryman-s"))
    assert not [n for n in os.listdir(btrfs_mount / ".ferryman-snapshots") if "ferryman-" in n]
    sessions = server.json("session", "list", "--job", "vol-job", "--kind", "backup")
    report = server.ok("session", "show", str(sessions[-1]["id"]))
    assert f"snapshot:        btrfs {snap['path']} (removed)" in report

    (share / "dir" / "f3").write_bytes(b"changed")
    assert "ended SUCCESS" in server.ok("job", "run", "vol-job", "--follow")
    stats = backup_task(server, "vol-job")["stats"]
    assert stats["files_read"] == 1 and stats["files_unchanged"] == 19
    point = server.json("point", "list")[-1]
    target = server.work / "vol-restored"
    assert "ended SUCCESS" in server.ok(
        "restore", str(point["id"]), "--to", str(target), "--follow"
    )
    assert tree(target) == tree(share)


def test_bad_snapshot_and_s3_options_are_one_line(server: Installation) -> None:
    for args, words in [
        (["share", "add", "x", "/tmp", "--snapshot", "lvm"], "unknown snapshot provider 'lvm'"),
        (["share", "add", "x", "/tmp", "--snapshot", "command"], "needs --snapshot-create"),
        (["share", "add", "x", "s3://b", "--access-key-env", "K"], "go together"),
        (["share", "add", "x", "/tmp", "--access-key-env", "K", "--secret-key-env", "S"],
         "only apply to s3:// shares"),
    ]:  # fmt: skip
        done = server.ferryman(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and words in lines[0], done.stderr
