"""Adding an smb:// share: URL validation, the password stored as a secret and never returned,
and handed to proxies (probes and task assignments) only."""

from __future__ import annotations

from sqlalchemy import select

from ferryman.server.context import ServerContext
from ferryman.server.db.models import Share
from ferryman.server.probes import ProbeTracker, needed_probes, share_credentials

from .conftest import Api

PASSWORD = "s3cret-Pässword"


def test_smb_share_password_is_a_secret(api: Api, ctx: ServerContext) -> None:
    created = api.post(
        "/shares",
        {
            "name": "files",
            "url": "smb://CORP;alice@127.0.0.1:4450/data//dept/",
            "password": PASSWORD,
        },
    )
    assert created["url"] == "smb://CORP;alice@127.0.0.1:4450/data/dept"
    for view in (created, api.get("/shares/files"), *api.get("/shares")):
        assert PASSWORD not in str(view) and "password" not in view
    with ctx.db.session() as db:
        row = db.scalar(select(Share).where(Share.name == "files"))
        assert row is not None and row.credentials_secret
        assert PASSWORD not in row.credentials_secret  # encrypted at rest
        assert share_credentials(row, ctx.secrets) == {"password": PASSWORD}
        probes = needed_probes(db, 1, ctx.secrets, ProbeTracker(), 60.0)
    share_probe = [p for p in probes if p.kind == "share"]
    assert share_probe and share_probe[0].credentials == {"password": PASSWORD}
    assert PASSWORD not in repr(share_probe[0].model_copy(update={"credentials": None}))


def test_smb_share_bad_input_is_one_line_422(api: Api) -> None:
    cases = [
        ({"url": "smb://alice@host/share"}, "needs a password"),
        ({"url": "smb://alice:pw@host/share", "password": "x"}, "do not put the password"),
        ({"url": "smb://host/share", "password": "x"}, "needs a user"),
        ({"url": "smb://alice@host", "password": "x"}, "names no share"),
        ({"url": "smb://alice@host:99999/s", "password": "x"}, "invalid port"),
        ({"url": "smb://alice@ho st/s", "password": "x"}, "invalid host"),
        ({"url": "smb://alice@host/s/../etc", "password": "x"}, "invalid path component"),
        ({"url": "smb://alice@host/s?x=1", "password": "x"}, "no query"),
        ({"url": "/tmp", "password": "x"}, "only applies to smb://"),
    ]
    for body, words in cases:
        assert words in api.error("POST", "/shares", 422, json={"name": "x", **body}), body
    assert api.get("/shares") == []
