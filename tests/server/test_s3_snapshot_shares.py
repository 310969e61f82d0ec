"""Shares of object storage (keys stored as a secret) and shares read through a snapshot
provider (stored, shown, handed to proxies, and placed only on proxies that can make it)."""

from __future__ import annotations

from sqlalchemy import select

from ferryman.proxy.capabilities import detect
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Share
from ferryman.server.placement import ProbeView, ProxyView, TaskNeeds, pick_proxy
from ferryman.server.probes import share_credentials

from .conftest import Api

SECRET = "wJalrXUtnFEMI/K7MDENG-secret"
S3_URL = "s3://media/photos?endpoint=http://127.0.0.1:9000&region=eu-west-1"


def test_s3_share_keys_are_a_secret(api: Api, ctx: ServerContext) -> None:
    created = api.post(
        "/shares", {"name": "photos", "url": S3_URL, "access_key": "AKIA1", "secret_key": SECRET}
    )
    assert created["url"] == S3_URL and created["snapshot"] is None
    for view in (created, api.get("/shares/photos"), *api.get("/shares")):
        assert SECRET not in str(view) and "secret_key" not in view
    with ctx.db.session() as db:
        row = db.scalar(select(Share).where(Share.name == "photos"))
        assert row is not None and row.credentials_secret and SECRET not in row.credentials_secret
        assert share_credentials(row, ctx.secrets) == {"access_key": "AKIA1", "secret_key": SECRET}
    # without keys: the proxy's own AWS environment is used
    assert api.post("/shares", {"name": "open", "url": "s3://public"})["url"] == "s3://public"


def test_snapshot_providers_are_stored_and_shown(api: Api) -> None:
    btrfs = api.post("/shares", {"name": "vol", "url": "/srv/vol", "snapshot": "btrfs"})
    assert btrfs["snapshot"] == {"provider": "btrfs", "dir": None}
    nas = api.post(
        "/shares", {"name": "nas", "url": "/mnt/nas", "snapshot": "nas-dir:.snapshot/hourly.*"}
    )
    assert nas["snapshot"] == {"provider": "nas-dir", "glob": ".snapshot/hourly.*"}
    cmd = api.post(
        "/shares",
        {
            "name": "zfs",
            "url": "/tank/data",
            "snapshot": "command",
            "snapshot_create": "/etc/ferryman/zfs-snapshot create",
            "snapshot_delete": "/etc/ferryman/zfs-snapshot delete",
        },
    )
    assert cmd["snapshot"]["create"] == "/etc/ferryman/zfs-snapshot create"
    assert api.get("/shares/zfs")["snapshot"] == cmd["snapshot"]


def test_bad_s3_and_snapshot_input_is_one_line_422(api: Api) -> None:
    cases = [
        ({"url": "s3://"}, "s3://bucket"),
        ({"url": "s3://b?secret_key=x"}, "credentials go in --access-key-env"),
        ({"url": "s3://b", "access_key": "a"}, "both the access key and the secret key"),
        ({"url": "/tmp", "access_key": "a", "secret_key": "b"}, "only apply to s3://"),
        ({"url": "/tmp", "snapshot": "lvm"}, "unknown snapshot provider 'lvm'"),
        ({"url": "/tmp", "snapshot": "command"}, "needs --snapshot-create"),
        ({"url": "/tmp", "snapshot": "nas-dir:/abs"}, "relative to the share"),
        ({"url": "/tmp", "snapshot_create": "x"}, "need --snapshot command"),
        ({"url": "s3://b", "snapshot": "btrfs"}, "local or mounted paths only"),
    ]
    for body, words in cases:
        assert words in api.error("POST", "/shares", 422, json={"name": "x", **body}), body
    assert api.get("/shares") == []


def _proxy(pid: int, name: str, capabilities: dict[str, object]) -> ProxyView:
    probes = {("repository", 1): ProbeView(ok=True, age=1), ("share", 1): ProbeView(ok=True, age=1)}
    return ProxyView(pid, name, None, 2, 0, True, True, probes=probes, capabilities=capabilities)


def test_placement_needs_the_snapshot_provider_and_source_type() -> None:
    plain = _proxy(1, "plain", {"sources": ["local"], "snapshots": ["nas-dir"]})
    able = _proxy(2, "able", {"sources": ["local", "s3"], "snapshots": ["btrfs", "nas-dir"]})
    base: dict[str, object] = dict(
        kind="backup", share_id=1, share_name="vol", repository_id=1, repository_name="r"
    )
    d = pick_proxy([plain, able], TaskNeeds(**base, snapshot_provider="btrfs"))  # type: ignore[arg-type]
    assert d.proxy is not None and d.proxy.name == "able"
    assert {
        "proxy": "plain",
        "reason": "cannot make btrfs snapshots (tool missing)",
    } in d.passed_over
    d = pick_proxy([plain, able], TaskNeeds(**base, source_type="s3"))  # type: ignore[arg-type]
    assert d.proxy is not None and d.proxy.name == "able"
    d = pick_proxy([plain], TaskNeeds(**base, snapshot_provider="btrfs"))  # type: ignore[arg-type]
    assert d.proxy is None


def test_this_proxy_advertises_s3_and_its_snapshot_providers() -> None:
    caps = detect()
    assert "s3" in caps["sources"]
    assert {"nas-dir", "command"} <= set(caps["snapshots"])
