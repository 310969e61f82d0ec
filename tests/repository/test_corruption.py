"""Damaged, truncated and hostile objects are detected with clear messages."""

from __future__ import annotations

import struct
from pathlib import Path

import msgpack
import pytest

from ferryman.repository import (
    KIND_DATA,
    BlobNotFound,
    CorruptObject,
    Repository,
    crypto,
    envelope,
    index,
    open_backend,
    pack,
)
from ferryman.repository.index import IndexEntry

from .conftest import PASSPHRASE
from .snapshots import make_files, read_files, store_files

HUGE_ZSTD_FRAME = (
    struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", 1 << 40) + b"\x01\x00\x00"
)


def _backup(repo: Repository, seed: int = 5) -> tuple[str, dict[bytes, bytes]]:
    files = make_files(seed, count=20)
    with repo.open_writer("t", pack_size=20_000) as w:
        point = w.save_restore_point(share="s", root=store_files(repo, w, files))
    return point.id, files


def _data_packs(repo_url: str) -> list[Path]:
    return sorted(p for p in (Path(repo_url) / "data").rglob("*") if p.is_file())


def test_bit_flip_is_found_and_names_the_files(repo: Repository, repo_url: str) -> None:
    point_id, files = _backup(repo)
    victim = _data_packs(repo_url)[0]
    data = bytearray(victim.read_bytes())
    data[pack.HEADER_SIZE + 20] ^= 0x01
    victim.write_bytes(bytes(data))
    entries = pack.split_pack(bytes(data), repo.keys.encryption, victim.name, victim.name)
    with pytest.raises(CorruptObject, match="authentication failed"):
        repo.get_blob(entries[0].blob_id)
    report = repo.check(read_data=True)
    assert not report.ok
    assert any("authentication failed" in e for e in report.errors)
    assert report.damaged and all(pid == point_id for pid, _ in report.damaged)
    damaged_paths = {path for _, path in report.damaged}
    chunk_files = {
        "/root/" + name.decode("utf-8", "backslashreplace")
        for name, content in files.items()
        if content
        and entries[0].blob_id in {repo.blob_id(c.data) for c in repo.chunker().cut_buf(content)}
    }
    assert chunk_files and chunk_files <= damaged_paths


def test_truncated_pack_is_reported_by_the_structure_check(repo: Repository, repo_url: str) -> None:
    _backup(repo)
    assert repo.check().ok
    victim = _data_packs(repo_url)[-1]
    victim.write_bytes(victim.read_bytes()[:-30])
    report = repo.check()
    assert not report.ok
    assert any(victim.name in e for e in report.errors), report.errors


def test_truncated_pack_read_is_a_clear_error(repo: Repository, repo_url: str) -> None:
    _backup(repo)
    victim = _data_packs(repo_url)[-1]
    entries = pack.split_pack(victim.read_bytes(), repo.keys.encryption, victim.name, victim.name)
    victim.write_bytes(victim.read_bytes()[: entries[-1].offset + 5])
    with pytest.raises(CorruptObject, match="truncated"):
        repo.get_blob(entries[-1].blob_id)


def test_truncated_and_flipped_standalone_objects(repo: Repository, repo_url: str) -> None:
    point_id, _ = _backup(repo)
    point_file = Path(repo_url) / "points" / point_id
    raw = point_file.read_bytes()
    point_file.write_bytes(raw[:10])
    with pytest.raises(CorruptObject, match="truncated"):
        repo.load_restore_point(point_id)
    point_file.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x80]))
    with pytest.raises(CorruptObject, match="authentication failed"):
        repo.load_restore_point(point_id)
    report = repo.check()
    assert any(point_id in e for e in report.errors)


def test_lost_or_damaged_index_is_rebuilt_from_packs(
    repo: Repository, repo_url: str, tmp_path: Path
) -> None:
    point_id, files = _backup(repo)
    segments = list((Path(repo_url) / "index").iterdir())
    segments[0].write_bytes(b"FRMO garbage")
    for seg in segments[1:]:
        seg.unlink()
    with Repository.open(open_backend(repo_url), PASSPHRASE, cache_dir=tmp_path / "c2") as fresh:
        report = fresh.check()
        assert not report.ok
        assert fresh.rebuild_index() > 0
        assert fresh.check(read_data=True).ok
        assert read_files(fresh, fresh.load_restore_point(point_id).root) == files


def _write_hostile_pack(repo: Repository, table: bytes, trailer_len: int | None = None) -> str:
    builder = pack.PackBuilder(repo.keys.encryption, KIND_DATA)
    sealed = crypto.seal(builder.cipher, table, builder.header + b"table")
    body = builder.header + b"\0" * 64 + sealed
    length = len(sealed) if trailer_len is None else trailer_len
    repo.backend.put(
        pack.pack_name(KIND_DATA, builder.pack_id), body + struct.pack("<I", length) + b"FRME"
    )
    return builder.pack_id


def test_hostile_pack_tables_are_rejected(repo: Repository) -> None:
    key = repo.keys.encryption
    entry = struct.pack("<32sIIIBB", b"\1" * 32, pack.HEADER_SIZE, 40, (1 << 32) - 1, 1, 1)
    pid = _write_hostile_pack(repo, struct.pack("<I", 1) + entry)
    with pytest.raises(CorruptObject, match="over the limit"):
        pack.read_table(repo.backend, key, KIND_DATA, pid)
    entry = struct.pack("<32sIIIBB", b"\1" * 32, pack.HEADER_SIZE, (1 << 32) - 1, 10, 1, 1)
    pid = _write_hostile_pack(repo, struct.pack("<I", 1) + entry)
    with pytest.raises(CorruptObject, match="outside the pack"):
        pack.read_table(repo.backend, key, KIND_DATA, pid)
    pid = _write_hostile_pack(repo, struct.pack("<I", (1 << 32) - 1))
    with pytest.raises(CorruptObject, match="claims 4294967295 entries"):
        pack.read_table(repo.backend, key, KIND_DATA, pid)
    pid = _write_hostile_pack(repo, struct.pack("<I", 0), trailer_len=(1 << 32) - 1)
    with pytest.raises(CorruptObject, match="exceeds the pack"):
        pack.read_table(repo.backend, key, KIND_DATA, pid)
    report = repo.check()  # nothing refers to these packs: garbage, reported as warnings
    assert report.ok and len(report.warnings) == 4


def test_blob_claiming_an_enormous_size_is_rejected_without_allocating(repo: Repository) -> None:
    blob_id = b"\7" * 32
    builder = pack.PackBuilder(repo.keys.encryption, KIND_DATA)
    record = crypto.seal(builder.cipher, b"\x01" + HUGE_ZSTD_FRAME, bytes([KIND_DATA]) + blob_id)
    builder.add_record(blob_id, KIND_DATA, record, 100, 1)
    repo.backend.put(pack.pack_name(KIND_DATA, builder.pack_id), bytes(builder.finish()))
    entry = IndexEntry(
        blob_id, bytes.fromhex(builder.pack_id), pack.HEADER_SIZE, len(record), 100, 1, 1
    )
    index.put_segment(repo.backend, repo.keys.encryption, [entry])
    repo.sync_index()
    with pytest.raises(CorruptObject, match="claims 1099511627776 bytes"):
        repo.get_blob(blob_id)


def test_envelope_claiming_an_enormous_size_is_rejected(repo: Repository) -> None:
    salt = crypto.new_salt()
    header = struct.pack("<4sBB", b"FRMO", 1, envelope.KIND_INDEX) + salt
    cipher = crypto.object_cipher(repo.keys.encryption, salt)
    repo.backend.put(
        "index/" + "ab" * 16, header + crypto.seal(cipher, b"\x01" + HUGE_ZSTD_FRAME, header)
    )
    with pytest.raises(CorruptObject, match="more than the limit"):
        repo.sync_index()
    report = repo.check()
    assert any("more than the limit" in e for e in report.errors)


def test_hostile_tree_blob_is_a_corrupt_object(repo: Repository) -> None:
    from ferryman.repository import KIND_TREE

    evil = [
        b"\xdd\xff\xff\xff\xff",  # array claiming 2^32 elements
        msgpack.packb({"v": 1, "nodes": [{"n": b"../escape", "t": "file"}]}),
        msgpack.packb({"v": 1, "nodes": [{"n": b"a/b", "t": "file"}]}),
        msgpack.packb({"v": 1, "nodes": [{"n": b"nul\0", "t": "file"}]}),
        msgpack.packb({"v": 1, "nodes": [{"n": b"x", "t": "file", "s": "big"}]}),
        msgpack.packb({"v": 1, "nodes": [{"n": b"x", "t": "door"}]}),
        msgpack.packb({"v": 1, "nodes": [{"n": b"b", "t": "file"}, {"n": b"a", "t": "file"}]}),
        msgpack.packb({"v": 1, "nodes": [{"n": b"x", "t": "file", "c": [b"short"]}]}),
        msgpack.packb({"v": 2, "nodes": []}),
    ]
    with repo.open_writer("t") as w:
        for data in evil:
            w.add_blob(KIND_TREE, repo.blob_id(data), data)
    for data in evil:
        with pytest.raises(CorruptObject, match="tree blob"):
            repo.get_tree(repo.blob_id(data))


def test_missing_blob_is_reported_by_check(repo: Repository) -> None:
    from ferryman.repository import KIND_TREE, Node, encode_tree

    tree = encode_tree([Node(name=b"f", type="file", content=[b"\3" * 32])])
    with repo.open_writer("t") as w:
        w.add_blob(KIND_TREE, repo.blob_id(tree), tree)
        point = w.save_restore_point(share="s", root=repo.blob_id(tree))
    report = repo.check()
    assert any("missing" in e for e in report.errors)
    assert (point.id, "/f") in report.damaged
    with pytest.raises(BlobNotFound):
        repo.get_blob(b"\3" * 32)


def test_rolling_read_data_subsets_cover_every_pack(repo: Repository) -> None:
    _backup(repo)
    total = repo.check(read_data=True).packs_read
    parts = [repo.check(subset=f"{n}/3") for n in (1, 2, 3)]
    assert all(p.ok for p in parts)
    assert sum(p.packs_read for p in parts) == total
    assert repo.check(subset=0.5).packs_read == (total + 1) // 2
    assert repo.check(subset="100%").packs_read == total


def test_hostile_restore_point_fields_are_rejected(repo: Repository) -> None:
    doc = {"v": 1, "id": "ab" * 16, "share": "s", "root": 1 << 60, "time": 0.0}
    repo.backend.put(
        "points/" + "ab" * 16,
        envelope.seal_object(repo.keys.encryption, envelope.KIND_RESTORE_POINT, msgpack.packb(doc)),
    )
    with pytest.raises(CorruptObject, match="valid id or root"):
        repo.load_restore_point("ab" * 16)
    bad_keys = msgpack.packb({(1, 2): 3}, use_bin_type=True)
    repo.backend.put(
        "points/" + "cd" * 16,
        envelope.seal_object(repo.keys.encryption, envelope.KIND_RESTORE_POINT, bad_keys),
    )
    with pytest.raises(CorruptObject):
        repo.load_restore_point("cd" * 16)
    report = repo.check()
    assert len(report.errors) == 2
