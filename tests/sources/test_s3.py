"""The S3 object source against a real S3-protocol server (moto, HTTP on loopback).

Backup of a prefix with odd keys, metadata, tags and a multipart-sized object;
incremental runs by ETag/size/Last-Modified; restore to the original bucket, to
another bucket/prefix and to a folder; bad input (missing bucket, unreachable
server, object deleted during the backup, bad URLs).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from s3_server import start_moto

from ferryman.engine.backup import BackupFailed, run_backup
from ferryman.engine.options import BackupOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import Repository
from ferryman.sources.s3 import S3Source, parse_s3_url
from ferryman.sources.s3_restore import BucketRestoreFailed, restore_to_bucket

CREDS = {"access_key": "test", "secret_key": "test"}
BIG = 17 << 20  # read through the large-file path, uploaded back in multipart parts

# key (relative to the prefix) -> (content, content type, user metadata, tags)
OBJECTS: dict[str, tuple[bytes, str, dict[str, str], dict[str, str]]] = {
    "readme.txt": (b"hello\n", "text/plain", {"owner": "ops"}, {"team": "a", "x y": "1+2=3"}),
    "docs/report.pdf": (os.urandom(3000), "application/pdf", {}, {}),
    "docs/deep/ünïcode name.json": (b'{"a": 1}', "application/json", {"k": "v"}, {}),
    "docs/": (b"", "application/x-directory", {}, {}),  # a console "folder" marker
    "odd//double": (b"double slash", "text/plain", {}, {}),
    "%percent": (b"percent", "text/plain", {}, {}),
    "docs/deep": (b"an object named like a folder", "text/plain", {}, {}),
    "empty": (b"", "binary/octet-stream", {"why": "empty"}, {"t": "1"}),
}
WITH_BIG = {**OBJECTS, "big.bin": (os.urandom(BIG), "application/octet-stream", {}, {"s": "big"})}


@pytest.fixture
def client(s3_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


_n = iter(range(1 << 30))


@pytest.fixture
def bucket(client: Any) -> str:
    name = f"src-{next(_n)}-{os.getpid()}"
    client.create_bucket(Bucket=name)
    return name


def _put(
    client: Any, bucket: str, key: str, spec: tuple[bytes, str, dict[str, str], dict[str, str]]
) -> None:
    data, ctype, meta, tags = spec
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentType=ctype,
        Metadata=meta,
        Tagging=urllib.parse.urlencode(tags),
    )


def _fill(client: Any, bucket: str, prefix: str, objects: dict[str, Any] = OBJECTS) -> None:
    for key, spec in objects.items():
        _put(client, bucket, prefix + key, spec)
    client.put_object(Bucket=bucket, Key="outside-the-prefix", Body=b"not ours")


def _dump(
    client: Any, bucket: str, prefix: str
) -> dict[str, tuple[bytes, str, dict[str, str], dict[str, str]]]:
    """Every object under ``prefix``: content, content type, metadata and tags."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            resp = client.get_object(Bucket=bucket, Key=o["Key"])
            tags = client.get_object_tagging(Bucket=bucket, Key=o["Key"])["TagSet"]
            out[o["Key"][len(prefix) :]] = (
                resp["Body"].read(),
                resp["ContentType"],
                resp["Metadata"],
                {t["Key"]: t["Value"] for t in tags},
            )
    return out


def _source(endpoint: str, bucket: str, prefix: str = "") -> S3Source:
    return S3Source.from_url(f"s3://{bucket}/{prefix}?endpoint={endpoint}", **CREDS)


def test_backup_and_restore_to_another_bucket_keeps_keys_content_metadata_tags(
    client: Any, bucket: str, s3_endpoint: str, repo: Repository
) -> None:
    _fill(client, bucket, "data/", WITH_BIG)
    result = run_backup(_source(s3_endpoint, bucket, "data"), repo, BackupOptions(share="objs"))
    assert result.status == "success", result.warnings
    assert result.stats.files_scanned == len(WITH_BIG)
    assert result.stats.bytes_scanned == sum(len(v[0]) for v in WITH_BIG.values())

    client.create_bucket(Bucket=bucket + "-copy")
    target = _source(s3_endpoint, bucket + "-copy", "restored/here")
    assert result.restore_point is not None
    restored = restore_to_bucket(repo, result.restore_point, target)
    assert restored.status == "success", restored.errors
    assert restored.stats.files_restored == len(WITH_BIG)
    assert _dump(client, bucket + "-copy", "restored/here/") == WITH_BIG

    # one subtree only, back into the original bucket after losing it
    for key in ("docs/report.pdf", "docs/deep/ünïcode name.json"):
        client.delete_object(Bucket=bucket, Key="data/" + key)
    again = restore_to_bucket(
        repo, result.restore_point, _source(s3_endpoint, bucket, "data"), paths=[b"docs"]
    )
    assert again.status == "success", again.errors
    # the docs/ marker, report.pdf, the object "docs/deep" and docs/deep/ünïcode name.json
    assert again.stats.files_restored == 4
    assert _dump(client, bucket, "data/") == WITH_BIG
    assert client.get_object(Bucket=bucket, Key="outside-the-prefix")["Body"].read() == b"not ours"


def test_restore_to_a_folder(
    client: Any, bucket: str, s3_endpoint: str, repo: Repository, tmp_path: Path
) -> None:
    _fill(client, bucket, "", WITH_BIG)
    result = run_backup(_source(s3_endpoint, bucket), repo, BackupOptions(share="objs"))
    assert result.restore_point is not None
    out = tmp_path / "out"
    restored = run_restore(repo, result.restore_point, out)
    assert restored.status == "success", restored.errors
    assert (out / "docs" / "deep" / "ünïcode name.json").read_bytes() == b'{"a": 1}'
    assert (out / "odd" / "%" / "double").read_bytes() == b"double slash"  # empty segment
    assert (out / "%%percent").read_bytes() == b"percent"
    assert (out / "docs" / "%").read_bytes() == b""  # the folder marker object "docs/"
    assert (out / "docs" / "%deep").read_bytes() == b"an object named like a folder"
    assert (out / "big.bin").stat().st_size == BIG
    assert os.getxattr(out / "readme.txt", "user.s3.content-type") == b"text/plain"
    assert os.getxattr(out / "readme.txt", "user.s3.meta.owner") == b"ops"
    assert os.getxattr(out / "readme.txt", "user.s3.key") == b"readme.txt"
    head = client.head_object(Bucket=bucket, Key="readme.txt")
    assert (out / "readme.txt").stat().st_mtime == head["LastModified"].timestamp()


def test_incremental_by_etag_size_and_last_modified(
    client: Any, bucket: str, s3_endpoint: str, repo: Repository, tmp_path: Path
) -> None:
    _fill(client, bucket, "")
    source = _source(s3_endpoint, bucket)
    first = run_backup(source, repo, BackupOptions(share="objs"))
    assert first.stats.files_read == len(OBJECTS) + 1 - 2  # the two empty objects are not read

    same = run_backup(source, repo, BackupOptions(share="objs"))
    assert same.stats.files_read == 0
    assert same.stats.files_unchanged == len(OBJECTS) + 1

    _put(client, bucket, "readme.txt", (b"changed\n", "text/markdown", {}, {}))
    client.put_object(Bucket=bucket, Key="docs/new.txt", Body=b"new")
    client.delete_object(Bucket=bucket, Key="docs/report.pdf")
    third = run_backup(source, repo, BackupOptions(share="objs"))
    assert third.stats.files_read == 2
    assert third.stats.files_unchanged == len(OBJECTS) + 1 - 2
    assert third.restore_point is not None
    client.create_bucket(Bucket=bucket + "-v3")
    restore_to_bucket(repo, third.restore_point, _source(s3_endpoint, bucket + "-v3"))
    assert _dump(client, bucket + "-v3", "") == _dump(client, bucket, "")


def test_object_deleted_during_the_backup_is_a_warning(
    client: Any, bucket: str, s3_endpoint: str, repo: Repository
) -> None:
    _fill(client, bucket, "")
    source = _source(s3_endpoint, bucket)
    real_get = source.client.get_object

    def get_after_someone_deleted_it(**kwargs: Any) -> Any:
        if kwargs["Key"] == "docs/report.pdf":  # deleted between the listing and the read
            client.delete_object(Bucket=bucket, Key="docs/report.pdf")
        return real_get(**kwargs)

    source.client.get_object = get_after_someone_deleted_it
    result = run_backup(source, repo, BackupOptions(share="objs"))
    assert result.status == "warning"
    assert [(w.path, w.reason) for w in result.warnings] == [
        ("docs/report.pdf", "vanished before it could be read")
    ]
    assert result.stats.files_scanned == len(OBJECTS) + 1


def test_unreachable_bucket_or_server_fails_clearly(
    s3_endpoint: str, repo: Repository, tmp_path: Path
) -> None:
    with pytest.raises(
        BackupFailed, match=r"cannot read s3://no-such-bucket/ at .*: no such bucket"
    ):
        run_backup(_source(s3_endpoint, "no-such-bucket"), repo, BackupOptions(share="objs"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there
    src = S3Source(parse_s3_url(f"s3://b?endpoint={dead}"), max_connections=2, **CREDS)
    src.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(BackupFailed, match="the server cannot be reached"):
        run_backup(src, repo, BackupOptions(share="objs"))
    with pytest.raises(BucketRestoreFailed, match=r"restore point nope"):
        restore_to_bucket(repo, "nope", _source(s3_endpoint, "no-such-bucket"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3:///prefix", "an S3 share URL looks like s3://bucket"),
        ("s3://b/p?access_key=x", "credentials go in --access-key-env"),
        ("s3://b/p?versions=some&endpoint=http://h", "versions must be .latest. or .all."),
        ("s3://b/p?acl=private", "unknown S3 share URL option"),
        ("s3://b?endpoint=ftp://h", "must be an http:// or https:// URL"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_s3_url(url)


def _history(client: Any, bucket: str, key: str) -> list[bytes | None]:
    """A key's versions oldest first: content, or None for a delete marker.

    S3 lists a key's versions newest first; Last-Modified only has seconds, so ties
    keep that order (reversed) and the version marked latest comes last.
    """
    listed = client.list_object_versions(Bucket=bucket, Prefix=key)
    items = [(v, False) for v in listed.get("Versions", [])]
    items += [(m, True) for m in listed.get("DeleteMarkers", [])]
    ordered = sorted(
        enumerate(items), key=lambda e: (e[1][0]["LastModified"], e[1][0]["IsLatest"], -e[0])
    )
    out: list[bytes | None] = []
    for _, (item, deleted) in ordered:
        vid = item["VersionId"]
        if deleted:
            out.append(None)
        else:
            body = client.get_object(Bucket=bucket, Key=key, VersionId=vid)["Body"].read()
            out.append(body)
    return out


def test_all_versions_are_kept_and_replayed_into_a_versioned_bucket(
    client: Any, bucket: str, s3_endpoint: str, repo: Repository, tmp_path: Path
) -> None:
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        client.put_object(Bucket=bucket, Key="a.txt", Body=body, ContentType="text/plain")
    client.put_object(Bucket=bucket, Key="dir/b.bin", Body=b"bee")
    client.put_object(Bucket=bucket, Key="gone.txt", Body=b"was here")
    client.delete_object(Bucket=bucket, Key="gone.txt")
    source = S3Source.from_url(f"s3://{bucket}?endpoint={s3_endpoint}&versions=all", **CREDS)
    listings: list[str] = []
    source.client.meta.events.register(
        "before-call.s3.ListObjectVersions",
        lambda params, **_: listings.append(params["query_string"]["prefix"]),
    )
    first = run_backup(source, repo, BackupOptions(share="history"))
    assert first.status == "success", first.warnings
    assert sorted(listings) == ["", "dir/"]  # one version listing per folder with keys below
    assert first.restore_point is not None

    out = tmp_path / "out"
    assert run_restore(repo, first.restore_point, out).status == "success"
    assert sorted(os.listdir(out)) == ["latest", "versions"]
    assert sorted(os.listdir(out / "latest")) == ["a.txt", "dir"]  # gone.txt is deleted now
    assert (out / "latest" / "a.txt").read_bytes() == b"two"
    a_versions = sorted(os.listdir(out / "versions" / "a.txt"))
    assert [n[:2] for n in a_versions] == ["%v", "%v"]
    assert [(out / "versions" / "a.txt" / n).read_bytes() for n in a_versions] == [b"one", b"two"]
    gone = sorted(os.listdir(out / "versions" / "gone.txt"))
    assert ["-deleted-" in n for n in gone] == [False, True]  # the marker is the newest
    assert (out / "versions" / "gone.txt" / gone[0]).read_bytes() == b"was here"
    marker = out / "versions" / "gone.txt" / gone[1]
    assert os.getxattr(marker, "user.s3.delete-marker") == b"1"

    client.put_object(Bucket=bucket, Key="a.txt", Body=b"three")
    second = run_backup(source, repo, BackupOptions(share="history"))
    assert second.stats.files_read == 2  # latest/a.txt and the new version, nothing else

    client.create_bucket(Bucket=bucket + "-replay")
    client.put_bucket_versioning(
        Bucket=bucket + "-replay", VersioningConfiguration={"Status": "Enabled"}
    )
    assert second.restore_point is not None
    replay = restore_to_bucket(repo, second.restore_point, _source(s3_endpoint, bucket + "-replay"))
    assert replay.status == "success", replay.errors
    for key in ("a.txt", "dir/b.bin", "gone.txt"):
        assert _history(client, bucket + "-replay", key) == _history(client, bucket, key), key
    assert _history(client, bucket + "-replay", "a.txt") == [b"one", b"two", b"three"]
    versions = client.list_object_versions(Bucket=bucket + "-replay", Prefix="a.txt")["Versions"]
    types = {
        client.head_object(Bucket=bucket + "-replay", Key="a.txt", VersionId=v["VersionId"])[
            "ContentType"
        ]
        for v in versions
    }
    assert types == {"text/plain", "binary/octet-stream"}  # "three" was put without a type


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server that checks signatures and IAM policies (the shared one accepts any key):
    a bucket with ``ok.txt`` and ``secret/x.txt``, and a user denied ``secret/*``."""
    import json

    # authentication is enforced after the first N requests (the set-up below), then on
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "12"}
    env.update(AWS_ACCESS_KEY_ID="setup", AWS_SECRET_ACCESS_KEY="setup")
    proc, url = start_moto(tmp_path_factory.mktemp("moto-auth") / "moto.log", env)
    kw: dict[str, Any] = dict(
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    s3, iam = boto3.client("s3", **kw), boto3.client("iam", **kw)
    s3.create_bucket(Bucket="guarded")
    s3.put_object(Bucket="guarded", Key="ok.txt", Body=b"readable")
    s3.put_object(Bucket="guarded", Key="secret/x.txt", Body=b"not for us")
    iam.create_user(UserName="backup")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::guarded/secret/*",
            },
        ],
    }
    iam.put_user_policy(UserName="backup", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="backup")["AccessKey"]
    probe = boto3.client("s3", **{**kw, "aws_secret_access_key": "wrong"})
    for _ in range(20):  # spend what is left of the unauthenticated requests
        try:
            probe.list_buckets()
        except botocore.exceptions.ClientError:
            break
    else:
        pytest.fail("moto never started checking signatures")
    yield url, {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}
    proc.terminate()
    proc.wait(10)


def test_wrong_keys_fail_clearly_and_denied_objects_are_warnings(
    auth_server: tuple[str, dict[str, str]], repo: Repository
) -> None:
    url, keys = auth_server
    share = f"s3://guarded?endpoint={url}"
    wrong_secret = S3Source.from_url(share, access_key=keys["access_key"], secret_key="nope")
    with pytest.raises(BackupFailed, match="wrong secret key"):
        run_backup(wrong_secret, repo, BackupOptions(share="g"))
    unknown = S3Source.from_url(share, access_key="AKIDONTKNOW", secret_key="nope")
    with pytest.raises(BackupFailed, match="the access key is not known to the server"):
        run_backup(unknown, repo, BackupOptions(share="g"))

    result = run_backup(S3Source.from_url(share, **keys), repo, BackupOptions(share="g"))
    assert result.status == "warning"
    assert [(w.path, w.reason) for w in result.warnings] == [("secret/x.txt", "permission denied")]
    assert result.stats.files_read == 1


def test_restore_into_a_bucket_follows_the_overwrite_policy(
    client: Any, bucket: str, s3_endpoint: str, repo: Repository
) -> None:
    client.put_object(Bucket=bucket, Key="a.txt", Body=b"backed up")
    client.put_object(Bucket=bucket, Key="b.txt", Body=b"b")
    result = run_backup(_source(s3_endpoint, bucket), repo, BackupOptions(share="objs"))
    assert result.restore_point is not None
    point = result.restore_point

    def body(key: str) -> bytes:
        data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def restore(policy: str) -> Any:
        client.put_object(Bucket=bucket, Key="a.txt", Body=b"edited since")  # newer
        client.delete_object(Bucket=bucket, Key="b.txt")
        done = restore_to_bucket(repo, point, _source(s3_endpoint, bucket), overwrite=policy)
        assert done.status == "success", done.errors
        assert body("b.txt") == b"b"  # missing objects come back under every policy
        return done

    for policy in ("skip", "if-newer"):
        assert restore(policy).stats.files_skipped == 1
        assert body("a.txt") == b"edited since"
    restore("keep-both")
    assert body("a.txt") == b"edited since" and body("a.txt.restored") == b"backed up"
    restore("keep-both")
    assert body("a.txt.restored-2") == b"backed up"
    restore("replace")
    assert body("a.txt") == b"backed up"
    with pytest.raises(BucketRestoreFailed, match="unknown overwrite policy 'merge'"):
        restore_to_bucket(repo, point, _source(s3_endpoint, bucket), overwrite="merge")
