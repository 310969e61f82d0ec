"""Init, open, passphrases, key slots and version refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferryman.repository import (
    CorruptObject,
    KeySlotError,
    NotARepository,
    Repository,
    RepositoryExists,
    UnsupportedVersion,
    WrongPassphrase,
    open_backend,
)
from ferryman.repository.envelope import MAGIC

from .conftest import FAST_SCRYPT, PASSPHRASE, SMALL_CHUNKS


def test_init_then_open_with_the_same_passphrase(repo: Repository, repo_url: str) -> None:
    with Repository.open(open_backend(repo_url), PASSPHRASE) as again:
        assert again.id == repo.id
        assert again.keys == repo.keys
        assert again.config.chunker == SMALL_CHUNKS


def test_wrong_passphrase_is_a_clear_error(repo: Repository, repo_url: str) -> None:
    with pytest.raises(WrongPassphrase, match=f"wrong passphrase for repository {repo.id}"):
        Repository.open(open_backend(repo_url), "not the passphrase")


def test_open_where_there_is_no_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepository, match="no repository"):
        Repository.open(open_backend(str(tmp_path / "nothing")), PASSPHRASE)


def test_init_refuses_an_existing_repository(repo: Repository, repo_url: str) -> None:
    with pytest.raises(RepositoryExists):
        Repository.init(open_backend(repo_url), PASSPHRASE, scrypt_n=FAST_SCRYPT)


def test_key_slots_add_remove_change(repo: Repository, repo_url: str) -> None:
    second = repo.add_key("second passphrase", label="ops", scrypt_n=FAST_SCRYPT)
    assert {s.id for s in repo.list_keys()} == {repo.slot_id, second}
    with Repository.open(open_backend(repo_url), "second passphrase") as other:
        assert other.slot_id == second
        assert other.keys == repo.keys  # same master secret: no data re-encrypted
        other.change_passphrase("third passphrase", scrypt_n=FAST_SCRYPT)
    with pytest.raises(WrongPassphrase):
        Repository.open(open_backend(repo_url), "second passphrase")
    Repository.open(open_backend(repo_url), "third passphrase").close()
    repo.remove_key(repo.slot_id)
    with pytest.raises(WrongPassphrase):
        Repository.open(open_backend(repo_url), PASSPHRASE)
    (last,) = repo.list_keys()
    with pytest.raises(KeySlotError, match="last key slot"):
        repo.remove_key(last.id)
    with pytest.raises(KeySlotError, match="no key slot"):
        repo.remove_key("0" * 32)


def test_key_slot_records_scrypt_parameters(repo: Repository, repo_url: str) -> None:
    (slot,) = repo.list_keys()
    raw = json.loads((Path(repo_url) / "keys" / slot.id).read_text())
    assert (raw["kdf"], raw["n"], raw["r"], raw["p"]) == ("scrypt", FAST_SCRYPT, 8, 1)
    assert PASSPHRASE not in json.dumps(raw)


def test_unknown_repository_version_is_refused(repo: Repository, repo_url: str) -> None:
    config = Path(repo_url) / "config"
    doc = json.loads(config.read_text())
    doc["version"] = 2
    config.write_text(json.dumps(doc))
    with pytest.raises(UnsupportedVersion, match="version 2 is not supported"):
        Repository.open(open_backend(repo_url), PASSPHRASE)


def test_foreign_format_is_refused(repo: Repository, repo_url: str) -> None:
    (Path(repo_url) / "config").write_text('{"format": "restic", "version": 1}')
    with pytest.raises(UnsupportedVersion, match="not a Ferryman repository"):
        Repository.open(open_backend(repo_url), PASSPHRASE)


def test_unknown_object_version_is_refused(repo: Repository, repo_url: str) -> None:
    from .snapshots import make_files, store_files

    with repo.open_writer("t") as w:
        point = w.save_restore_point(share="s", root=store_files(repo, w, make_files(1)))
    path = Path(repo_url) / "points" / point.id
    data = bytearray(path.read_bytes())
    assert data[:4] == MAGIC
    data[4] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedVersion, match="version 9"):
        repo.load_restore_point(point.id)


def test_damaged_or_hostile_key_slots_are_skipped(repo: Repository, repo_url: str) -> None:
    keys_dir = Path(repo_url) / "keys"
    (keys_dir / ("0" * 32)).write_text("{not json")
    hostile = {
        "format": "ferryman-key",
        "version": 1,
        "kdf": "scrypt",
        "n": 1 << 22,
        "r": 32,
        "p": 1,
        "salt": "AAAAAAAAAAAAAAAAAAAAAA==",
        "wrapped": "AAAA",
        "created": 0,
    }
    (keys_dir / ("1" * 32)).write_text(json.dumps(hostile))
    Repository.open(open_backend(repo_url), PASSPHRASE).close()  # the real slot still opens
    for slot in list(keys_dir.iterdir()):
        if slot.name not in ("0" * 32, "1" * 32):
            slot.unlink()
    with pytest.raises(CorruptObject, match="more than 256 MiB"):
        Repository.open(open_backend(repo_url), PASSPHRASE)
